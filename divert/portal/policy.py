"""The forward-destination policy, kept in the portal's `settings` table."""

from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select

from divert.errors import DivertError
from divert.numbering import DestinationPolicy
from divert.schema.tables import settings

ALLOWED_COUNTRIES = "policy.allowed_countries"
DENIED_PREFIXES = "policy.denied_prefixes"


def load_policy(connection: Connection) -> DestinationPolicy:
    rows = connection.execute(
        select(settings.c.name, settings.c.value).where(
            settings.c.name.in_((ALLOWED_COUNTRIES, DENIED_PREFIXES))
        )
    )
    stored = {row.name: row.value for row in rows}
    countries = stored.get(ALLOWED_COUNTRIES, "")
    prefixes = stored.get(DENIED_PREFIXES, "")
    return DestinationPolicy(
        allowed_countries=frozenset(int(c) for c in countries.split(",") if c),
        denied_prefixes=tuple(p for p in prefixes.split(",") if p),
    )


def parse_countries(text: str) -> str:
    codes = [c.strip().lstrip("+") for c in text.split(",") if c.strip()]
    if not all(c.isdigit() and 1 <= len(c) <= 3 for c in codes):
        raise DivertError(f"country codes {text!r} must be calling codes like 39,33,41")
    return ",".join(codes)


def parse_prefixes(text: str) -> str:
    prefixes = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.startswith("+") and p[1:].isdigit() for p in prefixes):
        raise DivertError(f"denied prefixes {text!r} must be E.164 prefixes like +39899,+44909")
    return ",".join(prefixes)


def store(connection: Connection, name: str, value: str) -> None:
    connection.execute(delete(settings).where(settings.c.name == name))
    if value:
        connection.execute(insert(settings).values(name=name, value=value))


def change(connection: Connection, allow_countries: str | None, deny_prefixes: str | None) -> None:
    """Set what is given: comma-separated lists, '' clears."""
    if allow_countries is None and deny_prefixes is None:
        raise DivertError("nothing to change: give --allow-countries or --deny-prefixes")
    if allow_countries is not None:
        store(connection, ALLOWED_COUNTRIES, parse_countries(allow_countries))
    if deny_prefixes is not None:
        store(connection, DENIED_PREFIXES, parse_prefixes(deny_prefixes))
