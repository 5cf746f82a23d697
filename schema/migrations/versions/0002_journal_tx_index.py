"""Index the change journal by transaction, which the sync worker follows
on PostgreSQL (see sync.journal).

Revision ID: 0002
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_change_journal_tx", "change_journal", ["tx"])


def downgrade() -> None:
    op.drop_index("ix_change_journal_tx", "change_journal")
