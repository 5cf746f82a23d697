"""Per-tenant feature-code profile: which phone codes the tenant's
subscribers dial (``vpbx`` = seed 002's *72/*73/*90/*91/*52/*53,
``carrier`` = seed 000's *1/*2, ``both``).

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

from divert.schema import journal

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: SQLite's batch mode would copy the
    # table, which foreign keys forbid on a populated portal.
    op.add_column(
        "tenants", sa.Column("code_profile", sa.String(8), nullable=False, server_default="both")
    )
    if op.get_bind().dialect.name == "postgresql":
        op.create_check_constraint(
            "ck_tenants_code_profile", "tenants", "code_profile IN ('both', 'vpbx', 'carrier')"
        )
    journal.install(op.get_bind())  # SQLite triggers list the tenants' columns


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("ck_tenants_code_profile", "tenants", type_="check")
    op.drop_column("tenants", "code_profile")
    journal.install(op.get_bind())
