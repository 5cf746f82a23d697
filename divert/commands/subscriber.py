"""`divert subscriber`: hosted SIP accounts."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from divert.commands.context import in_transaction
from divert.commands.output import table

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from divert.commands import Groups


def register(groups: Groups) -> None:
    actions = groups.add_parser("subscriber", help="hosted SIP accounts").add_subparsers(
        metavar="ACTION"
    )
    add = actions.add_parser("add", help="add a subscriber")
    add.add_argument("username")
    add.add_argument("--tenant", required=True, help="the tenant, by name")
    add.add_argument("--password", required=True, help="'-' reads it from standard input")
    add.add_argument("--extension", help="2 or 3 digits, unique in the tenant")
    add.add_argument("--name", default="", help="display name")
    add.set_defaults(handler=in_transaction(subscriber_add))
    listing = actions.add_parser("list", help="list subscribers")
    listing.add_argument("--tenant", help="only this tenant's")
    listing.set_defaults(handler=in_transaction(subscriber_list))
    change = actions.add_parser("set", help="change a subscriber")
    change.add_argument("username")
    change.add_argument("--tenant", required=True, help="the tenant, by name")
    change.add_argument(
        "--caller-id",
        help="which of its numbers its calls to the carriers show ('' : the first given)",
    )
    presence = change.add_mutually_exclusive_group()
    presence.add_argument(
        "--away",
        dest="away",
        action="store_const",
        const=True,
        help="not present: its not-present forwards apply (as *78 from the phone)",
    )
    presence.add_argument(
        "--present",
        dest="away",
        action="store_const",
        const=False,
        help="present again: it rings as usual (as *79)",
    )
    change.set_defaults(handler=in_transaction(subscriber_set))
    remove = actions.add_parser("delete", help="delete a subscriber and its forwards")
    remove.add_argument("username")
    remove.add_argument("--tenant", required=True, help="the tenant, by name")
    remove.set_defaults(handler=in_transaction(subscriber_delete))


def subscriber_add(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import subscribers

    password = sys.stdin.readline().rstrip("\n") if args.password == "-" else args.password
    subscribers.add(connection, args.tenant, args.username, password, args.extension, args.name)
    print(f"subscriber {args.username} added to tenant {args.tenant}")


def subscriber_list(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import subscribers

    asserted = subscribers.caller_ids(connection, args.tenant)
    table(
        ("TENANT", "USERNAME", "EXTENSION", "NAME", "CALLER ID", "PRESENCE"),
        [
            (
                s.tenant,
                s.username,
                s.extension or "-",
                s.display_name,
                asserted.get(s.id, "-"),
                "away" if s.away else "present",
            )
            for s in subscribers.listing(connection, args.tenant)
        ],
    )


def subscriber_set(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import subscribers

    chosen = subscribers.change(connection, args.tenant, args.username, args.caller_id, args.away)
    if args.caller_id is not None:
        shown = chosen or "the number it was given first"
        print(f"subscriber {args.username}: calls to the carriers show {shown}")
    if args.away is not None:
        print(f"subscriber {args.username}: {'away' if args.away else 'present'}")


def subscriber_delete(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import subscribers

    subscribers.remove(connection, args.tenant, args.username)
    print(f"subscriber {args.username} deleted")
