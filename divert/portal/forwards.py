"""Forwards: seed 000's portal operations (list, add, change destination,
delete), with validation and loop refusal before anything is committed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Connection, delete, func, insert, or_, select, update

from divert.errors import DivertError, NotFound
from divert.kemi.core.decide import Lookup
from divert.kemi.core.keys import subscriber_key
from divert.kemi.core.model import Condition
from divert.loops import find_loop, loop_refusal
from divert.numbering import normalise
from divert.portal import find, schedules
from divert.portal.policy import load_policy
from divert.portal.reader import KeyReader
from divert.portal.tenants import EXTENSION
from divert.schema.tables import CALLER_SCOPES, CONDITIONS, forwards, numbers, subscribers, tenants

REJECT_DEFAULT = 603


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose forward it is: a number, or a subscriber (all its numbers)."""

    tenant: find.AnyRow
    number_id: int | None = None
    subscriber_id: int | None = None
    keys: tuple[str, ...] = ()


def owner_of_number(connection: Connection, raw: str, tenant_name: str | None) -> Owner:
    row = find.number(connection, raw, tenant_name)
    return Owner(find.tenant_by_id(connection, row.tenant_id), number_id=row.id, keys=(row.e164,))


def owner_of_subscriber(connection: Connection, tenant_name: str, username: str) -> Owner:
    tenant = find.tenant(connection, tenant_name)
    row = find.subscriber(connection, tenant, username)
    owned = connection.scalars(select(numbers.c.e164).where(numbers.c.subscriber_id == row.id))
    keys = (subscriber_key(username, str(tenant.domain)), *owned)
    return Owner(tenant, subscriber_id=row.id, keys=keys)


def owner_of(
    connection: Connection, number: str | None, subscriber: str | None, tenant_name: str | None
) -> Owner:
    """A number, or a subscriber of `tenant_name`: exactly one of the two."""
    if (number is None) == (subscriber is None):
        raise DivertError("give the NUMBER whose calls to forward, or --subscriber with --tenant")
    if subscriber is not None:
        if tenant_name is None:
            raise DivertError("--subscriber needs --tenant")
        return owner_of_subscriber(connection, tenant_name, subscriber)
    assert number is not None
    return owner_of_number(connection, number, tenant_name)


def parse_destination(connection: Connection, tenant: find.AnyRow, spec: str) -> tuple[str, str]:
    """`--to` as (dest_kind, dest_value); see the README for the forms."""
    text = spec.strip()
    lowered = text.lower()
    if lowered == "voicemail":
        if not tenant.voicemail_uri:
            raise DivertError(
                f"tenant {tenant.name} has no voicemail server; "
                "set one with 'divert tenant set --voicemail-uri'"
            )
        return "voicemail", ""
    if lowered == "operator":
        if not tenant.operator:
            raise DivertError(
                f"tenant {tenant.name} has no operator; set one with 'divert tenant set --operator'"
            )
        return "operator", ""
    if lowered == "reject" or lowered.startswith("reject:"):
        code = lowered.partition(":")[2] or str(REJECT_DEFAULT)
        if not code.isdigit() or not 400 <= int(code) <= 699:
            raise DivertError(
                f"reject code {code!r} must be a SIP failure code 400-699, e.g. reject:486"
            )
        return "reject", code
    extension = lowered.removeprefix("ext:")
    if EXTENSION.match(extension):
        exists = connection.scalar(
            select(subscribers.c.id).where(
                subscribers.c.tenant_id == tenant.id, subscribers.c.extension == extension
            )
        )
        if exists is None:
            raise DivertError(f"extension {extension} does not exist in tenant {tenant.name}")
        return "extension", extension
    e164 = normalise(text, str(tenant.region))
    load_policy(connection).check(e164)
    return "number", e164


def destination_label(kind: str, value: str) -> str:
    """A destination as the operator types it after --to."""
    if kind == "extension":
        return f"ext:{value}"
    if kind == "reject":
        return f"reject:{value}"
    return value or kind


