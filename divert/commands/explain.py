"""`divert explain`: what a call would do, without placing it."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from divert.commands.context import in_transaction
from divert.kemi.core.decide import Limits
from divert.kemi.core.model import Outcome

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from divert.commands import Groups


def register(groups: Groups) -> None:
    explain = groups.add_parser("explain", help="show what a call would do, without placing it")
    explain.add_argument("number", help="the called number")
    explain.add_argument("--from", dest="caller", help="caller: number, username or extension")
    explain.add_argument(
        "--after",
        nargs="+",
        action="extend",
        default=[],
        metavar="OUTCOME",
        help="how each ringing step ends, in order: "
        + ", ".join(o.value for o in Outcome)
        + ", or redirect:NUMBER (the phone or PBX answers 302 naming NUMBER)",
    )
    explain.add_argument(
        "--at", help="ISO 8601 time of the call (default: now; tenant time zone if none given)"
    )
    explain.add_argument(
        "--max-diversions",
        type=int,
        default=Limits().max_diversions,
        help="the diversion bound the node applies",
    )
    explain.add_argument("--json", action="store_true", help="print JSON")
    explain.set_defaults(handler=in_transaction(explain_call))


def explain_call(connection: Connection, args: argparse.Namespace) -> None:
    from divert import explain as explaining

    at = explaining.parse_time(connection, args.at, args.number) if args.at else datetime.now(UTC)
    result = explaining.explain(
        connection,
        args.number,
        args.caller,
        [explaining.parse_after(text) for text in args.after],
        at,
        explaining.limits(args.max_diversions),
    )
    if args.json:
        print(json.dumps(explaining.as_json(result), indent=2))
    else:
        print(explaining.as_text(result))
