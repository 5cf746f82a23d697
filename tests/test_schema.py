"""The portal schema: migrations on both databases and the change journal."""

from __future__ import annotations

import json
import select as io_select

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.engine import make_url

from divert.db import open_portal
from divert.schema.journal import NOTIFY_CHANNEL
from divert.schema.migrate import current_revision, head_revision, upgrade
from divert.schema.tables import change_journal, metadata, tenants


def test_migrations_reach_head(portal: Engine):
    assert current_revision(portal) == head_revision()


def test_migrations_create_exactly_the_declared_tables(portal: Engine):
    with portal.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_upgrade_twice_is_harmless(portal: Engine):
    upgrade(portal)
    assert current_revision(portal) == head_revision()


def _journal(engine: Engine) -> list[tuple[str, str, int, dict | None]]:
    with engine.connect() as connection:
        rows = connection.execute(select(change_journal).order_by(change_journal.c.id)).all()
    return [
        (r.table_name, r.op, r.row_id, json.loads(r.old_row) if r.old_row else None) for r in rows
    ]


def test_journal_records_insert_update_delete_with_the_old_row(portal: Engine):
    with portal.begin() as connection:
        tenant_id = connection.execute(
            insert(tenants).values(name="acme", region="IT", domain="acme")
        ).inserted_primary_key[0]
    with portal.begin() as connection:
        connection.execute(update(tenants).where(tenants.c.id == tenant_id).values(region="FR"))
    with portal.begin() as connection:
        connection.execute(text("DELETE FROM tenants"))
    entries = _journal(portal)
    assert [(t, op, row) for t, op, row, _ in entries] == [
        ("tenants", "I", tenant_id),
        ("tenants", "U", tenant_id),
        ("tenants", "D", tenant_id),
    ]
    assert entries[0][3] is None
    assert entries[1][3]["region"] == "IT"
    assert entries[2][3]["region"] == "FR" and entries[2][3]["name"] == "acme"


def test_rolled_back_change_leaves_no_journal_row(portal: Engine):
    with pytest.raises(RuntimeError), portal.begin() as connection:
        connection.execute(insert(tenants).values(name="acme", region="IT", domain="acme"))
        raise RuntimeError("abort")
    assert _journal(portal) == []


@pytest.mark.postgres
def test_postgres_journal_records_the_transaction_and_notifies_once(pg_url: str):
    engine = open_portal(pg_url)
    dsn = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        with engine.begin() as connection:
            for index in range(5):
                connection.execute(
                    insert(tenants).values(name=f"t{index}", region="IT", domain=f"t{index}")
                )
        ready, _, _ = io_select.select([listener.fileno()], [], [], 5.0)
        assert ready, "no notification within 5 s"
        notifications = list(listener.notifies(timeout=0.5, stop_after=10))
    assert len(notifications) == 1
    assert notifications[0].channel == NOTIFY_CHANNEL
    with engine.connect() as connection:
        txs = set(connection.scalars(select(change_journal.c.tx)))
    assert len(txs) == 1 and None not in txs
    engine.dispose()


def test_upgrade_of_a_populated_portal_keeps_its_rows_and_journal(tmp_path):
    engine = open_portal(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0003")
    with engine.begin() as connection:
        connection.execute(
            text("INSERT INTO tenants (name, region, domain) VALUES ('a', 'IT', 'a')")
        )
        connection.execute(
            text(
                "INSERT INTO trunks (tenant_id, name, addresses) "
                "VALUES (1, 'pbx', '127.0.0.2:5060')"
            )
        )
    upgrade(engine)
    with engine.begin() as connection:
        assert connection.execute(text("SELECT code_profile FROM tenants")).scalar() == "both"
        connection.execute(text("UPDATE tenants SET code_profile = 'vpbx'"))
    assert _journal(engine)[-1][3]["code_profile"] == "both"
    engine.dispose()
