"""Forwards (seed 000's list, add, change, delete) and `explain`.

The list is seed 000's: every forward of the caller's numbers and
subscribers, and each trunk's emergency forward as its own kind (a trunk's
setting, changed with its trunk, never deleted here).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import Connection, select

from divert import explain as explaining
from divert.api.app import Authenticated, RowId, transaction
from divert.api.auth import Caller, Forbidden, owned_numbers
from divert.errors import NotFound
from divert.kemi.core.decide import DEFAULT_RING_SECONDS, Limits
from divert.kemi.core.model import Outcome
from divert.portal import find, forwards, trunks
from divert.schema.tables import CALLER_SCOPES, CONDITIONS
from divert.schema.tables import forwards as forwards_table
from divert.schema.tables import numbers as numbers_table
from divert.schema.tables import subscribers as subscribers_table
from divert.schema.tables import tenants as tenants_table

router = APIRouter()
MAX_OWNERS = 2000  # the page's choice of whose calls; an operator's node has more


class Forward(BaseModel):
    """A forward, or a trunk's emergency forward (kind ``emergency``)."""

    kind: Literal["forward", "emergency"]
    id: int | None = Field(description="the forward's id; none for an emergency forward")
    tenant: str
    number: str | None = Field(default=None, description="the number whose calls it takes")
    subscriber: str | None = Field(default=None, description="the subscriber whose calls it takes")
    trunk: str | None = Field(default=None, description="the trunk of an emergency forward")
    when: str = Field(description="its condition, as 'divert forward add --when'")
    callers: str = "any"
    to: str = Field(description="its destination, as 'divert forward add --to'")
    timeout: int | None = None
    order: int | None = Field(
        default=None, description="its place among the owner's of this condition"
    )
    until: str | None = Field(default=None, description="expiry, ISO 8601 in the tenant's zone")
    modes: str | None = None
    away: bool | None = Field(
        default=None, description="not-present: whether its subscriber is away"
    )


class NewForward(BaseModel):
    """As `divert forward add`: a number, or a subscriber with its tenant."""

    number: str | None = None
    subscriber: str | None = None
    tenant: str | None = Field(default=None, description="default: the token's tenant")
    when: str
    to: str
    callers: str = "any"
    timeout: int | None = None
    until: str | None = None
    modes: str | None = None


class ForwardChange(BaseModel):
    """As `divert forward set`."""

    to: str
    timeout: int | None = None


class Owner(BaseModel):
    """A number or subscriber whose calls the caller may forward."""

    label: str
    tenant: str
    number: str | None = None
    subscriber: str | None = None


class Me(BaseModel):
    kind: Literal["operator", "tenant", "subscriber"]
    name: str = Field(description="who is signed in, for the page's header")
    tenant: str | None
    owners: list[Owner] = Field(description=f"at most {MAX_OWNERS}, numbers first")


class Vocabulary(BaseModel):
    """The words forwards are made of (the decision core's)."""

    conditions: list[str]
    callers: list[str]
    outcomes: list[str] = Field(description="how a ringing step can end (explain's 'after')")


@router.get("/me", tags=["session"])
def me(request: Request, who: Authenticated) -> Me:
    """Who the credentials are, and whose forwards they may set."""
    with transaction(request) as connection:
        query = (
            select(numbers_table.c.e164, tenants_table.c.name, numbers_table.c.subscriber_id)
            .join(tenants_table, tenants_table.c.id == numbers_table.c.tenant_id)
            .order_by(tenants_table.c.name, numbers_table.c.e164)
            .limit(MAX_OWNERS)
        )
        people = (
            select(subscribers_table.c.id, subscribers_table.c.username, tenants_table.c.name)
            .join(tenants_table, tenants_table.c.id == subscribers_table.c.tenant_id)
            .order_by(tenants_table.c.name, subscribers_table.c.username)
            .limit(MAX_OWNERS)
        )
        if who.tenant_id is not None:
            query = query.where(numbers_table.c.tenant_id == who.tenant_id)
            people = people.where(subscribers_table.c.tenant_id == who.tenant_id)
        if who.subscriber_id is not None:
            query = query.where(numbers_table.c.subscriber_id == who.subscriber_id)
            people = people.where(subscribers_table.c.id == who.subscriber_id)
        owners = [
            Owner(label=f"{n.e164} ({n.name})", tenant=n.name, number=n.e164)
            for n in connection.execute(query)
        ] + [
            Owner(label=f"subscriber {s.username} ({s.name})", tenant=s.name, subscriber=s.username)
            for s in connection.execute(people)
        ]
    if who.subscriber_id is not None:
        return Me(kind="subscriber", name=f"{who.username}", tenant=who.tenant, owners=owners)
    if who.tenant is not None:
        return Me(kind="tenant", name=f"tenant {who.tenant}", tenant=who.tenant, owners=owners)
    return Me(kind="operator", name="operator", tenant=None, owners=owners[:MAX_OWNERS])


