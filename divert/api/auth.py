"""Who is calling the API, and what they may see.

Three kinds of caller, each from the ``Authorization`` header:

- ``Bearer <operator token>``: every tenant, and the operator's resources
  (tenants, trunks, numbers, the destination policy);
- ``Bearer <tenant token>``: one tenant; another tenant's rows answer 404,
  exactly as rows that do not exist (nobody learns what others have);
- ``Basic <username@domain:password>``: a hosted subscriber, with its SIP
  credentials (checked against the HA1 the portal keeps): its own forwards
  and the chains of its own numbers, nothing else.

No header, an unknown or revoked token, or wrong credentials: 401.  A
token never appears in a log line or an error.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from sqlalchemy import Connection, select

from divert.errors import DivertError, NotFound
from divert.portal import find, tokens
from divert.portal.subscribers import ha1
from divert.schema.tables import numbers, subscribers, tenants


class Unauthorized(Exception):
    """No valid credentials: 401."""


class Forbidden(DivertError):
    """Valid credentials that do not reach this resource: 403."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: tenant_id None is the operator."""

    tenant_id: int | None
    tenant: str | None
    subscriber_id: int | None = None
    username: str | None = None

    @property
    def operator(self) -> bool:
        return self.tenant_id is None

    def require_operator(self) -> None:
        if not self.operator:
            raise Forbidden("this needs an operator token")

    def require_tenant_level(self) -> None:
        """Operator or tenant token: not a subscriber's sign-in."""
        if self.subscriber_id is not None:
            raise Forbidden("this needs a tenant or operator token")

    def tenant_row(self, connection: Connection, name: str) -> find.AnyRow:
        """Tenant `name`, if this caller may see it (else 404, like a tenant
        that does not exist)."""
        row = find.tenant(connection, name)
        if self.tenant_id is not None and int(row.id) != self.tenant_id:
            raise NotFound(f"unknown tenant {name!r}; see 'divert tenant list'")
        return row

    def tenant_name(self, given: str | None) -> str | None:
        """The tenant a request names, or the caller's own when it names none."""
        return given if given is not None else self.tenant

    def sees(self, tenant_id: int) -> bool:
        return self.tenant_id is None or self.tenant_id == tenant_id


def authenticate(connection: Connection, header: str | None) -> Caller:
    if not header:
        raise Unauthorized("no credentials: send 'Authorization: Bearer <token>'")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        holder = tokens.bearer(connection, value.strip())
        if holder is None:
            raise Unauthorized("unknown or revoked token")
        return Caller(holder.tenant_id, holder.tenant)
    if scheme.lower() == "basic":
        return _subscriber(connection, value.strip())
    raise Unauthorized("unsupported credentials: use Bearer or Basic")


def _subscriber(connection: Connection, encoded: str) -> Caller:
    try:
        text = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("malformed Basic credentials") from None
    login, colon, password = text.partition(":")
    username, at, domain = login.rpartition("@")
    if not colon or not at or not username:
        raise Unauthorized("sign in as username@domain with the SIP password")
    row = connection.execute(
        select(subscribers.c.id, subscribers.c.ha1, subscribers.c.tenant_id, tenants.c.name)
        .join(tenants, tenants.c.id == subscribers.c.tenant_id)
        .where(subscribers.c.username == username, tenants.c.domain == domain)
    ).first()
    expected = row.ha1 if row is not None else "0" * 32
    if not hmac.compare_digest(ha1(username, domain, password), str(expected)) or row is None:
        raise Unauthorized("wrong username, domain or password")
    return Caller(int(row.tenant_id), str(row.name), int(row.id), username)


def owned_numbers(connection: Connection, caller: Caller) -> set[str]:
    """The numbers a subscriber caller owns."""
    return set(
        connection.scalars(
            select(numbers.c.e164).where(numbers.c.subscriber_id == caller.subscriber_id)
        )
    )
