"""`divert forward`: call forwards."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from divert.commands.context import in_transaction
from divert.commands.output import row_id, table
from divert.kemi.core.model import FORWARD_CONDITIONS, Scope

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from divert.commands import Groups


def register(groups: Groups) -> None:
    actions = groups.add_parser("forward", help="call forwards").add_subparsers(metavar="ACTION")
    listing = actions.add_parser("list", help="every active forward of every number")
    listing.add_argument("--tenant", help="only this tenant's")
    listing.set_defaults(handler=in_transaction(forward_list))
    add = actions.add_parser("add", help="add a forward to a number or a subscriber")
    add.add_argument("number", nargs="?", help="the number whose calls are forwarded")
    add.add_argument(
        "--subscriber", help="forward all of a subscriber's calls instead (needs --tenant)"
    )
    add.add_argument("--tenant", help="the tenant of --subscriber, or to read a national NUMBER")
    add.add_argument(
        "--when",
        required=True,
        choices=[c.value for c in FORWARD_CONDITIONS],
        help="the condition that makes the forward take the call",
    )
    add.add_argument(
        "--to",
        required=True,
        help="number, ext:NNN, voicemail, operator, reject or reject:CODE",
    )
    add.add_argument(
        "--callers",
        default="any",
        choices=[s.value for s in Scope],
        help="whose calls: the tenant's own subscribers (internal), others (external), any",
    )
    add.add_argument("--timeout", type=int, help="seconds to ring before a no-answer forward")
    add.add_argument("--until", help="ISO 8601 expiry (tenant time zone if none given)")
    add.add_argument("--modes", help="only in these time modes, e.g. night,holiday")
    add.set_defaults(handler=in_transaction(forward_add))
    change = actions.add_parser("set", help="change a forward's destination")
    change.add_argument("id", type=row_id, help="as listed")
    change.add_argument("--to", required=True, help="the new destination (as forward add --to)")
    change.add_argument("--timeout", type=int, help="seconds to ring before a no-answer forward")
    change.set_defaults(handler=in_transaction(forward_set))
    remove = actions.add_parser("delete", help="delete a forward")
    remove.add_argument("id", type=row_id, help="as listed")
    remove.set_defaults(handler=in_transaction(forward_delete))


def forward_list(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import forwards

    rows = forwards.listing(connection, args.tenant)
    table(
        ("ID", "TENANT", "OWNER", "WHEN", "CALLERS", "TO", "TIMEOUT", "ORDER", "UNTIL", "MODES"),
        [
            (
                str(f.id),
                f.tenant,
                f.e164 or f"subscriber {f.username}",
                when(f.condition, f.away),
                f.callers,
                forwards.destination_label(f.dest_kind, f.dest_value),
                f"{f.ring_timeout} s" if f.ring_timeout else "-",
                str(f.position + 1),
                local_time(f.expires_at, f.timezone) if f.expires_at else "-",
                f.modes or "any",
            )
            for f in rows
        ],
    )


def local_time(moment: datetime, zone: str) -> str:
    """A stored moment in the tenant's zone, the zone named."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # SQLite: UTC
    return f"{aware.astimezone(ZoneInfo(zone)):%Y-%m-%dT%H:%M} {zone}"


def when(condition: str, away: bool | None) -> str:
    """A forward's condition; a not-present one says whether it is in force."""
    if condition != "not-present":
        return condition
    return "not-present (away now)" if away else "not-present (present now)"


def forward_add(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import forwards

    owner = forwards.owner_of(connection, args.number, args.subscriber, args.tenant)
    forward_id, label = forwards.add(
        connection,
        owner,
        args.when,
        args.to,
        args.callers,
        args.timeout,
        args.until,
        modes=args.modes,
    )
    print(f"forward {forward_id} added: {owner.keys[0]} {args.when} -> {label}")


def forward_set(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import forwards

    label = forwards.change_destination(connection, args.id, args.to, args.timeout)
    print(f"forward {args.id} now goes to {label}")


def forward_delete(connection: Connection, args: argparse.Namespace) -> None:
    from divert.portal import forwards

    forwards.remove(connection, args.id)
    print(f"forward {args.id} deleted")
