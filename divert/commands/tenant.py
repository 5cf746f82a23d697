"""`divert tenant`: customers."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from divert.commands.context import in_transaction
from divert.commands.output import table

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from divert.commands import Groups


def register(groups: Groups) -> None:
    actions = groups.add_parser("tenant", help="customers").add_subparsers(metavar="ACTION")
    add = actions.add_parser("add", help="add a tenant")
    add.add_argument("name")
    add.add_argument(
        "--region", required=True, help="ISO country code for national numbers, e.g. IT"
    )
    add.add_argument("--timezone", default="UTC", help="IANA zone of its schedules")
    add.add_argument("--domain", help="SIP domain and digest realm (default: the name)")
    add.add_argument("--voicemail-uri", help="e.g. sip:{mailbox}@vm.example.net")
    add.add_argument(
        "--code-profile", default="both", help="phone codes: vpbx (*72...), carrier (*1/*2), both"
    )
    add.set_defaults(handler=in_transaction(tenant_add))
    change = actions.add_parser("set", help="change a tenant")
    change.add_argument("name")
    change.add_argument("--region", help="ISO 3166 code that reads national numbers")
    change.add_argument("--timezone", help="IANA zone of its schedules, e.g. Europe/Rome")
    change.add_argument(
        "--operator", help="return-to-operator destination: extension or number ('' clears)"
    )
    change.add_argument("--voicemail-uri", help="'' clears")
    change.add_argument("--code-profile", help="vpbx, carrier or both")
    change.set_defaults(handler=in_transaction(tenant_set))
    actions.add_parser("list", help="list tenants").set_defaults(
        handler=in_transaction(tenant_list)
    )
    remove = actions.add_parser("delete", help="delete an unused tenant")
    remove.add_argument("name")
    remove.set_defaults(handler=in_transaction(tenant_delete))


def tenant_add(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import tenants

    tenants.add(
        connection,
        args.name,
        args.region,
        args.timezone,
        args.domain,
        args.voicemail_uri,
        args.code_profile,
    )
    print(f"tenant {args.name} added")


def tenant_set(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import tenants

    tenants.change(
        connection,
        args.name,
        args.region,
        args.timezone,
        args.operator,
        args.voicemail_uri,
        args.code_profile,
    )
    print(f"tenant {args.name} changed")


def tenant_list(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import tenants

    table(
        ("NAME", "REGION", "TIMEZONE", "DOMAIN", "OPERATOR", "VOICEMAIL", "CODES"),
        [
            (
                t.name,
                t.region,
                t.timezone,
                t.domain,
                t.operator or "-",
                t.voicemail_uri or "-",
                t.code_profile,
            )
            for t in tenants.listing(connection)
        ],
    )


def tenant_delete(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import tenants

    tenants.remove(connection, args.name)
    print(f"tenant {args.name} deleted")
