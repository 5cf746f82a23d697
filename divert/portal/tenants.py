"""Tenants: the customers, with the region their national numbers are read in."""

from __future__ import annotations

import re
from collections.abc import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from sqlalchemy import Connection, delete, func, insert, select, update

from divert.errors import DivertError
from divert.feature_codes import PROFILES
from divert.numbering import normalise
from divert.portal import find
from divert.schema.tables import numbers, subscribers, tenants, trunks

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?$")
EXTENSION = re.compile(r"^[0-9]{2,3}$")


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name):
        raise DivertError(
            f"{kind} name {name!r} must be 1-64 lowercase letters, digits, '-' or '_'"
        )
    return name


def _region(region: str) -> str:
    code = region.upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise DivertError(
            f"region {region!r} is not an ISO 3166 country code known to divert (e.g. IT)"
        )
    return code


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise DivertError(f"time zone {name!r} is unknown (e.g. Europe/Rome)") from None
    return name


def _voicemail_uri(uri: str) -> str:
    if not uri.startswith("sip:") or "{mailbox}" not in uri:
        raise DivertError(
            f"voicemail URI {uri!r} must be a sip: URI containing {{mailbox}}, "
            "e.g. sip:{mailbox}@vm.example.net"
        )
    return uri


def _code_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise DivertError(f"code profile {profile!r} must be one of {', '.join(PROFILES)}")
    return profile


def operator_spec(connection: Connection, tenant_id: int, region: str, spec: str) -> str:
    """An operator destination as stored: an existing extension, or E.164."""
    if EXTENSION.match(spec.removeprefix("ext:")):
        extension = spec.removeprefix("ext:")
        exists = connection.scalar(
            select(subscribers.c.id).where(
                subscribers.c.tenant_id == tenant_id, subscribers.c.extension == extension
            )
        )
        if exists is None:
            raise DivertError(f"operator extension {extension} does not exist in this tenant")
        return extension
    return normalise(spec, region)


def add(
    connection: Connection,
    name: str,
    region: str,
    timezone: str = "UTC",
    domain: str | None = None,
    voicemail_uri: str | None = None,
    code_profile: str = "both",
) -> int:
    check_name("tenant", name)
    sip_domain = domain or name
    if not DOMAIN.match(sip_domain):
        raise DivertError(f"SIP domain {sip_domain!r} is not a valid host name")
    if connection.scalar(select(tenants.c.id).where(tenants.c.name == name)) is not None:
        raise DivertError(f"tenant {name!r} already exists")
    if connection.scalar(select(tenants.c.name).where(tenants.c.domain == sip_domain)):
        raise DivertError(f"SIP domain {sip_domain!r} is already used by another tenant")
    values = {
        "name": name,
        "region": _region(region),
        "timezone": _timezone(timezone),
        "domain": sip_domain,
        "voicemail_uri": _voicemail_uri(voicemail_uri) if voicemail_uri else None,
        "code_profile": _code_profile(code_profile),
    }
    return find.inserted_id(connection.execute(insert(tenants).values(**values)))


def change(
    connection: Connection,
    name: str,
    region: str | None = None,
    timezone: str | None = None,
    operator: str | None = None,
    voicemail_uri: str | None = None,
    code_profile: str | None = None,
) -> None:
    row = find.tenant(connection, name)
    values: dict[str, object] = {}
    if region is not None:
        values["region"] = _region(region)
    if timezone is not None:
        values["timezone"] = _timezone(timezone)
    if operator is not None:
        values["operator"] = (
            operator_spec(connection, row.id, str(values.get("region", row.region)), operator)
            if operator
            else None
        )
    if voicemail_uri is not None:
        values["voicemail_uri"] = _voicemail_uri(voicemail_uri) if voicemail_uri else None
    if not values:
        raise DivertError(
            "nothing to change: give --region, --timezone, --operator or --voicemail-uri"
        )
    connection.execute(update(tenants).where(tenants.c.id == row.id).values(**values))


def listing(connection: Connection) -> Sequence[find.AnyRow]:
    return connection.execute(select(tenants).order_by(tenants.c.name)).all()


def remove(connection: Connection, name: str) -> None:
    row = find.tenant(connection, name)
    in_use = []
    for table, label in ((numbers, "number"), (subscribers, "subscriber"), (trunks, "trunk")):
        count = connection.scalar(select(func.count()).where(table.c.tenant_id == row.id)) or 0
        if count:
            in_use.append(f"{count} {label}{'s' if count > 1 else ''}")
    if in_use:
        raise DivertError(f"tenant {name} still has {', '.join(in_use)}; delete them first")
    connection.execute(delete(tenants).where(tenants.c.id == row.id))
