"""API tokens: who may use the portal API, and how much of it.

A token is 32 random bytes (``dvt_`` and 43 URL-safe characters), shown
once when it is made.  The portal keeps only its SHA-256: a token has 256
bits of entropy, so a fast hash is safe (nobody can guess one to match a
hash), and checking a request costs one indexed lookup.  An operator token
(no tenant) sees every tenant; a tenant token sees its own tenant only.
A revoked token stays listed, with when it was revoked, and is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select, update

from divert.errors import DivertError, NotFound
from divert.portal import find
from divert.portal.tenants import check_name
from divert.schema.tables import api_tokens, tenants

PREFIX = "dvt_"
MAX_LENGTH = 128  # longer is no token of ours: refused before it is hashed


@dataclass(frozen=True, slots=True)
class Bearer:
    """What a valid token may see: every tenant (tenant_id None) or one."""

    token_id: int
    tenant_id: int | None
    tenant: str | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add(connection: Connection, tenant_name: str | None, label: str = "") -> tuple[int, str]:
    """A new token for `tenant_name` (None: an operator's); returns its id
    and the token, which the portal does not keep."""
    tenant_id = None if tenant_name is None else int(find.tenant(connection, tenant_name).id)
    if label:
        check_name("token", label)
    token = PREFIX + secrets.token_urlsafe(32)
    values = {"tenant_id": tenant_id, "label": label, "token_hash": digest(token)}
    return find.inserted_id(connection.execute(insert(api_tokens).values(**values))), token


def listing(connection: Connection) -> Sequence[find.AnyRow]:
    return connection.execute(
        select(api_tokens, tenants.c.name.label("tenant"))
        .outerjoin(tenants, tenants.c.id == api_tokens.c.tenant_id)
        .order_by(api_tokens.c.id)
    ).all()


def revoke(connection: Connection, token_id: int) -> None:
    row = connection.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()
    if row is None:
        raise NotFound(f"unknown token {token_id}; see 'divert token list'")
    if row.revoked_at is not None:
        raise DivertError(f"token {token_id} is already revoked")
    connection.execute(
        update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=func.now())
    )


def bearer(connection: Connection, token: str) -> Bearer | None:
    """The holder of `token`, or None for a token that is unknown or revoked."""
    if not token.startswith(PREFIX) or len(token) > MAX_LENGTH:
        return None
    row = connection.execute(
        select(api_tokens.c.id, api_tokens.c.tenant_id, tenants.c.name)
        .outerjoin(tenants, tenants.c.id == api_tokens.c.tenant_id)
        .where(api_tokens.c.token_hash == digest(token), api_tokens.c.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    return Bearer(int(row.id), None if row.tenant_id is None else int(row.tenant_id), row.name)
