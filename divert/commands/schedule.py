"""`divert schedule`: a tenant's time modes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from divert.commands.context import in_transaction
from divert.commands.output import row_id, table

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from divert.commands import Groups


def register(groups: Groups) -> None:
    actions = groups.add_parser("schedule", help="time modes").add_subparsers(metavar="ACTION")
    add = actions.add_parser("add", help="a time mode over weekdays and hours")
    add.add_argument("--tenant", required=True, help="the tenant, by name")
    add.add_argument("--mode", required=True, help="e.g. day, night, holiday")
    add.add_argument("--days", required=True, help="mon-fri, sat,sun or all")
    add.add_argument("--from", dest="starts", required=True, help="HH:MM, tenant time zone")
    add.add_argument("--to", dest="ends", required=True, help="HH:MM; before --from: next day")
    add.set_defaults(handler=in_transaction(schedule_add))
    listing = actions.add_parser("list", help="list schedules")
    listing.add_argument("--tenant", help="only this tenant's")
    listing.set_defaults(handler=in_transaction(schedule_list))
    remove = actions.add_parser("delete", help="delete a schedule entry")
    remove.add_argument("id", type=row_id, help="as listed")
    remove.set_defaults(handler=in_transaction(schedule_delete))


def schedule_add(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import schedules

    entry = schedules.add(connection, args.tenant, args.mode, args.days, args.starts, args.ends)
    print(f"schedule {entry} added: {args.mode} on {args.days} {args.starts}-{args.ends}")


def schedule_list(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import schedules

    table(
        ("ID", "TENANT", "MODE", "DAYS", "FROM", "TO"),
        [
            (str(e.id), e.tenant, e.mode, e.weekdays, e.starts, e.ends)
            for e in schedules.listing(connection, args.tenant)
        ],
    )


def schedule_delete(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import schedules

    schedules.remove(connection, args.id)
    print(f"schedule {args.id} deleted")
