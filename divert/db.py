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


def absolute_portal_url(url: str) -> str:
    """`url` with a relative SQLite path made absolute, for a process that
    runs in another folder (Kamailio's run in "/")."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return url
    absolute = parsed.set(database=str(Path(parsed.database).resolve()))
    return absolute.render_as_string(hide_password=False)


CONNECT_TIMEOUT = 5  # seconds; a URL's own connect_timeout wins
# a portal that vanishes mid-session (a half-open connection) is noticed in
# about a minute rather than never
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def open_portal(url: str, limit: int | None = None, create: bool = True) -> Engine:
    """An engine for `url`.  `limit` (seconds) bounds how long one connect or
    one statement may wait, for callers that answer someone meanwhile (a
    feature code in Kamailio's async workers): PostgreSQL's connect and
    statement timeouts, SQLite's busy timeout.  Without `create`, a SQLite
    portal file that does not exist is an OperationalError on connect
    (like an unreachable server), never an empty file made by mistake."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DivertError(f"portal URL {url!r} is not a database URL") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        raise DivertError(f"portal URL {url!r}: only postgresql:// and sqlite:// are supported")
    sqlite_file = (
        parsed.database
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
        else None
    )
    if sqlite_file is not None and create:
        Path(sqlite_file).parent.mkdir(parents=True, exist_ok=True)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # an unreachable portal must fail in seconds, not after TCP's two
        # minutes: `divert run` starts from its store meanwhile
        connect_args = {"connect_timeout": limit or CONNECT_TIMEOUT, **KEEPALIVES}
        if limit is not None:
            connect_args["options"] = f"-c statement_timeout={limit * 1000}"
            # a peer that vanished mid-commit: the kernel gives up in `limit` s
            connect_args["tcp_user_timeout"] = limit * 1000
        connect_args = {k: v for k, v in connect_args.items() if k not in parsed.query}
    engine = create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        busy_ms = (limit or 5) * 1000
        event.listen(engine, "connect", lambda connection, _: _sqlite_pragmas(connection, busy_ms))
        if sqlite_file is not None and not create:
            event.listen(engine, "do_connect", lambda *_: _must_exist(sqlite_file))
    return engine


def _must_exist(path: str) -> None:
    if not Path(path).is_file():
        raise sqlite3.OperationalError(
            f"no portal file {path}; make it with 'divert --portal sqlite:///{path} db upgrade'"
        )


def _sqlite_pragmas(dbapi_connection: Any, busy_ms: int) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_ms)}")
        cursor.close()
