"""The time mode in force for a tenant at a moment: its schedule read in its
time zone.  Outside the pure core because time zones come from the system's
zoneinfo files (read once, then cached by `zoneinfo`)."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from divert.kemi.core.schedule import ScheduleEntry, active_mode
from divert.kemi.store.format import TenantRecord


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
    weekday, minute = local_time(timezone, now)
    return active_mode(schedule, weekday, minute)


def tenant_mode(tenant: TenantRecord, now: float) -> str | None:
    """The mode in force for `tenant`: its override from a phone while it
    lasts (*20 until a time, *11 until changed), else its schedule."""
    if tenant.override is not None and (
        tenant.override_until is None or now < tenant.override_until
    ):
        return tenant.override or None
    return mode_at(tenant.timezone, tenant.schedule, now)


def local_time(timezone: str, now: float) -> tuple[int, int]:
    """(weekday, minute of the day) of epoch `now` in `timezone`."""
    local = datetime.fromtimestamp(now, _zone(timezone))
    return local.weekday(), local.hour * 60 + local.minute
