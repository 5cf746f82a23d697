"""`divert db upgrade`: create or upgrade the portal's schema."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from divert.commands import Groups
    from divert.commands.context import Context


def register(groups: Groups) -> None:
    actions = groups.add_parser("db", help="portal schema").add_subparsers(metavar="ACTION")
    actions.add_parser("upgrade", help="create or upgrade the portal schema").set_defaults(
        handler=upgrade, creates_portal=True
    )


def upgrade(context: Context, args: argparse.Namespace) -> int:
    """Migrations manage their own transaction."""
    from divert.schema import migrate

    migrate.upgrade(context.engine)
    print(f"portal {context.shown} is at schema {migrate.head_revision()}")
    return 0
