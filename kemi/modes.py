"""The time mode in force for a tenant at a moment: its schedule read in its
time zone.  Outside the pure core because time zones come from the system's
zoneinfo files (read once, then cached by `zoneinfo`)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kemi.core.schedule import ScheduleEntry, active_mode


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def mode_at(timezone: str, schedule: tuple[ScheduleEntry, ...], now: float) -> str | None:
    """The mode `schedule` puts in force at epoch `now` in `timezone`."""
    if not schedule:
        return None
    local = datetime.fromtimestamp(now, _zone(timezone))
    return active_mode(schedule, local.weekday(), local.hour * 60 + local.minute)
