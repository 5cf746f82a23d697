"""Initial portal schema: tenants, trunks, subscribers, numbers, forwards,
schedules, settings and the change journal with its triggers.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

from divert.schema import journal

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", Id, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("region", sa.String(2), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False, server_default="UTC"),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("operator", sa.String(32)),
        sa.Column("voicemail_uri", sa.String(255)),
        sa.PrimaryKeyConstraint("id", name="pk_tenants"),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
        sa.UniqueConstraint("domain", name="uq_tenants_domain"),
    )
    op.create_table(
        "trunks",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant_id", Id, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("addresses", sa.Text, nullable=False),
        sa.Column("emergency", sa.String(20)),
        sa.Column("diversion_style", sa.String(16), nullable=False, server_default="diversion"),
        sa.PrimaryKeyConstraint("id", name="pk_trunks"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_trunks_tenant_id", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("tenant_id", "name", name="uq_trunks_tenant_name"),
        sa.CheckConstraint(
            _in("diversion_style", ("diversion", "history-info", "both")), name="ck_trunks_style"
        ),
    )
    op.create_table(
        "subscribers",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant_id", Id, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("ha1", sa.String(32), nullable=False),
        sa.Column("extension", sa.String(3)),
        sa.Column("display_name", sa.String(64), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_subscribers"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_subscribers_tenant_id", ondelete="RESTRICT"
        ),
        sa.UniqueConstraint("tenant_id", "username", name="uq_subscribers_tenant_username"),
        sa.UniqueConstraint("tenant_id", "extension", name="uq_subscribers_tenant_extension"),
    )
    op.create_table(
        "numbers",
        sa.Column("id", Id, primary_key=True),
        sa.Column("e164", sa.String(20), nullable=False),
        sa.Column("tenant_id", Id, nullable=False),
        sa.Column("trunk_id", Id),
        sa.Column("subscriber_id", Id),
        sa.PrimaryKeyConstraint("id", name="pk_numbers"),
        sa.UniqueConstraint("e164", name="uq_numbers_e164"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_numbers_tenant_id", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["trunk_id"], ["trunks.id"], name="fk_numbers_trunk_id", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name="fk_numbers_subscriber_id",
            ondelete="RESTRICT",
        ),
        sa.CheckConstraint(
            "(trunk_id IS NULL) <> (subscriber_id IS NULL)", name="ck_numbers_one_owner"
        ),
    )
    op.create_table(
        "forwards",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant_id", Id, nullable=False),
        sa.Column("number_id", Id),
        sa.Column("subscriber_id", Id),
        sa.Column("condition", sa.String(16), nullable=False),
        sa.Column("callers", sa.String(8), nullable=False, server_default="any"),
        sa.Column("dest_kind", sa.String(16), nullable=False),
        sa.Column("dest_value", sa.String(32), nullable=False, server_default=""),
        sa.Column("ring_timeout", sa.Integer),
        sa.Column("position", sa.Integer, nullable=False, server_default="0"),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("modes", sa.String(64)),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name="pk_forwards"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_forwards_tenant_id", ondelete="RESTRICT"
        ),
        sa.ForeignKeyConstraint(
            ["number_id"], ["numbers.id"], name="fk_forwards_number_id", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name="fk_forwards_subscriber_id",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "(number_id IS NULL) <> (subscriber_id IS NULL)", name="ck_forwards_one_owner"
        ),
        sa.CheckConstraint(
            _in("condition", ("always", "busy", "no-answer", "not-registered", "trunk-down")),
            name="ck_forwards_condition",
        ),
        sa.CheckConstraint(
            _in("callers", ("any", "internal", "external")), name="ck_forwards_callers"
        ),
        sa.CheckConstraint(
            _in("dest_kind", ("number", "extension", "voicemail", "operator", "reject")),
            name="ck_forwards_dest_kind",
        ),
        sa.CheckConstraint(
            "ring_timeout IS NULL OR ring_timeout BETWEEN 1 AND 600",
            name="ck_forwards_ring_timeout",
        ),
    )
    op.create_table(
        "schedules",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tenant_id", Id, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("weekdays", sa.String(27), nullable=False),
        sa.Column("starts", sa.String(5), nullable=False),
        sa.Column("ends", sa.String(5), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_schedules"),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_schedules_tenant_id", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "settings",
        sa.Column("id", Id, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_settings"),
        sa.UniqueConstraint("name", name="uq_settings_name"),
    )
    op.create_table(
        "change_journal",
        sa.Column("id", Id, primary_key=True),
        sa.Column("tx", sa.BigInteger),
        sa.Column("table_name", sa.String(32), nullable=False),
        sa.Column("op", sa.String(1), nullable=False),
        sa.Column("row_id", sa.BigInteger, nullable=False),
        sa.Column("old_row", sa.Text),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("id", name="pk_change_journal"),
    )
    journal.install(op.get_bind())


def downgrade() -> None:
    bind = op.get_bind()
    for statement in journal.drop_statements(bind.dialect.name):
        bind.exec_driver_sql(statement)
    for table in (
        "change_journal",
        "settings",
        "schedules",
        "forwards",
        "numbers",
        "subscribers",
        "trunks",
        "tenants",
    ):
        op.drop_table(table)
