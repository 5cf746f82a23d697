"""Numbers: E.164 DIDs, each owned by one trunk or one subscriber."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, func, insert, select, update

from divert.errors import DivertError, NotFound
from divert.numbering import normalise
from divert.portal import find
from divert.schema.tables import forwards, numbers, subscribers, tenants, trunks


def add(
    connection: Connection,
    tenant_name: str,
    raw: str,
    trunk_name: str | None = None,
    subscriber_name: str | None = None,
) -> str:
    """Add a DID; returns it in E.164."""
    tenant = find.tenant(connection, tenant_name)
    if (trunk_name is None) == (subscriber_name is None):
        raise DivertError("a number belongs to exactly one owner: give --trunk or --subscriber")
    e164 = normalise(raw, str(tenant.region))
    holder = connection.execute(
        select(tenants.c.name)
        .join(numbers, numbers.c.tenant_id == tenants.c.id)
        .where(numbers.c.e164 == e164)
    ).first()
    if holder is not None:
        raise DivertError(f"number {e164} already belongs to tenant {holder.name}")
    owner: dict[str, object] = {}
    if trunk_name is not None:
        owner["trunk_id"] = find.trunk(connection, tenant, trunk_name).id
    else:
        assert subscriber_name is not None
        owner["subscriber_id"] = find.subscriber(connection, tenant, subscriber_name).id
    connection.execute(insert(numbers).values(e164=e164, tenant_id=tenant.id, **owner))
    return e164


def listing(connection: Connection, tenant_name: str | None) -> Sequence[find.AnyRow]:
    query = (
        select(
            numbers.c.e164,
            tenants.c.name.label("tenant"),
            trunks.c.name.label("trunk"),
            subscribers.c.username.label("subscriber"),
        )
        .join(tenants, tenants.c.id == numbers.c.tenant_id)
        .outerjoin(trunks, trunks.c.id == numbers.c.trunk_id)
        .outerjoin(subscribers, subscribers.c.id == numbers.c.subscriber_id)
        .order_by(tenants.c.name, numbers.c.e164)
    )
    if tenant_name is not None:
        query = query.where(numbers.c.tenant_id == find.tenant(connection, tenant_name).id)
    return connection.execute(query).all()


def remove(connection: Connection, raw: str, tenant_name: str | None) -> tuple[str, int]:
    """Delete a DID and its forwards; returns (E.164, forwards deleted)."""
    row = find.number(connection, raw, tenant_name)
    if tenant_name is not None and row.tenant_id != find.tenant(connection, tenant_name).id:
        raise NotFound(
            f"unknown number {row.e164} in tenant {tenant_name}; see 'divert number list'"
        )
    count = connection.scalar(select(func.count()).where(forwards.c.number_id == row.id)) or 0
    connection.execute(delete(forwards).where(forwards.c.number_id == row.id))
    connection.execute(delete(numbers).where(numbers.c.id == row.id))
    connection.execute(  # its subscriber's caller ID goes back to the default
        update(subscribers).where(subscribers.c.caller_id == row.e164).values(caller_id=None)
    )
    return str(row.e164), count
