"""`divert number`: DIDs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from divert.commands.context import in_transaction
from divert.commands.output import table

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from divert.commands import Groups


def register(groups: Groups) -> None:
    actions = groups.add_parser("number", help="DIDs").add_subparsers(metavar="ACTION")
    add = actions.add_parser("add", help="add a number")
    add.add_argument("number")
    add.add_argument("--tenant", required=True, help="the tenant, by name")
    owner = add.add_mutually_exclusive_group(required=True)
    owner.add_argument("--trunk", help="the PBX trunk that answers it")
    owner.add_argument("--subscriber", help="the subscriber whose phones answer it")
    add.set_defaults(handler=in_transaction(number_add))
    listing = actions.add_parser("list", help="list numbers")
    listing.add_argument("--tenant", help="only this tenant's")
    listing.set_defaults(handler=in_transaction(number_list))
    remove = actions.add_parser("delete", help="delete a number and its forwards")
    remove.add_argument("number")
    remove.add_argument("--tenant", help="to read a national number")
    remove.set_defaults(handler=in_transaction(number_delete))


def number_add(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import numbers

    e164 = numbers.add(connection, args.tenant, args.number, args.trunk, args.subscriber)
    print(f"number {e164} added to tenant {args.tenant}")


def number_list(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import numbers

    table(
        ("NUMBER", "TENANT", "OWNER"),
        [
            (n.e164, n.tenant, f"trunk {n.trunk}" if n.trunk else f"subscriber {n.subscriber}")
            for n in numbers.listing(connection, args.tenant)
        ],
    )


def number_delete(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import numbers

    e164, count = numbers.remove(connection, args.number, args.tenant)
    print(f"number {e164} deleted with {count} forward(s)")
