"""Seed 004's "not present": a subscriber's presence, and the forward
condition ``not-present`` that applies while it is away.

Revision ID: 0007
"""

import sqlalchemy as sa
from alembic import op

from divert.schema import journal

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BEFORE = "'always', 'busy', 'no-answer', 'not-registered', 'trunk-down'"
AFTER = "'always', 'not-present', 'busy', 'no-answer', 'not-registered', 'trunk-down'"


def upgrade() -> None:
    # SQLite commits each DDL statement: every step can be run again after
    # a failure part way (the CHECK first: it is the one that can refuse)
    _conditions(BEFORE, AFTER)
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("subscribers")}
    if "away" not in columns:
        op.add_column(
            "subscribers",
            sa.Column("away", sa.Boolean, nullable=False, server_default=sa.false()),
        )
    journal.install(op.get_bind())  # SQLite triggers list the subscribers' columns


def downgrade() -> None:
    bind = op.get_bind()
    for statement in journal.drop_statements(bind.dialect.name):
        bind.exec_driver_sql(statement)  # SQLite's triggers name the column to drop
    op.execute("DELETE FROM forwards WHERE condition = 'not-present'")
    _conditions(AFTER, BEFORE)
    op.drop_column("subscribers", "away")
    journal.install(bind)


def _conditions(old: str, new: str) -> None:
    """Widen (or narrow) forwards' CHECK on `condition`.  PostgreSQL changes
    the constraint; SQLite cannot, short of copying the table (which its
    foreign keys forbid on a populated portal), so its schema text is
    edited in place, as SQLite's documentation allows for CHECK
    constraints that every row already satisfies."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_constraint("ck_forwards_condition", "forwards", type_="check")
        op.create_check_constraint("ck_forwards_condition", "forwards", f"condition IN ({new})")
        return
    (sql,) = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'forwards'"
    ).one()
    if f"condition IN ({new})" in sql:
        return  # done by an earlier run
    if f"condition IN ({old})" not in sql:
        raise RuntimeError("forwards' CHECK on condition is not the one this migration knows")
    (version,) = bind.exec_driver_sql("PRAGMA schema_version").one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'forwards'",
        (sql.replace(f"condition IN ({old})", f"condition IN ({new})"),),
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
