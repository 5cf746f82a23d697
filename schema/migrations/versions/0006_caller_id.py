"""A subscriber's caller ID: which of its numbers its calls to the carriers
assert (P-Asserted-Identity).  NULL: the number it was given first.

Revision ID: 0006
"""

import sqlalchemy as sa
from alembic import op

from divert.schema import journal

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscribers", sa.Column("caller_id", sa.String(20)))
    journal.install(op.get_bind())  # SQLite triggers list the subscribers' columns


def downgrade() -> None:
    op.drop_column("subscribers", "caller_id")
    journal.install(op.get_bind())
