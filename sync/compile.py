"""Compiling portal rows into the decision core's `ForwardTable`s.

One function per kind of key; each reads the rows it needs through the
connection it is given.  The portal tools use it key by key (explain, loop
refusal); the sync worker uses the same row conversions for the store.

What a key's table holds:

- an E.164 number: its own forwards, then (if a subscriber owns it) the
  subscriber's forwards; its trunk's emergency number as a last
  ``trunk-down`` rule; it rings its trunk or its subscriber.
- ``sub:<user>@<domain>`` (reached by extension): the subscriber's forwards;
  announced by its first number, else its extension.
- ``vm:<mailbox>``: no rules; rings the tenant's voicemail server.

A forward whose destination no longer resolves (an extension deleted, a
tenant without operator or voicemail server) is left out and reported in
`problems`; the rest of the table still compiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Connection, Row, select

from kemi.core.keys import (
    SUBSCRIBER_PREFIX,
    VOICEMAIL_PREFIX,
    is_number,
    subscriber_key,
    voicemail_key,
)
from kemi.core.model import (
    Condition,
    Destination,
    DestKind,
    Endpoint,
    EndpointKind,
    ForwardTable,
    Rule,
    Scope,
)
from schema.tables import forwards, numbers, subscribers, tenants, trunks


class UnresolvedDestination(Exception):
    """A forward points at something that does not exist (any more)."""


def compile_key(
    connection: Connection, key: str, problems: list[str] | None = None
) -> ForwardTable | None:
    """The table of `key`, or None when no number, subscriber or mailbox has it."""
    sink = problems if problems is not None else []
    if is_number(key):
        return compile_number(connection, key, sink)
    if key.startswith(SUBSCRIBER_PREFIX):
        return compile_subscriber(connection, key, sink)
    if key.startswith(VOICEMAIL_PREFIX):
        return compile_voicemail(connection, key)
    return None


def compile_number(connection: Connection, e164: str, problems: list[str]) -> ForwardTable | None:
    number = connection.execute(select(numbers).where(numbers.c.e164 == e164)).first()
    if number is None:
        return None
    tenant = _tenant(connection, number.tenant_id)
    rows = list(_forwards(connection, numbers_id=number.id))
    if number.subscriber_id is not None:
        subscriber = connection.execute(
            select(subscribers).where(subscribers.c.id == number.subscriber_id)
        ).one()
        rows += _forwards(connection, subscriber_id=subscriber.id)
        endpoint = Endpoint(EndpointKind.SUBSCRIBER, f"{subscriber.username}@{tenant.domain}")
        mailbox = f"{subscriber.username}@{tenant.domain}"
        emergency: list[Rule] = []
    else:
        trunk = connection.execute(select(trunks).where(trunks.c.id == number.trunk_id)).one()
        endpoint = Endpoint(EndpointKind.TRUNK, str(trunk.id))
        mailbox = e164
        emergency = [emergency_rule(trunk.name, trunk.emergency)] if trunk.emergency else []
    rules = _rules(connection, rows, tenant, mailbox, problems) + emergency
    return ForwardTable(e164, tenant.name, e164, endpoint, tuple(rules))


def compile_subscriber(
    connection: Connection, key: str, problems: list[str]
) -> ForwardTable | None:
    username, _, domain = key[len(SUBSCRIBER_PREFIX) :].partition("@")
    found = connection.execute(
        select(subscribers, tenants.c.domain)
        .join(tenants, tenants.c.id == subscribers.c.tenant_id)
        .where(subscribers.c.username == username, tenants.c.domain == domain)
    ).first()
    if found is None:
        return None
    tenant = _tenant(connection, found.tenant_id)
    first_number = connection.scalar(
        select(numbers.c.e164).where(numbers.c.subscriber_id == found.id).order_by(numbers.c.id)
    )
    identity = first_number or found.extension or username
    rows = _forwards(connection, subscriber_id=found.id)
    rules = _rules(connection, rows, tenant, f"{username}@{domain}", problems)
    endpoint = Endpoint(EndpointKind.SUBSCRIBER, f"{username}@{domain}")
    return ForwardTable(key, tenant.name, identity, endpoint, tuple(rules))


def compile_voicemail(connection: Connection, key: str) -> ForwardTable | None:
    mailbox = key[len(VOICEMAIL_PREFIX) :]
    if is_number(mailbox):
        tenant_id = connection.scalar(select(numbers.c.tenant_id).where(numbers.c.e164 == mailbox))
        tenant = None if tenant_id is None else _tenant(connection, tenant_id)
    else:
        domain = mailbox.partition("@")[2]
        tenant = connection.execute(select(tenants).where(tenants.c.domain == domain)).first()
    if tenant is None or not tenant.voicemail_uri:
        return None
    endpoint = Endpoint(EndpointKind.VOICEMAIL, tenant.voicemail_uri.format(mailbox=mailbox))
    return ForwardTable(key, tenant.name, mailbox, endpoint)


def emergency_rule(trunk_name: str, emergency: str) -> Rule:
    """A trunk's emergency number as the last trunk-down rule of its numbers."""
    return Rule(
        Condition.TRUNK_DOWN,
        Scope.ANY,
        Destination(DestKind.NUMBER, emergency, emergency),
        f"trunk {trunk_name} emergency",
    )


