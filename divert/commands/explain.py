"""`divert explain`: what a call would do, without placing it."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from divert.commands.context import in_transaction
from divert.errors import DivertError
from divert.kemi.core.decide import Limits
from divert.kemi.core.model import Outcome

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from divert.commands import Groups
    from divert.explain import After


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

    if args.max_diversions < 0:
        raise DivertError("--max-diversions must be 0 or more")
    at = _parse_time(connection, args.at, args.number) if args.at else datetime.now(UTC)
    result = explaining.explain(
        connection,
        args.number,
        args.caller,
        [_after(text) for text in args.after],
        at,
        Limits(max_diversions=args.max_diversions),
    )
    if args.json:
        print(json.dumps(explaining.as_json(result), indent=2))
    else:
        print(explaining.as_text(result))


def _after(text: str) -> After:
    """An --after item: an outcome, or redirect:NUMBER (international form)."""
    from divert import explain as explaining
    from divert.kemi.signalling import redirect_targets

    kind, colon, number = text.partition(":")
    if kind == "redirect" and colon:
        # as the node reads a Contact: international form only
        read = redirect_targets(f"SIP/2.0 302 Moved\r\nContact: <tel:{number}>\r\n\r\n")
        if not read:
            raise DivertError(
                f"--after {text!r}: the node follows redirects to numbers in international "
                "form only (+39..., 0039...)"
            )
        return explaining.Redirect(read[0])
    try:
        return Outcome(text)
    except ValueError:
        choices = ", ".join(o.value for o in Outcome)
        raise DivertError(f"--after {text!r}: give one of {choices}, or redirect:NUMBER") from None


def _parse_time(connection: Connection, text: str, called: str) -> datetime:
    from divert.portal import find

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DivertError(f"--at {text!r} is not an ISO 8601 time, e.g. 2026-11-23T09:30") from None
    if moment.tzinfo is None:
        tenant = find.tenant_by_id(connection, find.number(connection, called).tenant_id)
        moment = moment.replace(tzinfo=ZoneInfo(str(tenant.timezone)))
    return moment