@router.get("/vocabulary", tags=["session"])
def vocabulary() -> Vocabulary:
    return Vocabulary(
        conditions=list(CONDITIONS),
        callers=list(CALLER_SCOPES),
        outcomes=[o.value for o in Outcome],
    )


@router.get("/forwards", tags=["forwards"])
def list_forwards(
    request: Request,
    who: Authenticated,
    tenant: str | None = None,
    number: Annotated[str | None, Query(description="only this number's")] = None,
) -> list[Forward]:
    """Every active forward the caller may see, with the trunks' emergency
    forwards (seed 000's list); one number's when `number` is given."""
    with transaction(request) as connection:
        if tenant is not None:
            who.tenant_row(connection, tenant)
        name = who.tenant_name(tenant)
        trunk_id: int | None = None
        if number is not None:
            owned = _visible_number(connection, who, number)
            rows = forwards.listing(connection, None, number_id=int(owned.id))
            trunk_id = None if owned.trunk_id is None else int(owned.trunk_id)
        else:
            rows = forwards.listing(connection, name)
        if who.subscriber_id is not None:
            mine = owned_numbers(connection, who)
            rows = [r for r in rows if r.subscriber_id == who.subscriber_id or r.e164 in mine]
        shown = [_forward(row) for row in rows]
        if who.subscriber_id is None and (number is None or trunk_id is not None):
            names = {int(t.id): str(t.name) for t in _tenants(connection)}
            shown += [
                Forward(
                    kind="emergency",
                    id=None,
                    tenant=names[int(t.tenant_id)],
                    trunk=str(t.name),
                    when="trunk-down",
                    to=str(t.emergency),
                )
                for t in trunks.listing(connection, name)
                if t.emergency and (trunk_id is None or int(t.id) == trunk_id)
            ]
        return shown


@router.post("/forwards", status_code=201, tags=["forwards"])
def add_forward(request: Request, who: Authenticated, new: NewForward) -> Forward:
    with transaction(request) as connection:
        tenant = who.tenant_name(new.tenant)
        if new.tenant is not None:
            who.tenant_row(connection, new.tenant)
        if who.subscriber_id is not None:
            _own_owner(connection, who, new)
        owner = forwards.owner_of(connection, new.number, new.subscriber, tenant)
        if not who.sees(int(owner.tenant.id)):
            raise NotFound(
                f"unknown number {owner.keys[0]}; see 'divert number list'"
                if new.number is not None
                else f"unknown tenant {tenant!r}; see 'divert tenant list'"
            )
        forward_id, _ = forwards.add(
            connection,
            owner,
            new.when,
            new.to,
            new.callers,
            new.timeout,
            new.until,
            modes=new.modes,
            seen_by=who.tenant,
        )
        return _one(connection, who, forward_id)


@router.get("/forwards/{forward_id}", tags=["forwards"])
def get_forward(request: Request, who: Authenticated, forward_id: RowId) -> Forward:
    with transaction(request) as connection:
        return _one(connection, who, forward_id)


@router.patch("/forwards/{forward_id}", tags=["forwards"])
def change_forward(
    request: Request, who: Authenticated, forward_id: RowId, change: ForwardChange
) -> Forward:
    with transaction(request) as connection:
        _one(connection, who, forward_id)
        forwards.change_destination(
            connection, forward_id, change.to, change.timeout, seen_by=who.tenant
        )
        return _one(connection, who, forward_id)


