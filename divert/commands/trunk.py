"""`divert trunk`: customer PBX trunks."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from divert.commands.context import in_transaction
from divert.commands.output import table
from divert.kemi.core.model import DiversionStyle

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from divert.commands import Groups


def register(groups: Groups) -> None:
    actions = groups.add_parser("trunk", help="customer PBX trunks").add_subparsers(
        metavar="ACTION"
    )
    add = actions.add_parser("add", help="add a trunk")
    add.add_argument("name")
    add.add_argument("--tenant", required=True, help="the tenant, by name")
    add.add_argument("--address", action="append", default=[], help="IPv4[:port]; repeat for more")
    add.add_argument("--emergency", help="number to take the trunk's calls when it is down")
    add.add_argument(
        "--diversion-style",
        default="diversion",
        choices=[s.value for s in DiversionStyle],
        help="how the PBX wants diversions announced (RFC 5806 Diversion, RFC 7044 History-Info)",
    )
    add.set_defaults(handler=in_transaction(trunk_add))
    listing = actions.add_parser("list", help="list trunks")
    listing.add_argument("--tenant", help="only this tenant's")
    listing.set_defaults(handler=in_transaction(trunk_list))
    remove = actions.add_parser("delete", help="delete a trunk without numbers")
    remove.add_argument("name")
    remove.add_argument("--tenant", required=True, help="the tenant, by name")
    remove.set_defaults(handler=in_transaction(trunk_delete))


def trunk_add(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import trunks

    trunks.add(
        connection, args.tenant, args.name, args.address, args.emergency, args.diversion_style
    )
    print(f"trunk {args.name} added to tenant {args.tenant}")


def trunk_list(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import tenants, trunks

    rows = trunks.listing(connection, args.tenant)
    names = {t.id: t.name for t in tenants.listing(connection)}
    table(
        ("TENANT", "NAME", "ADDRESSES", "EMERGENCY", "DIVERSION"),
        [
            (names[t.tenant_id], t.name, t.addresses, t.emergency or "-", t.diversion_style)
            for t in rows
        ],
    )


def trunk_delete(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import trunks

    trunks.remove(connection, args.tenant, args.name)
    print(f"trunk {args.name} deleted")
