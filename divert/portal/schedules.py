"""Schedules: a tenant's time modes (day, night, holiday...) by weekday and hour."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import Connection, delete, insert, select

from divert.errors import DivertError, NotFound
from divert.kemi.core.schedule import format_days, parse_days, parse_minute
from divert.portal import find
from divert.schema.tables import schedules, tenants

MODE = re.compile(r"^[a-z][a-z0-9_-]{0,15}$")


def add(
    connection: Connection, tenant_name: str, mode: str, days: str, starts: str, ends: str
) -> int:
    tenant = find.tenant(connection, tenant_name)
    if not MODE.match(mode):
        raise DivertError(f"mode {mode!r} must be 1-16 lowercase letters, digits, '-' or '_'")
    try:
        weekdays = format_days(parse_days(days))
        start, end = parse_minute(starts), parse_minute(ends)
    except ValueError as error:
        raise DivertError(str(error)) from None
    values = {
        "tenant_id": tenant.id,
        "mode": mode,
        "weekdays": weekdays,
        "starts": f"{start // 60:02d}:{start % 60:02d}",
        "ends": f"{end // 60:02d}:{end % 60:02d}",
    }
    return find.inserted_id(connection.execute(insert(schedules).values(**values)))


def listing(connection: Connection, tenant_name: str | None) -> Sequence[find.AnyRow]:
    query = (
        select(schedules, tenants.c.name.label("tenant"))
        .join(tenants, tenants.c.id == schedules.c.tenant_id)
        .order_by(tenants.c.name, schedules.c.id)
    )
    if tenant_name is not None:
        query = query.where(schedules.c.tenant_id == find.tenant(connection, tenant_name).id)
    return connection.execute(query).all()


def modes_of(connection: Connection, tenant_id: int) -> set[str]:
    return set(
        connection.scalars(select(schedules.c.mode).where(schedules.c.tenant_id == tenant_id))
    )


def remove(connection: Connection, schedule_id: int) -> None:
    found = connection.scalar(select(schedules.c.id).where(schedules.c.id == schedule_id))
    if found is None:
        raise NotFound(f"unknown schedule {schedule_id}; see 'divert schedule list'")
    connection.execute(delete(schedules).where(schedules.c.id == schedule_id))
