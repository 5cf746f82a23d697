"""`divert policy`: where forwards may go."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from divert.commands.context import in_transaction

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from divert.commands import Groups


def register(groups: Groups) -> None:
    actions = groups.add_parser("policy", help="where forwards may go").add_subparsers(
        metavar="ACTION"
    )
    actions.add_parser("show", help="show the destination policy").set_defaults(
        handler=in_transaction(policy_show)
    )
    change = actions.add_parser("set", help="change the destination policy")
    change.add_argument("--allow-countries", help="calling codes, e.g. 39,33 ('' allows all)")
    change.add_argument("--deny-prefixes", help="E.164 prefixes, e.g. +39899,+39892 ('' clears)")
    change.set_defaults(handler=in_transaction(policy_set))


def policy_show(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import policy

    current = policy.load_policy(connection)
    countries = ",".join(str(c) for c in sorted(current.allowed_countries)) or "all"
    print(f"allowed countries: {countries}")
    print(f"denied prefixes: {','.join(current.denied_prefixes) or 'none'}")
    print("premium-rate and shared-cost numbers: always denied")


def policy_set(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import policy

    policy.change(connection, args.allow_countries, args.deny_prefixes)
    policy_show(connection, args)
