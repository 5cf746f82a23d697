"""Subscribers: hosted SIP accounts with an optional 2-3 digit extension.

Only the digest HA1 (MD5 of ``username:realm:password``, realm = the
tenant's SIP domain) is stored; the password itself never is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from sqlalchemy import Connection, delete, func, insert, select, update

from divert.errors import DivertError
from divert.numbering import normalise
from divert.portal import find
from divert.portal.tenants import EXTENSION
from divert.schema.tables import forwards, numbers, subscribers, tenants

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def ha1(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()


def add(
    connection: Connection,
    tenant_name: str,
    username: str,
    password: str,
    extension: str | None = None,
    display_name: str = "",
) -> int:
    tenant = find.tenant(connection, tenant_name)
    if not USERNAME.match(username):
        raise DivertError(f"username {username!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if len(password) < 8:
        raise DivertError("the password must have at least 8 characters")
    if len(display_name) > 64 or any(c in display_name for c in '"\\\r\n'):
        raise DivertError(
            "the display name must have at most 64 characters and no quotes, "
            "backslashes or line breaks"
        )
    exists = connection.scalar(
        select(subscribers.c.id).where(
            subscribers.c.tenant_id == tenant.id, subscribers.c.username == username
        )
    )
    if exists is not None:
        raise DivertError(f"subscriber {username!r} already exists in tenant {tenant.name}")
    if extension is not None:
        if not EXTENSION.match(extension):
            raise DivertError(f"extension {extension!r} must have 2 or 3 digits")
        holder = connection.scalar(
            select(subscribers.c.username).where(
                subscribers.c.tenant_id == tenant.id, subscribers.c.extension == extension
            )
        )
        if holder is not None:
            raise DivertError(
                f"extension {extension} is already used by {holder} in tenant {tenant.name}"
            )
    values = {
        "tenant_id": tenant.id,
        "username": username,
        "ha1": ha1(username, str(tenant.domain), password),
        "extension": extension,
        "display_name": display_name,
    }
    return find.inserted_id(connection.execute(insert(subscribers).values(**values)))


def change(
    connection: Connection,
    tenant_name: str,
    username: str,
    caller_id: str | None = None,
    away: bool | None = None,
) -> str | None:
    """Change what is given; returns the caller ID chosen (None: the default)."""
    if caller_id is None and away is None:
        raise DivertError("nothing to change: give --caller-id, --away or --present")
    chosen = None
    if caller_id is not None:
        chosen = set_caller_id(connection, tenant_name, username, caller_id)
    if away is not None:
        set_presence(connection, tenant_name, username, away)
    return chosen


def set_caller_id(connection: Connection, tenant_name: str, username: str, raw: str) -> str | None:
    """Choose which of the subscriber's numbers its calls to the carriers
    assert; '' goes back to the default (the number it was given first).
    Returns the number chosen, in E.164, or None."""
    tenant = find.tenant(connection, tenant_name)
    row = find.subscriber(connection, tenant, username)
    chosen = None
    if raw.strip():
        chosen = normalise(raw, str(tenant.region))
        owner = connection.scalar(select(numbers.c.subscriber_id).where(numbers.c.e164 == chosen))
        if owner != row.id:
            raise DivertError(
                f"{chosen} is not a number of subscriber {username}: give it one with "
                f"'divert number add {chosen} --tenant {tenant.name} --subscriber {username}'"
            )
    connection.execute(
        update(subscribers).where(subscribers.c.id == row.id).values(caller_id=chosen)
    )
    return chosen


def set_presence(connection: Connection, tenant_name: str, username: str, away: bool) -> None:
    """Seed 004's "not present": while away, the subscriber's not-present
    forwards apply before its phones ring."""
    row = find.subscriber(connection, find.tenant(connection, tenant_name), username)
    connection.execute(update(subscribers).where(subscribers.c.id == row.id).values(away=away))


def caller_id(chosen: str | None, owned: Sequence[str]) -> str | None:
    """The number a subscriber's calls to the carriers assert: the operator's
    choice while the subscriber owns it, else the number it was given first
    (`owned` in the order they were added); None when it owns none.  The
    sync worker compiles it into the store by this rule."""
    if chosen is not None and chosen in owned:
        return chosen
    return owned[0] if owned else None


def caller_ids(connection: Connection, tenant_name: str | None) -> dict[int, str]:
    """Each subscriber's caller ID, by `caller_id`."""
    query = select(subscribers.c.id, subscribers.c.caller_id, numbers.c.e164).join(
        numbers, numbers.c.subscriber_id == subscribers.c.id
    )
    if tenant_name is not None:
        query = query.where(subscribers.c.tenant_id == find.tenant(connection, tenant_name).id)
    chosen: dict[int, str | None] = {}
    owned: dict[int, list[str]] = {}
    for subscriber_id, choice, e164 in connection.execute(query.order_by(numbers.c.id)):
        chosen[subscriber_id] = choice
        owned.setdefault(subscriber_id, []).append(e164)
    return {
        subscriber_id: number
        for subscriber_id, numbers_owned in owned.items()
        if (number := caller_id(chosen[subscriber_id], numbers_owned)) is not None
    }


def listing(connection: Connection, tenant_name: str | None) -> Sequence[find.AnyRow]:
    query = (
        select(subscribers, tenants.c.name.label("tenant"))
        .join(tenants, tenants.c.id == subscribers.c.tenant_id)
        .order_by(tenants.c.name, subscribers.c.username)
    )
    if tenant_name is not None:
        query = query.where(subscribers.c.tenant_id == find.tenant(connection, tenant_name).id)
    return connection.execute(query).all()


def remove(connection: Connection, tenant_name: str, username: str) -> None:
    tenant = find.tenant(connection, tenant_name)
    row = find.subscriber(connection, tenant, username)
    owned = connection.scalar(select(func.count()).where(numbers.c.subscriber_id == row.id)) or 0
    if owned:
        raise DivertError(f"subscriber {username} still owns {owned} number(s); delete them first")
    if row.extension is not None:
        pointing = connection.scalars(
            select(forwards.c.id).where(
                forwards.c.tenant_id == tenant.id,
                forwards.c.dest_kind == "extension",
                forwards.c.dest_value == row.extension,
            )
        ).all()
        if tenant.operator == row.extension:
            raise DivertError(
                f"extension {row.extension} is the operator of tenant {tenant.name}; "
                "change that first"
            )
        if pointing:
            ids = ", ".join(str(i) for i in pointing)
            raise DivertError(
                f"extension {row.extension} is the destination of forward(s) {ids}; "
                "change or delete them first"
            )
    connection.execute(delete(forwards).where(forwards.c.subscriber_id == row.id))
    connection.execute(delete(subscribers).where(subscribers.c.id == row.id))
