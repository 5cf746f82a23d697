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

PORTAL_HELP = "portal database URL (default: $DIVERT_PORTAL or sqlite:///var/portal.db)"


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"divert: {message} (see '{self.prog} --help')\n")


class DefaultsShown(argparse.HelpFormatter):
    """Help that names each option's default, when it has a useful one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default in (None, False, [], argparse.SUPPRESS)
            or action.option_strings == []
        ):
            return text
        return f"{text} (default: %(default)s)"


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

    context = Context(args.portal, create=getattr(args, "creates_portal", False))
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
    parser = Parser(
        prog="divert",
        description="Call diversion for carrier SIP networks.",
        formatter_class=DefaultsShown,
    )
    parser.add_argument("--portal", help=PORTAL_HELP)
    parser.add_argument("--version", action=VersionShown, help="print divert's version and exit")
    register_all(parser.add_subparsers(title="commands", metavar="COMMAND"))
    for command in _subparsers(parser):
        command.formatter_class = DefaultsShown
        # after the command too (`divert run --portal URL`): SUPPRESS keeps
        # the value given before it when none is given here
        command.add_argument("--portal", default=argparse.SUPPRESS, help=PORTAL_HELP)
    return parser


class VersionShown(argparse.Action):
    """--version, with the version looked up only when asked for (the
    package metadata costs milliseconds every command would pay)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help=str(kwargs.get("help", "")),
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"divert {_version()}")  # on standard output, as argparse's own --version
        parser.exit(0)


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every command and subcommand parser under `parser`."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                found += [command, *_subparsers(command)]
    return found


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("divert")
    except PackageNotFoundError:
        return "unknown (not installed)"


if __name__ == "__main__":
    sys.exit(main())
