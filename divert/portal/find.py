"""Finding portal rows by the names operators type, with one-line errors."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, CursorResult, Row, select

from divert.errors import DivertError, NotFound
from divert.numbering import normalise
from divert.schema.tables import numbers, subscribers, tenants, trunks

AnyRow = Row[tuple[object, ...]]


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the row an INSERT just wrote."""
    key = result.inserted_primary_key
    assert key is not None, "not the result of a single-row INSERT"
    return int(key[0])


def tenant(connection: Connection, name: str) -> AnyRow:
    row = connection.execute(select(tenants).where(tenants.c.name == name)).first()
    if row is None:
        raise NotFound(f"unknown tenant {name!r}; see 'divert tenant list'")
    return row


def tenant_by_id(connection: Connection, tenant_id: int) -> AnyRow:
    return connection.execute(select(tenants).where(tenants.c.id == tenant_id)).one()


def trunk(connection: Connection, tenant_row: AnyRow, name: str) -> AnyRow:
    row = connection.execute(
        select(trunks).where(trunks.c.tenant_id == tenant_row.id, trunks.c.name == name)
    ).first()
    if row is None:
        raise NotFound(
            f"unknown trunk {name!r} in tenant {tenant_row.name}; see 'divert trunk list'"
        )
    return row


def subscriber(connection: Connection, tenant_row: AnyRow, username: str) -> AnyRow:
    row = connection.execute(
        select(subscribers).where(
            subscribers.c.tenant_id == tenant_row.id, subscribers.c.username == username
        )
    ).first()
    if row is None:
        raise NotFound(
            f"unknown subscriber {username!r} in tenant {tenant_row.name}; "
            "see 'divert subscriber list'"
        )
    return row


def number_region(connection: Connection, raw: str, tenant_name: str | None) -> str:
    """The region to read `raw` with: its tenant's, or any when international."""
    if tenant_name is not None:
        return str(tenant(connection, tenant_name).region)
    if raw.strip().startswith(("+", "00")):
        return "ZZ"
    regions = set(connection.scalars(select(tenants.c.region).distinct()))
    if len(regions) == 1:
        return str(regions.pop())
    raise DivertError(
        f"{raw!r} is in national form: give it as +<country><number> or pass --tenant"
    )


def number(connection: Connection, raw: str, tenant_name: str | None = None) -> AnyRow:
    """A DID of the portal, given in international or national form."""
    e164 = normalise(raw, number_region(connection, raw, tenant_name))
    row = connection.execute(select(numbers).where(numbers.c.e164 == e164)).first()
    if row is None:
        raise NotFound(f"unknown number {e164}; see 'divert number list'")
    return row
