"""Index the owner columns that compiling a key reads by: a forward's number
or subscriber, a number's trunk, subscriber and tenant.  Without them every
incremental sync of a key scans the forwards table.

Revision ID: 0003
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_forwards_number_id", "forwards", "number_id"),
    ("ix_forwards_subscriber_id", "forwards", "subscriber_id"),
    ("ix_numbers_trunk_id", "numbers", "trunk_id"),
    ("ix_numbers_subscriber_id", "numbers", "subscriber_id"),
    ("ix_numbers_tenant_id", "numbers", "tenant_id"),
)


def upgrade() -> None:
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table)
