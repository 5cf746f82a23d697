"""`divert token`: API tokens (see divert.portal.tokens)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from divert.commands.context import in_transaction
from divert.commands.output import row_id, table

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from divert.commands import Groups


def register(groups: Groups) -> None:
    actions = groups.add_parser("token", help="API tokens").add_subparsers(metavar="ACTION")
    add = actions.add_parser("add", help="make a token: printed once, kept only hashed")
    whose = add.add_mutually_exclusive_group(required=True)
    whose.add_argument("--tenant", help="a token that sees this tenant only")
    whose.add_argument("--operator", action="store_true", help="a token that sees everything")
    add.add_argument("--label", default="", help="what it is for, e.g. crm or self-care")
    add.set_defaults(handler=in_transaction(token_add))
    listing = actions.add_parser("list", help="list tokens (never the tokens themselves)")
    listing.set_defaults(handler=in_transaction(token_list))
    revoke = actions.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("id", type=row_id, help="as listed")
    revoke.set_defaults(handler=in_transaction(token_revoke))


def token_add(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import tokens

    token_id, token = tokens.add(connection, None if args.operator else args.tenant, args.label)
    print(f"token {token_id} added for {'the operator' if args.operator else args.tenant}:")
    print(token)


def token_list(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import tokens

    table(
        ("ID", "SEES", "LABEL", "CREATED", "REVOKED"),
        [
            (
                str(t.id),
                f"tenant {t.tenant}" if t.tenant else "everything (operator)",
                t.label or "-",
                f"{t.created_at:%Y-%m-%d %H:%M}",
                f"{t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "-",
            )
            for t in tokens.listing(connection)
        ],
    )


def token_revoke(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import tokens

    tokens.revoke(connection, args.id)
    print(f"token {args.id} revoked")
