"""Carrying out a feature code against the portal, with the portal's own
validation (number, destination policy, loops): a refused code changes
nothing and says why."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, delete, select, update

from divert.errors import DivertError
from divert.feature_codes import parse
from divert.kemi.core.schedule import ScheduleEntry, next_period, toggled
from divert.kemi.modes import local_time
from divert.portal import forwards as portal_forwards
from divert.portal.compile import Problem
from divert.portal.reader import tenant_record
from divert.schema.tables import forwards, schedules, subscribers, tenants


@dataclass(frozen=True, slots=True)
class Answer:
    """The final reply the phone gets."""

    code: int
    reason: str


ACTIVATED = 480  # the call ends here; the reason phrase says what happened
REFUSED = 403
UNKNOWN = 404
INCOMPLETE = 484


def carry_out(
    connection: Connection,
    aor: str,
    dialled: str,
    now: float | None = None,
    chosen: str | None = None,
) -> Answer:
    """Apply `dialled` for the subscriber `aor` (user@domain), in the caller's
    transaction; a refusal writes nothing.  `now` (epoch) is for the mode codes,
    `chosen` for a *11 a node already carried out (see `mode_change`)."""
    username, _, domain = aor.partition("@")
    row = connection.execute(
        select(
            subscribers.c.id,
            tenants.c.id.label("tenant_id"),
            tenants.c.name,
            tenants.c.code_profile,
        )
        .join(tenants, tenants.c.id == subscribers.c.tenant_id)
        .where(subscribers.c.username == username, tenants.c.domain == domain)
    ).first()
    if row is None:
        return Answer(REFUSED, "Forwarding Refused: unknown subscriber")
    request = parse(dialled, row.code_profile)
    if request is None:
        return Answer(UNKNOWN, f"Unknown Feature Code {dialled[:20]}")
    if request.number == "":
        return number_missing(request.code.code)
    code = request.code
    if code.action in ("next-mode", "toggle-mode"):
        moment = time.time() if now is None else now
        return change_mode(connection, row.tenant_id, code.action, moment, chosen)
    if code.action in ("away", "present"):
        away = code.action == "away"
        connection.execute(update(subscribers).where(subscribers.c.id == row.id).values(away=away))
        return presence_answer(away)
    owned = forwards.c.subscriber_id == row.id
    if code.action == "cancel-all":
        connection.execute(delete(forwards).where(owned))
        return Answer(ACTIVATED, "All Forwarding Cancelled")
    connection.execute(delete(forwards).where(owned, forwards.c.condition == code.condition))
    if code.action == "cancel":
        return Answer(ACTIVATED, f"Forwarding Cancelled ({code.condition})")
    assert code.condition is not None and request.number is not None
    owner = portal_forwards.owner_of_subscriber(connection, row.name, username)
    try:
        _, label = portal_forwards.add(connection, owner, code.condition, request.number)
    except DivertError as error:
        raise Refused(str(error)) from None
    return Answer(ACTIVATED, f"Forwarding Activated ({code.condition}) to {label}")


def number_missing(code: str) -> Answer:
    """`*72` alone: RFC 3261's 484 says the address is incomplete."""
    return Answer(INCOMPLETE, f"Number Missing: dial {code} then the number")


def presence_answer(away: bool) -> Answer:
    """*78 / *79: what the phone is told."""
    return Answer(ACTIVATED, "Away" if away else "Present")


def change_mode(
    connection: Connection, tenant_id: int, action: str, now: float, chosen: str | None = None
) -> Answer:
    """*20 (the next mode until its period ends) or *11 (step the manual mode;
    `chosen` is the manual mode a node already picked, '' for automatic)."""
    tenant = connection.execute(select(tenants).where(tenants.c.id == tenant_id)).one()
    problems: list[Problem] = []
    entries = tenant_record(tenant, _schedule_rows(connection, tenant_id), problems).schedule
    manual = tenant.mode_override if tenant.mode_override_until is None else None
    change = mode_change(entries, tenant.timezone, manual, action, now, chosen)
    if isinstance(change, Answer):
        return change
    until = None if change.until is None else datetime.fromtimestamp(change.until, UTC)
    values = {"mode_override": change.override, "mode_override_until": until}
    connection.execute(update(tenants).where(tenants.c.id == tenant_id).values(**values))
    return Answer(ACTIVATED, change.reason)


@dataclass(frozen=True, slots=True)
class ModeChange:
    """A tenant's new mode override: None is the schedule, '' no mode at all;
    `until` is epoch seconds (None: until changed again)."""

    override: str | None
    until: float | None
    reason: str


def mode_change(
    entries: tuple[ScheduleEntry, ...],
    timezone: str,
    manual: str | None,
    action: str,
    now: float,
    chosen: str | None = None,
) -> ModeChange | Answer:
    """What *20 or *11 does to a tenant with these schedule `entries` and
    current `manual` mode, at `now`; an `Answer` when it changes nothing.

    `chosen` replays a *11 a node already carried out ('' : automatic), so
    that delivering it later gives what the phone was told.
    """
    if not entries:
        return Answer(REFUSED, "Mode Unchanged: the tenant has no schedule")
    if action == "next-mode":
        weekday, minute = local_time(timezone, now)
        found = next_period(entries, weekday, minute)
        if found is None:
            return Answer(REFUSED, "Mode Unchanged: the schedule never changes")
        mode, minutes = found
        until = now - now % 60 + minutes * 60  # the boundary, on the minute
        local_until = datetime.fromtimestamp(until, ZoneInfo(timezone)).strftime("%H:%M")
        return ModeChange(mode or "", until, f"Mode {mode or 'none'} until {local_until}")
    picked = toggled(entries, manual) if chosen is None else (chosen or None)
    return ModeChange(picked, None, f"Mode {picked} (manual)" if picked else "Modes Automatic")


def _schedule_rows(connection: Connection, tenant_id: int) -> list[Any]:
    query = select(schedules).where(schedules.c.tenant_id == tenant_id).order_by(schedules.c.id)
    return list(connection.execute(query))


class Refused(Exception):
    """The code was understood but its change is not allowed; roll back."""

    def answer(self) -> Answer:
        return Answer(REFUSED, f"Forwarding Refused: {self}")
