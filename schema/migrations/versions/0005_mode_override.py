"""A tenant's time-mode override, set from phones (*20 until a time, *11
until changed again): NULL mode means the schedule decides, '' means no mode.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

from divert.schema import journal

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("mode_override", sa.String(16)))
    op.add_column("tenants", sa.Column("mode_override_until", sa.DateTime(timezone=True)))
    journal.install(op.get_bind())


def downgrade() -> None:
    op.drop_column("tenants", "mode_override_until")
    op.drop_column("tenants", "mode_override")
    journal.install(op.get_bind())