@router.delete("/forwards/{forward_id}", status_code=204, tags=["forwards"])
def delete_forward(request: Request, who: Authenticated, forward_id: RowId) -> Response:
    with transaction(request) as connection:
        _one(connection, who, forward_id)
        forwards.remove(connection, forward_id)
    return Response(status_code=204)


@router.get("/explain", tags=["explain"])
def explain(
    request: Request,
    who: Authenticated,
    number: Annotated[str, Query(description="the called number")],
    caller: Annotated[
        str | None, Query(alias="from", description="number, username or extension")
    ] = None,
    after: Annotated[list[str] | None, Query(description="how each ringing step ends")] = None,
    at: Annotated[str | None, Query(description="ISO 8601 time (default: now)")] = None,
    max_diversions: int = Limits().max_diversions,
) -> dict[str, Any]:
    """The chain a call to `number` would take, as `divert explain --json`,
    with the trunks' names and the node's default ring time."""
    with transaction(request) as connection:
        called = str(_visible_number(connection, who, number).e164)
        moment = explaining.parse_time(connection, at, called) if at else datetime.now(UTC)
        result = explaining.explain(
            connection,
            called,
            caller,
            [explaining.parse_after(text) for text in after or ()],
            moment,
            explaining.limits(max_diversions),
            seen_by=who.tenant,
        )
        shown = explaining.as_json(result)
        shown["trunks"] = result.trunks
        shown["default_ring_timeout"] = DEFAULT_RING_SECONDS  # a relay's ring_timeout null
        return shown


def _one(connection: Connection, who: Caller, forward_id: int) -> Forward:
    """Forward `forward_id` if the caller may see it (else 404, as unknown)."""
    unknown = NotFound(f"unknown forward {forward_id}; see 'divert forward list'")
    owner = connection.execute(
        select(forwards_table.c.tenant_id).where(forwards_table.c.id == forward_id)
    ).first()
    if owner is None or not who.sees(int(owner.tenant_id)):
        raise unknown
    rows = [r for r in forwards.listing(connection, None, ids=(forward_id,))]
    if not rows:
        raise unknown  # disabled or expired: not listed, not changed here
    row = rows[0]
    if who.subscriber_id is not None and not (
        row.subscriber_id == who.subscriber_id or row.e164 in owned_numbers(connection, who)
    ):
        raise unknown
    return _forward(row)


def _visible_number(connection: Connection, who: Caller, number: str) -> Any:
    """Number `number`, if the caller may see it (else 404, as unknown)."""
    row = find.number(connection, number, who.tenant)
    if not who.sees(int(row.tenant_id)) or (
        who.subscriber_id is not None and row.subscriber_id != who.subscriber_id
    ):
        raise NotFound(f"unknown number {row.e164}; see 'divert number list'")
    return row


def _own_owner(connection: Connection, who: Caller, new: NewForward) -> None:
    """A subscriber adds forwards to itself or to numbers it owns, only."""
    if new.subscriber is not None and new.subscriber != who.username:
        raise Forbidden("a subscriber sets its own forwards only")
    if new.number is not None:
        _visible_number(connection, who, new.number)


def _forward(row: Any) -> Forward:
    return Forward(
        kind="forward",
        id=int(row.id),
        tenant=str(row.tenant),
        number=row.e164,
        subscriber=None if row.e164 else row.username,
        when=str(row.condition),
        callers=str(row.callers),
        to=forwards.destination_label(str(row.dest_kind), str(row.dest_value)),
        timeout=row.ring_timeout,
        order=int(row.position) + 1,
        until=_local(row.expires_at, str(row.timezone)) if row.expires_at else None,
        modes=row.modes,
        away=bool(row.away) if row.condition == "not-present" else None,
    )


def _local(moment: datetime, zone: str) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # SQLite: UTC
    return aware.astimezone(ZoneInfo(zone)).isoformat(timespec="minutes")


def _tenants(connection: Connection) -> list[Any]:
    from divert.portal import tenants

    return list(tenants.listing(connection))
