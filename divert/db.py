"""Opening the portal database from a URL.

PostgreSQL URLs without a driver use psycopg 3; SQLite files get their
folder created and foreign keys switched on (SQLite leaves them off per
connection).  The caller owns the engine: make one per process, never carry
one across a fork.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from divert.errors import DivertError

DEFAULT_PORTAL = "sqlite:///var/portal.db"


def portal_url(explicit: str | None) -> str:
    """The portal URL: --portal, else $DIVERT_PORTAL, else the embedded file."""
    return explicit or os.environ.get("DIVERT_PORTAL") or DEFAULT_PORTAL


CONNECT_TIMEOUT = 5  # seconds; a URL's own connect_timeout wins
# a portal that vanishes mid-session (a half-open connection) is noticed in
# about a minute rather than never
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def open_portal(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DivertError(f"portal URL {url!r} is not a database URL") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise DivertError(f"portal URL {url!r}: only postgresql:// and sqlite:// are supported")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # an unreachable portal must fail in seconds, not after TCP's two
        # minutes: `divert run` starts from its store meanwhile
        connect_args = {"connect_timeout": CONNECT_TIMEOUT, **KEEPALIVES}
        connect_args = {k: v for k, v in connect_args.items() if k not in parsed.query}
    engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 5000")
        cursor.close()
