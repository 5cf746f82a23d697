"""The change journal: the database records every change itself.

Triggers on every journaled table append one row to `change_journal` per
changed row, with the row's old content (JSON) for updates and deletes, so
the sync worker can tell which keys a deleted or re-pointed row used to
affect.  Writing the journal in the database, not in the application, means
a change made with plain SQL is followed just like one made with `divert`.

PostgreSQL also records the writing transaction (`tx`) and raises a NOTIFY
on the ``divert_changes`` channel.  Identical notifications inside one
transaction are folded into one by PostgreSQL, so listeners wake once per
transaction, not once per row.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect

from divert.schema.tables import JOURNALED

NOTIFY_CHANNEL = "divert_changes"

_PG_FUNCTION = f"""
CREATE OR REPLACE FUNCTION divert_journal() RETURNS trigger AS $$
BEGIN
    INSERT INTO change_journal (tx, table_name, op, row_id, old_row)
    VALUES (
        txid_current(),
        TG_TABLE_NAME,
        left(TG_OP, 1),
        CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END,
        CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD)::text END
    );
    PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
    RETURN NULL;
END
$$ LANGUAGE plpgsql
"""


def install(connection: Connection) -> None:
    """Install (or reinstall) the journal triggers on the connected database.

    SQLite triggers list the columns of each table as they are now, so a
    migration that changes a journaled table calls this again afterwards.
    """
    for statement in drop_statements(connection.dialect.name):
        connection.exec_driver_sql(statement)
    for statement in create_statements(connection):
        connection.exec_driver_sql(statement)


def create_statements(connection: Connection) -> list[str]:
    """DDL that installs the journal triggers (PostgreSQL or SQLite)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return [_PG_FUNCTION] + [
            f"CREATE TRIGGER {table.name}_journal AFTER INSERT OR UPDATE OR DELETE "
            f"ON {table.name} FOR EACH ROW EXECUTE FUNCTION divert_journal()"
            for table in JOURNALED
        ]
    if dialect == "sqlite":
        inspector = inspect(connection)
        return [
            statement
            for table in JOURNALED
            for statement in _sqlite_triggers(
                table.name, [c["name"] for c in inspector.get_columns(table.name)]
            )
        ]
    raise ValueError(f"no change journal for database dialect {dialect!r}")


def drop_statements(dialect: str) -> list[str]:
    """DDL that removes what `create_statements` installed."""
    if dialect == "postgresql":
        return [f"DROP TRIGGER IF EXISTS {t.name}_journal ON {t.name}" for t in JOURNALED] + [
            "DROP FUNCTION IF EXISTS divert_journal()"
        ]
    return [
        f"DROP TRIGGER IF EXISTS {t.name}_journal_{op}"
        for t in JOURNALED
        for op in ("insert", "update", "delete")
    ]


def _sqlite_triggers(name: str, columns: list[str]) -> list[str]:
    old_row = "json_object(" + ", ".join(f"'{c}', OLD.{c}" for c in columns) + ")"
    insert = "INSERT INTO change_journal (table_name, op, row_id, old_row) VALUES"
    return [
        f"CREATE TRIGGER {name}_journal_insert AFTER INSERT ON {name} BEGIN "
        f"{insert} ('{name}', 'I', NEW.id, NULL); END",
        f"CREATE TRIGGER {name}_journal_update AFTER UPDATE ON {name} BEGIN "
        f"{insert} ('{name}', 'U', NEW.id, {old_row}); END",
        f"CREATE TRIGGER {name}_journal_delete AFTER DELETE ON {name} BEGIN "
        f"{insert} ('{name}', 'D', OLD.id, {old_row}); END",
    ]
