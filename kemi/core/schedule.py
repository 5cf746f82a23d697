"""Tenant time modes (seed 002): which mode (day, night, holiday...) is in force.

A tenant's schedule is a list of entries, each a mode over some weekdays
from a start to an end time in the tenant's time zone; an entry whose end
is not after its start runs past midnight into the next day.  The first
entry that covers the moment wins; none covering it means no mode, and then
only forwards without modes apply.  Pure: the caller hands in the local
weekday (0 = Monday) and minute of the day.
"""

from __future__ import annotations

from dataclasses import dataclass

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    mode: str
    days: frozenset[int]
    start: int  # minute of the day, 0-1439
    end: int  # minute of the day; <= start: runs into the next day

    def covers(self, weekday: int, minute: int) -> bool:
        if self.start < self.end:
            return weekday in self.days and self.start <= minute < self.end
        started_today = weekday in self.days and minute >= self.start
        started_yesterday = (weekday - 1) % 7 in self.days and minute < self.end
        return started_today or started_yesterday


def active_mode(entries: tuple[ScheduleEntry, ...], weekday: int, minute: int) -> str | None:
    """The mode in force at `weekday` (0 = Monday), `minute` of the day."""
    for entry in entries:
        if entry.covers(weekday, minute):
            return entry.mode
    return None


def parse_days(text: str) -> frozenset[int]:
    """``mon-fri``, ``sat,sun``, ``all``: the weekdays (0 = Monday) named."""
    if text.strip().lower() == "all":
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.lower().split(","):
        first, _, last = part.strip().partition("-")
        if first not in WEEKDAYS or (last and last not in WEEKDAYS):
            raise ValueError(f"{text!r} is not a list of weekdays like mon-fri or sat,sun")
        start = WEEKDAYS.index(first)
        stop = WEEKDAYS.index(last) if last else start
        index = start
        while True:
            days.add(index)
            if index == stop:
                break
            index = (index + 1) % 7
    return frozenset(days)


def format_days(days: frozenset[int]) -> str:
    return ",".join(WEEKDAYS[d] for d in sorted(days))


def parse_minute(text: str) -> int:
    """``HH:MM`` as minutes since midnight (``24:00`` is the end of the day)."""
    hours, _, minutes = text.strip().partition(":")
    if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2):
        raise ValueError(f"{text!r} is not a time like 08:00")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or not 0 <= value <= 1440:
        raise ValueError(f"{text!r} is not a time of day")
    return value % 1440 if value == 1440 else value


MINUTES_PER_WEEK = 7 * 24 * 60


def next_period(
    entries: tuple[ScheduleEntry, ...], weekday: int, minute: int
) -> tuple[str | None, int] | None:
    """*20: the mode that comes next, and in how many minutes its period ends.

    Seed 002: the shop closes at 12:00 and opens at 13:30; at 11:45 *20 puts
    the closed mode in force now, until 13:30, when the schedule takes over
    again.  None when the schedule never changes mode.
    """
    current = active_mode(entries, weekday, minute)
    ahead = 1
    while ahead <= MINUTES_PER_WEEK:
        mode = _mode_after(entries, weekday, minute, ahead)
        if mode != current:
            break
        ahead += 1
    else:
        return None
    following = mode
    while ahead <= 2 * MINUTES_PER_WEEK:
        if _mode_after(entries, weekday, minute, ahead) != following:
            return following, ahead
        ahead += 1
    return following, ahead


def _mode_after(
    entries: tuple[ScheduleEntry, ...], weekday: int, minute: int, ahead: int
) -> str | None:
    total = weekday * 1440 + minute + ahead
    return active_mode(entries, (total // 1440) % 7, total % 1440)


def modes_in_order(entries: tuple[ScheduleEntry, ...]) -> tuple[str, ...]:
    """The tenant's modes, in schedule order, each once (what *11 steps through)."""
    return tuple(dict.fromkeys(e.mode for e in entries))


def toggled(entries: tuple[ScheduleEntry, ...], manual: str | None) -> str | None:
    """*11: the next manual mode after `manual` (None: automatic), or None
    (back to automatic) after the last."""
    modes = modes_in_order(entries)
    if not modes:
        return None
    if manual not in modes:
        return modes[0]
    index = modes.index(manual) + 1
    return modes[index] if index < len(modes) else None
