"""Trunks: customer PBXs, recognised by address, with an emergency number."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from sqlalchemy import Connection, delete, func, insert, select

from divert.errors import DivertError
from divert.numbering import normalise
from divert.portal import find
from divert.portal.policy import load_policy
from divert.portal.tenants import check_name
from divert.schema.tables import DIVERSION_STYLES, numbers, tenants, trunks


def parse_address(text: str) -> str:
    """``IP`` or ``IP:PORT`` (IPv4), returned as ``IP:PORT``."""
    host, _, port = text.strip().partition(":")
    try:
        ipaddress.IPv4Address(host)
        port_number = int(port) if port else 5060
    except ValueError:
        raise DivertError(
            f"trunk address {text!r} must be IPv4[:port], e.g. 192.0.2.10:5060"
        ) from None
    if not 0 < port_number < 65536:
        raise DivertError(f"trunk address {text!r} has a port outside 1-65535")
    return f"{host}:{port_number}"


def add(
    connection: Connection,
    tenant_name: str,
    name: str,
    addresses: Sequence[str],
    emergency: str | None = None,
    diversion_style: str = "diversion",
) -> int:
    tenant = find.tenant(connection, tenant_name)
    check_name("trunk", name)
    if not addresses:
        raise DivertError("a trunk needs at least one --address")
    if diversion_style not in DIVERSION_STYLES:
        raise DivertError(f"--diversion-style must be one of {', '.join(DIVERSION_STYLES)}")
    exists = connection.scalar(
        select(trunks.c.id).where(trunks.c.tenant_id == tenant.id, trunks.c.name == name)
    )
    if exists is not None:
        raise DivertError(f"trunk {name!r} already exists in tenant {tenant.name}")
    parsed = [parse_address(a) for a in addresses]
    taken = {
        address: row
        for row in connection.execute(
            select(trunks.c.name, trunks.c.addresses, tenants.c.name.label("tenant")).join(
                tenants, tenants.c.id == trunks.c.tenant_id
            )
        )
        for address in str(row.addresses).split(",")
    }
    for address in parsed:
        if address in taken:
            holder = taken[address]
            raise DivertError(
                f"address {address} is already trunk {holder.name} of tenant {holder.tenant}: "
                "one address, one trunk (calls from it could not be told apart)"
            )
    emergency_e164 = None
    if emergency:
        emergency_e164 = normalise(emergency, str(tenant.region))
        load_policy(connection).check(emergency_e164)
    values = {
        "tenant_id": tenant.id,
        "name": name,
        "addresses": ",".join(parsed),
        "emergency": emergency_e164,
        "diversion_style": diversion_style,
    }
    return find.inserted_id(connection.execute(insert(trunks).values(**values)))


def listing(connection: Connection, tenant_name: str | None) -> Sequence[find.AnyRow]:
    query = select(trunks).order_by(trunks.c.tenant_id, trunks.c.name)
    if tenant_name is not None:
        query = query.where(trunks.c.tenant_id == find.tenant(connection, tenant_name).id)
    return connection.execute(query).all()


def remove(connection: Connection, tenant_name: str, name: str) -> None:
    row = find.trunk(connection, find.tenant(connection, tenant_name), name)
    count = connection.scalar(select(func.count()).where(numbers.c.trunk_id == row.id)) or 0
    if count:
        raise DivertError(f"trunk {name} still carries {count} number(s); delete them first")
    connection.execute(delete(trunks).where(trunks.c.id == row.id))
