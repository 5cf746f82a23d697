"""`divert api`: the portal API and the self-care page (see divert.api)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from divert.commands import Groups
    from divert.commands.context import Context


def register(groups: Groups) -> None:
    api = groups.add_parser("api", help="serve the portal API and the self-care page, until Ctrl-C")
    api.add_argument("--listen", default="127.0.0.1:8080", help="HTTP address, IPv4:PORT")
    api.set_defaults(handler=api_serve)


def api_serve(context: Context, args: argparse.Namespace) -> int:
    from divert.api.server import serve
    from divert.node import parse_listen

    host, port = parse_listen(args.listen)
    context.require_schema()
    return serve(context.engine, host, port, context.shown)