def parse_modes(connection: Connection, tenant: find.AnyRow, text: str) -> str:
    """``night,holiday``: modes the tenant's schedules define."""
    wanted = sorted({m.strip() for m in text.split(",") if m.strip()})
    known = schedules.modes_of(connection, int(tenant.id))
    unknown = [m for m in wanted if m not in known]
    if not wanted or unknown:
        have = ", ".join(sorted(known)) or "none yet"
        raise DivertError(
            f"tenant {tenant.name} has no schedule for mode(s) {', '.join(unknown) or text} "
            f"(modes: {have}); add one with 'divert schedule add'"
        )
    return ",".join(wanted)


def parse_until(text: str, tenant: find.AnyRow, now: datetime) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DivertError(f"time {text!r} is not ISO 8601, e.g. 2026-12-24T18:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(str(tenant.timezone)))
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31 west of UTC: past the last representable time
        raise DivertError(f"--until {text} is too far ahead") from None
    if moment <= now:
        raise DivertError(f"--until {text} is in the past")
    return moment


def add(
    connection: Connection,
    owner: Owner,
    condition: str,
    destination: str,
    callers: str = "any",
    ring_timeout: int | None = None,
    until: str | None = None,
    now: datetime | None = None,
    modes: str | None = None,
    seen_by: str | None = None,
) -> tuple[int, str]:
    """Validate and save a forward; returns its id and destination label."""
    moment = now or datetime.now(UTC)
    if condition not in CONDITIONS:
        raise DivertError(f"--when must be one of {', '.join(CONDITIONS)}")
    if callers not in CALLER_SCOPES:
        raise DivertError(f"--callers must be one of {', '.join(CALLER_SCOPES)}")
    _check_timeout(condition, ring_timeout)
    if condition == Condition.NOT_PRESENT and owner.number_id is not None:
        trunk_id = connection.scalar(
            select(numbers.c.trunk_id).where(numbers.c.id == owner.number_id)
        )
        if trunk_id is not None:
            raise DivertError(
                "--when not-present applies to subscribers' numbers: this number is "
                "answered by a PBX trunk, which has no presence"
            )
    kind, value = parse_destination(connection, owner.tenant, destination)
    position = connection.scalar(
        select(func.coalesce(func.max(forwards.c.position) + 1, 0)).where(
            _owned_by(owner), forwards.c.condition == condition
        )
    )
    values = {
        "tenant_id": owner.tenant.id,
        "number_id": owner.number_id,
        "subscriber_id": owner.subscriber_id,
        "condition": condition,
        "callers": callers,
        "dest_kind": kind,
        "dest_value": value,
        "ring_timeout": ring_timeout,
        "position": position,
        "expires_at": parse_until(until, owner.tenant, moment) if until else None,
        "modes": parse_modes(connection, owner.tenant, modes) if modes else None,
    }
    forward_id = find.inserted_id(connection.execute(insert(forwards).values(**values)))
    refuse_loops(connection, owner.keys, moment, seen_by)
    return forward_id, destination_label(kind, value)


def change_destination(
    connection: Connection,
    forward_id: int,
    destination: str,
    ring_timeout: int | None = None,
    seen_by: str | None = None,
) -> str:
    """Point a forward elsewhere; returns the new destination label."""
    row = _forward(connection, forward_id)
    tenant = find.tenant_by_id(connection, row.tenant_id)
    kind, value = parse_destination(connection, tenant, destination)
    values: dict[str, object] = {"dest_kind": kind, "dest_value": value, "updated_at": func.now()}
    if ring_timeout is not None:
        _check_timeout(row.condition, ring_timeout)
        values["ring_timeout"] = ring_timeout
    connection.execute(update(forwards).where(forwards.c.id == forward_id).values(**values))
    refuse_loops(connection, _keys_of(connection, row), datetime.now(UTC), seen_by)
    return destination_label(kind, value)


def remove(connection: Connection, forward_id: int) -> None:
    _forward(connection, forward_id)
    connection.execute(delete(forwards).where(forwards.c.id == forward_id))


def listing(
    connection: Connection,
    tenant_name: str | None,
    now: datetime | None = None,
    ids: Sequence[int] = (),
    number_id: int | None = None,
) -> Sequence[find.AnyRow]:
    """Every active forward (enabled, not expired), by tenant and owner;
    only those of `ids`, or of one number, when given."""
    moment = now or datetime.now(UTC)
    answering = subscribers.alias("answering")  # the subscriber who owns a forward's number
    query = (
        select(
            forwards,
            tenants.c.name.label("tenant"),
            tenants.c.timezone,
            numbers.c.e164,
            subscribers.c.username,
            func.coalesce(subscribers.c.away, answering.c.away).label("away"),
        )
        .join(tenants, tenants.c.id == forwards.c.tenant_id)
        .outerjoin(numbers, numbers.c.id == forwards.c.number_id)
        .outerjoin(subscribers, subscribers.c.id == forwards.c.subscriber_id)
        .outerjoin(answering, answering.c.id == numbers.c.subscriber_id)
        .where(
            forwards.c.enabled.is_(True),
            or_(forwards.c.expires_at.is_(None), forwards.c.expires_at > moment),
        )
        .order_by(
            tenants.c.name,
            numbers.c.e164,
            subscribers.c.username,
            forwards.c.condition,
            forwards.c.position,
        )
    )
    if tenant_name is not None:
        query = query.where(forwards.c.tenant_id == find.tenant(connection, tenant_name).id)
    if ids:
        query = query.where(forwards.c.id.in_(ids))
    if number_id is not None:
        query = query.where(forwards.c.number_id == number_id)
    return connection.execute(query).all()


def refuse_loops(
    connection: Connection, keys: Sequence[str], now: datetime, seen_by: str | None = None
) -> None:
    """Raise if the forwards as they now stand close a loop through `keys`.
    `seen_by`: the tenant that asks (the API), to whom other tenants'
    numbers in the loop are only "another tenant's number"."""
    lookup = portal_lookup(connection)
    loop = find_loop(lookup, keys, now.timestamp())
    if loop is None:
        return

    def shown(key: str) -> str:
        table = lookup(key)
        if seen_by is None or table is None or table.tenant == seen_by:
            return key
        return "another tenant's number"

    raise DivertError(loop_refusal(*loop, shown=shown))


def portal_lookup(connection: Connection) -> Lookup:
    """A lookup that compiles tables straight from the portal, memoised."""
    return KeyReader(connection).lookup()


def _check_timeout(condition: str, ring_timeout: int | None) -> None:
    if ring_timeout is None:
        return
    if condition != "no-answer":
        raise DivertError(
            "--timeout is the ring time before a no-answer forward; use it with --when no-answer"
        )
    if not 1 <= ring_timeout <= 600:
        raise DivertError("--timeout must be between 1 and 600 seconds")


def _owned_by(owner: Owner) -> ColumnElement[bool]:
    if owner.number_id is not None:
        return forwards.c.number_id == owner.number_id
    return forwards.c.subscriber_id == owner.subscriber_id


def _forward(connection: Connection, forward_id: int) -> find.AnyRow:
    row = connection.execute(select(forwards).where(forwards.c.id == forward_id)).first()
    if row is None:
        raise NotFound(f"unknown forward {forward_id}; see 'divert forward list'")
    return row


def _keys_of(connection: Connection, row: find.AnyRow) -> tuple[str, ...]:
    if row.number_id is not None:
        return (
            str(connection.scalar(select(numbers.c.e164).where(numbers.c.id == row.number_id))),
        )
    subscriber = connection.execute(
        select(subscribers).where(subscribers.c.id == row.subscriber_id)
    ).one()
    tenant = find.tenant_by_id(connection, row.tenant_id)
    return owner_of_subscriber(connection, str(tenant.name), str(subscriber.username)).keys
