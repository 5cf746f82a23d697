"""Trunk addresses are unique across tenants from now on (`divert trunk add`
refuses a taken one).  A portal that already has an address on two trunks
keeps its rows; this migration names each such address on standard error,
and the sync worker keeps the address with the older trunk (the lower id)
and lists the other's claim in `divert sync status`.

Revision ID: 0008
"""

import sys

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    rows = op.get_bind().execute(
        sa.text(
            "SELECT trunks.id, trunks.name, trunks.addresses, tenants.name FROM trunks "
            "JOIN tenants ON tenants.id = trunks.tenant_id ORDER BY trunks.id"
        )
    )
    first: dict[str, str] = {}
    for _, name, addresses, tenant in rows:
        for address in str(addresses).split(","):
            owner = f"trunk {name} of tenant {tenant}"
            if address in first:
                print(
                    f"divert: warning: address {address} is on {first[address]} and on "
                    f"{owner}; calls from it go to the first; give the other a different "
                    "address ('divert trunk delete', then 'divert trunk add')",
                    file=sys.stderr,
                )
            else:
                first[address] = owner


def downgrade() -> None:
    pass