def _tenant(connection: Connection, tenant_id: int) -> Row[tuple[object, ...]]:
    return connection.execute(select(tenants).where(tenants.c.id == tenant_id)).one()


def _forwards(
    connection: Connection, numbers_id: int | None = None, subscriber_id: int | None = None
) -> Sequence[Row[tuple[object, ...]]]:
    owner = (
        forwards.c.number_id == numbers_id
        if numbers_id is not None
        else forwards.c.subscriber_id == subscriber_id
    )
    query = (
        select(forwards)
        .where(owner, forwards.c.enabled.is_(True))
        .order_by(forwards.c.position, forwards.c.id)
    )
    return connection.execute(query).all()


def _rules(
    connection: Connection,
    rows: Sequence[Row[tuple[object, ...]]],
    tenant: Row[tuple[object, ...]],
    mailbox: str,
    problems: list[str],
) -> list[Rule]:
    rules = []
    for row in rows:
        try:
            destination = resolve_destination(
                connection, tenant, row.dest_kind, row.dest_value, mailbox
            )
        except UnresolvedDestination as error:
            problems.append(f"forward {row.id} skipped: {error}")
            continue
        rules.append(
            Rule(
                Condition(row.condition),
                Scope(row.callers),
                destination,
                f"forward {row.id}",
                ring_timeout=row.ring_timeout,
                modes=frozenset(row.modes.split(",")) if row.modes else frozenset(),
                expires_at=_epoch(row.expires_at),
            )
        )
    return rules


def resolve_destination(
    connection: Connection,
    tenant: Row[tuple[object, ...]],
    kind: str,
    value: str,
    mailbox: str,
) -> Destination:
    """The compiled destination of a forward owned in `tenant` whose owner's
    voicemail box is `mailbox`."""
    dest_kind = DestKind(kind)
    if dest_kind is DestKind.NUMBER:
        return Destination(dest_kind, value, value)
    if dest_kind is DestKind.EXTENSION:
        return Destination(dest_kind, _extension_key(connection, tenant, value), f"ext {value}")
    if dest_kind is DestKind.VOICEMAIL:
        if not tenant.voicemail_uri:
            raise UnresolvedDestination(f"tenant {tenant.name} has no voicemail server")
        return Destination(dest_kind, voicemail_key(mailbox), "voicemail")
    if dest_kind is DestKind.OPERATOR:
        operator = tenant.operator
        if not operator:
            raise UnresolvedDestination(f"tenant {tenant.name} has no operator destination")
        if is_number(str(operator)):
            key = str(operator)
        else:
            key = _extension_key(connection, tenant, str(operator))
        return Destination(dest_kind, key, f"operator ({operator})")
    return Destination(dest_kind, "", f"reject {value}", reply_code=int(value))


def _extension_key(connection: Connection, tenant: Row[tuple[object, ...]], extension: str) -> str:
    username = connection.scalar(
        select(subscribers.c.username).where(
            subscribers.c.tenant_id == tenant.id, subscribers.c.extension == extension
        )
    )
    if username is None:
        raise UnresolvedDestination(f"extension {extension} does not exist in tenant {tenant.name}")
    return subscriber_key(username, str(tenant.domain))


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        # SQLite returns naive datetimes; the portal stores UTC.
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
