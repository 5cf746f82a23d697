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
    engine = create_engine(parsed, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 5000")
        cursor.close()
