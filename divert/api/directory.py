"""Tenants, trunks, subscribers, numbers, schedules and the destination
policy: the `divert` command's groups of the same names, over HTTP.

What a tenant token may change is what a customer manages itself: its
subscribers and its schedules.  Tenants (whose voicemail server and
operator are destinations of their calls), trunks (whose addresses the
node trusts), numbers (the carrier's DIDs) and the destination policy are
the operator's: a tenant token reads them, for its own tenant, and gets
403 for a change.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from divert.api.app import Authenticated, RowId, transaction
from divert.errors import NotFound
from divert.portal import find, numbers, policy, schedules, subscribers, tenants, trunks
from divert.schema.tables import schedules as schedules_table

router = APIRouter()


# -- tenants -------------------------------------------------------------------------


class Tenant(BaseModel):
    name: str
    region: str
    timezone: str
    domain: str
    operator: str | None
    voicemail_uri: str | None
    code_profile: str


class NewTenant(BaseModel):
    name: str
    region: str
    timezone: str = "UTC"
    domain: str | None = Field(default=None, description="default: the name")
    voicemail_uri: str | None = None
    code_profile: str = "both"


class TenantChange(BaseModel):
    region: str | None = None
    timezone: str | None = None
    operator: str | None = Field(default=None, description="'' clears")
    voicemail_uri: str | None = Field(default=None, description="'' clears")


def _tenant(row: Any) -> Tenant:
    return Tenant(
        name=row.name,
        region=row.region,
        timezone=row.timezone,
        domain=row.domain,
        operator=row.operator,
        voicemail_uri=row.voicemail_uri,
        code_profile=row.code_profile,
    )


@router.get("/tenants", tags=["tenants"])
def list_tenants(request: Request, who: Authenticated) -> list[Tenant]:
    who.require_tenant_level()
    with transaction(request) as connection:
        return [_tenant(t) for t in tenants.listing(connection) if who.sees(int(t.id))]


@router.post("/tenants", status_code=201, tags=["tenants"])
def add_tenant(request: Request, who: Authenticated, new: NewTenant) -> Tenant:
    who.require_operator()
    with transaction(request) as connection:
        tenants.add(
            connection,
            new.name,
            new.region,
            new.timezone,
            new.domain,
            new.voicemail_uri,
            new.code_profile,
        )
        return _tenant(find.tenant(connection, new.name))


@router.get("/tenants/{name}", tags=["tenants"])
def get_tenant(request: Request, who: Authenticated, name: str) -> Tenant:
    who.require_tenant_level()
    with transaction(request) as connection:
        return _tenant(who.tenant_row(connection, name))


@router.patch("/tenants/{name}", tags=["tenants"])
def change_tenant(request: Request, who: Authenticated, name: str, change: TenantChange) -> Tenant:
    # its voicemail server and operator are destinations of its calls: the
    # operator's to set, like trunks
    who.require_operator()
    with transaction(request) as connection:
        tenants.change(
            connection,
            name,
            change.region,
            change.timezone,
            change.operator,
            change.voicemail_uri,
        )
        return _tenant(find.tenant(connection, name))


@router.delete("/tenants/{name}", status_code=204, tags=["tenants"])
def delete_tenant(request: Request, who: Authenticated, name: str) -> Response:
    who.require_operator()
    with transaction(request) as connection:
        tenants.remove(connection, name)
    return Response(status_code=204)


# -- trunks --------------------------------------------------------------------------


class Trunk(BaseModel):
    name: str
    addresses: list[str]
    emergency: str | None
    diversion_style: str


class NewTrunk(BaseModel):
    name: str
    addresses: list[str] = Field(description="IPv4[:port] each, as 'divert trunk add --address'")
    emergency: str | None = None
    diversion_style: str = "diversion"


@router.get("/tenants/{tenant}/trunks", tags=["trunks"])
def list_trunks(request: Request, who: Authenticated, tenant: str) -> list[Trunk]:
    who.require_tenant_level()
    with transaction(request) as connection:
        who.tenant_row(connection, tenant)
        return [
            Trunk(
                name=t.name,
                addresses=str(t.addresses).split(","),
                emergency=t.emergency,
                diversion_style=t.diversion_style,
            )
            for t in trunks.listing(connection, tenant)
        ]


@router.post("/tenants/{tenant}/trunks", status_code=201, tags=["trunks"])
def add_trunk(request: Request, who: Authenticated, tenant: str, new: NewTrunk) -> Trunk:
    who.require_operator()
    with transaction(request) as connection:
        trunks.add(connection, tenant, new.name, new.addresses, new.emergency, new.diversion_style)
        row = find.trunk(connection, find.tenant(connection, tenant), new.name)
        return Trunk(
            name=row.name,
            addresses=str(row.addresses).split(","),
            emergency=row.emergency,
            diversion_style=row.diversion_style,
        )


@router.delete("/tenants/{tenant}/trunks/{name}", status_code=204, tags=["trunks"])
def delete_trunk(request: Request, who: Authenticated, tenant: str, name: str) -> Response:
    who.require_operator()
    with transaction(request) as connection:
        trunks.remove(connection, tenant, name)
    return Response(status_code=204)


# -- subscribers ---------------------------------------------------------------------


class Subscriber(BaseModel):
    username: str
    extension: str | None
    display_name: str
    caller_id: str | None = Field(description="the number its calls to the carriers show")
    away: bool


class NewSubscriber(BaseModel):
    username: str
    password: str = Field(description="its SIP password; the portal keeps only the HA1")
    extension: str | None = None
    display_name: str = ""


class SubscriberChange(BaseModel):
    caller_id: str | None = None
    away: bool | None = None


def _subscribers(connection: Any, tenant: str, only: str | None = None) -> list[Subscriber]:
    asserted = subscribers.caller_ids(connection, tenant)
    shown = [
        Subscriber(
            username=s.username,
            extension=s.extension,
            display_name=s.display_name,
            caller_id=asserted.get(s.id),
            away=bool(s.away),
        )
        for s in subscribers.listing(connection, tenant)
        if only is None or s.username == only
    ]
    if only is not None and not shown:
        find.subscriber(connection, find.tenant(connection, tenant), only)  # its 404
    return shown


@router.get("/tenants/{tenant}/subscribers", tags=["subscribers"])
def list_subscribers(request: Request, who: Authenticated, tenant: str) -> list[Subscriber]:
    who.require_tenant_level()
    with transaction(request) as connection:
        who.tenant_row(connection, tenant)
        return _subscribers(connection, tenant)


@router.post("/tenants/{tenant}/subscribers", status_code=201, tags=["subscribers"])
def add_subscriber(
    request: Request, who: Authenticated, tenant: str, new: NewSubscriber
) -> Subscriber:
    who.require_tenant_level()
    with transaction(request) as connection:
        who.tenant_row(connection, tenant)
        subscribers.add(
            connection, tenant, new.username, new.password, new.extension, new.display_name
        )
        return _subscribers(connection, tenant, new.username)[0]


@router.patch("/tenants/{tenant}/subscribers/{username}", tags=["subscribers"])
def change_subscriber(
    request: Request, who: Authenticated, tenant: str, username: str, change: SubscriberChange
) -> Subscriber:
    who.require_tenant_level()
    with transaction(request) as connection:
        who.tenant_row(connection, tenant)
        subscribers.change(connection, tenant, username, change.caller_id, change.away)
        return _subscribers(connection, tenant, username)[0]


@router.delete("/tenants/{tenant}/subscribers/{username}", status_code=204, tags=["subscribers"])
def delete_subscriber(request: Request, who: Authenticated, tenant: str, username: str) -> Response:
    who.require_tenant_level()
    with transaction(request) as connection:
        who.tenant_row(connection, tenant)
        subscribers.remove(connection, tenant, username)
    return Response(status_code=204)


# -- numbers -------------------------------------------------------------------------


class Number(BaseModel):
    number: str
    trunk: str | None
    subscriber: str | None


class NewNumber(BaseModel):
    """As `divert number add`: exactly one of trunk and subscriber."""

    number: str
    trunk: str | None = None
    subscriber: str | None = None


@router.get("/tenants/{tenant}/numbers", tags=["numbers"])
def list_numbers(request: Request, who: Authenticated, tenant: str) -> list[Number]:
    who.require_tenant_level()
    with transaction(request) as connection:
        who.tenant_row(connection, tenant)
        return [
            Number(number=n.e164, trunk=n.trunk, subscriber=n.subscriber)
            for n in numbers.listing(connection, tenant)
        ]


@router.post("/tenants/{tenant}/numbers", status_code=201, tags=["numbers"])
def add_number(request: Request, who: Authenticated, tenant: str, new: NewNumber) -> Number:
    who.require_operator()
    with transaction(request) as connection:
        e164 = numbers.add(connection, tenant, new.number, new.trunk, new.subscriber)
        return Number(number=e164, trunk=new.trunk, subscriber=new.subscriber)


@router.delete("/tenants/{tenant}/numbers/{number}", status_code=204, tags=["numbers"])
def delete_number(request: Request, who: Authenticated, tenant: str, number: str) -> Response:
    who.require_operator()
    with transaction(request) as connection:
        numbers.remove(connection, number, tenant)
    return Response(status_code=204)


# -- schedules -----------------------------------------------------------------------


class Schedule(BaseModel):
    id: int
    mode: str
    days: str
    starts: str = Field(description="HH:MM in the tenant's zone ('divert schedule add --from')")
    ends: str = Field(description="HH:MM; before starts: the next day ('--to')")


class NewSchedule(BaseModel):
    """As `divert schedule add`: days mon-fri, sat,sun or all; HH:MM times."""

    mode: str
    days: str
    starts: str
    ends: str


@router.get("/tenants/{tenant}/schedules", tags=["schedules"])
def list_schedules(request: Request, who: Authenticated, tenant: str) -> list[Schedule]:
    who.require_tenant_level()
    with transaction(request) as connection:
        who.tenant_row(connection, tenant)
        return [
            Schedule(id=e.id, mode=e.mode, days=e.weekdays, starts=e.starts, ends=e.ends)
            for e in schedules.listing(connection, tenant)
        ]


@router.post("/tenants/{tenant}/schedules", status_code=201, tags=["schedules"])
def add_schedule(request: Request, who: Authenticated, tenant: str, new: NewSchedule) -> Schedule:
    who.require_tenant_level()
    with transaction(request) as connection:
        who.tenant_row(connection, tenant)
        entry = schedules.add(connection, tenant, new.mode, new.days, new.starts, new.ends)
        (row,) = [e for e in schedules.listing(connection, tenant) if e.id == entry]
        return Schedule(
            id=row.id, mode=row.mode, days=row.weekdays, starts=row.starts, ends=row.ends
        )


@router.delete("/schedules/{schedule_id}", status_code=204, tags=["schedules"])
def delete_schedule(request: Request, who: Authenticated, schedule_id: RowId) -> Response:
    who.require_tenant_level()
    with transaction(request) as connection:
        from sqlalchemy import select

        owner = connection.scalar(
            select(schedules_table.c.tenant_id).where(schedules_table.c.id == schedule_id)
        )
        if owner is not None and not who.sees(int(owner)):
            raise NotFound(f"unknown schedule {schedule_id}; see 'divert schedule list'")
        schedules.remove(connection, schedule_id)
    return Response(status_code=204)


# -- the destination policy ----------------------------------------------------------


class Policy(BaseModel):
    allow_countries: list[int] = Field(description="calling codes forwards may reach; [] all")
    deny_prefixes: list[str]


class PolicyChange(BaseModel):
    """As `divert policy set`: comma-separated, '' allows all (clears)."""

    allow_countries: str | None = None
    deny_prefixes: str | None = None


def _policy(connection: Any) -> Policy:
    current = policy.load_policy(connection)
    return Policy(
        allow_countries=sorted(current.allowed_countries),
        deny_prefixes=list(current.denied_prefixes),
    )


@router.get("/policy", tags=["policy"])
def show_policy(request: Request, who: Authenticated) -> Policy:
    who.require_tenant_level()
    with transaction(request) as connection:
        return _policy(connection)


@router.patch("/policy", tags=["policy"])
def change_policy(request: Request, who: Authenticated, change: PolicyChange) -> Policy:
    who.require_operator()
    with transaction(request) as connection:
        policy.change(connection, change.allow_countries, change.deny_prefixes)
        return _policy(connection)
