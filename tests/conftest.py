"""Shared fixtures: portals on SQLite and on the machine's PostgreSQL.

PostgreSQL tests need the cluster `make test` starts (scripts/ensure-postgres)
and the role it creates; point DIVERT_TEST_PG elsewhere to use another
server.  Each test gets its own database, cloned from a template migrated
once per run, and dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from divert.db import open_portal
from divert.schema.migrate import upgrade

PG_ADMIN_URL = os.environ.get(
    "DIVERT_TEST_PG", "postgresql+psycopg://divert:divert@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Name of a migrated database that per-test databases are cloned from."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # pragma: no cover - environment problem
        pytest.fail(
            f"PostgreSQL at {PG_ADMIN_URL} is not usable ({type(error).__name__}); "
            "run 'make test' or scripts/ensure-postgres",
            pytrace=False,
        )
    name = f"divert_tpl_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = open_portal(_url_for(name))
    upgrade(engine)
    engine.dispose()
    yield name
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextlib.contextmanager
def database_from(template: str, prefix: str = "divert_t") -> Iterator[str]:
    """URL of a new database cloned from `template`, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield _url_for(name)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL portal for this test only."""
    with database_from(pg_template) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh, migrated SQLite portal for this test only."""
    url = f"sqlite:///{tmp_path / 'portal.db'}"
    engine = open_portal(url)
    upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def portal_url(request: pytest.FixtureRequest) -> str:
    """A fresh migrated portal; tests using it run on both databases."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def portal(portal_url: str) -> Iterator[Engine]:
    engine = open_portal(portal_url)
    yield engine
    engine.dispose()


def _url_for(database: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def portal_reachable(url: str, reachable: bool) -> None:
    """Take a per-test PostgreSQL portal away (every session cut, no new
    ones), or give it back: an outage as the node sees it."""
    database = make_url(url).database
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        allow = "true" if reachable else "false"
        connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {allow}'))
        if not reachable:
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            )
    admin.dispose()
