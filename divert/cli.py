"""`divert`: the operator's command-line tool.

Each command runs in one portal transaction: it either commits whole or,
on any error, writes nothing and prints one line on stderr (exit 2 for bad
input, 1 when the portal cannot be used).  The commands themselves live in
`divert.commands`, one module per group; this module parses, runs the
handler, and turns every failure into that one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from divert.commands import register_all
from divert.commands.context import Context, first_line
from divert.errors import DivertError, PortalUnavailable


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"divert: {message} (see '{self.prog} --help')\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already printed
        return stop.code if isinstance(stop.code, int) else 2
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return run(args)
    except DivertError as error:
        print(f"divert: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("divert: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line, never a traceback, for the unforeseen
        print(f"divert: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    """Run the parsed command's handler; the portal's errors become one line."""
    from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

    context = Context(args.portal)
    try:
        code: int | None = args.handler(context, args)
        return code or 0
    except IntegrityError as error:
        raise DivertError(f"refused by the portal: {first_line(error.orig)}") from None
    except OperationalError as error:
        raise PortalUnavailable(
            f"cannot use the portal at {context.shown}: {first_line(error.orig)}; "
            "check --portal or DIVERT_PORTAL"
        ) from None
    except DBAPIError as error:
        raise PortalUnavailable(
            f"portal {context.shown} failed: {first_line(error.orig)}"
        ) from None
    finally:
        context.close()


def build_parser() -> Parser:
    parser = Parser(prog="divert", description="Call diversion for carrier SIP networks.")
    parser.add_argument(
        "--portal", help="portal database URL (default: $DIVERT_PORTAL or sqlite:///var/portal.db)"
    )
    register_all(parser.add_subparsers(title="commands", metavar="COMMAND"))
    return parser


if __name__ == "__main__":
    sys.exit(main())
