"""`divert`: the operator's command-line tool.

Each command runs in one portal transaction: it either commits whole or,
on any error, writes nothing and prints one line on stderr (exit 2 for bad
input, 1 when the portal cannot be used).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from divert import explain as explaining
from divert.db import open_portal, portal_url
from divert.errors import DivertError, PortalUnavailable
from divert.features.server import FeatureConfig, serve_until_signalled
from divert.kemi.core.decide import Limits
from divert.kemi.core.model import Outcome
from divert.kemi.store.reader import CACHE_ENTRIES
from divert.node import NodeConfig, run_node
from divert.portal import (
    find,
    forwards,
    numbers,
    policy,
    schedules,
    subscribers,
    tenants,
    trunks,
)
from divert.schema import migrate
from divert.schema.tables import CALLER_SCOPES, CONDITIONS, DIVERSION_STYLES
from divert.sync.status import as_text as status_text
from divert.sync.status import read_status
from divert.sync.worker import PORTAL_DOWN_ENV, SyncWorker, WorkerConfig, run_until_signalled

Handler = Callable[[Connection, argparse.Namespace], None]
Standalone = Callable[[argparse.Namespace, str], int]


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
    url = portal_url(args.portal)
    engine = open_portal(url)
    shown = make_url(engine.url).render_as_string(hide_password=True)
    try:
        if args.handler is db_upgrade:
            migrate.upgrade(engine)
            print(f"portal {shown} is at schema {migrate.head_revision()}")
            return 0
        if args.handler is sync_status:
            print(sync_status_text(Path(args.state_dir), url))
            return 0
        if args.handler is node_run:
            # a node with a store routes through a portal outage: prepare says so
            reachable = _portal_reachable(engine)
            if reachable:
                _require_schema(engine, shown)
            return node_run(args, url, reachable)  # type: ignore[no-any-return]
        if _outlives_outages(args):
            _require_schema_if_reachable(engine, shown)
        else:
            _require_schema(engine, shown)
        if args.handler is sync_run:
            return sync_run(args, url)  # type: ignore[no-any-return]
        if args.handler is features_run:
            return features_run(args, url)  # type: ignore[no-any-return]
        with engine.begin() as connection:
            args.handler(connection, args)
        return 0
    except IntegrityError as error:
        raise DivertError(f"refused by the portal: {_first_line(error.orig)}") from None
    except OperationalError as error:
        raise PortalUnavailable(
            f"cannot use the portal at {shown}: {_first_line(error.orig)}; "
            "check --portal or DIVERT_PORTAL"
        ) from None
    except DBAPIError as error:
        raise PortalUnavailable(f"portal {shown} failed: {_first_line(error.orig)}") from None
    finally:
        engine.dispose()


def _outlives_outages(args: argparse.Namespace) -> bool:
    """The sync worker and the feature server ride out portal outages (the
    node routes from its store meanwhile), so an outage as they start, for
    instance when `divert run` restarts one, must not stop them."""
    if args.handler is sync_run:
        return not args.once
    return args.handler is features_run


def _portal_reachable(engine: Engine) -> bool:
    try:
        with engine.connect():
            return True
    except OperationalError:
        return False


def _require_schema_if_reachable(engine: Engine, shown: str) -> None:
    try:
        _require_schema(engine, shown)
    except OperationalError as error:
        if os.environ.get(PORTAL_DOWN_ENV) == "1":
            return  # `divert run` said it for the node
        print(
            f"divert: portal {shown} unreachable ({_first_line(error.orig)}); "
            "starting anyway, retrying in the background",
            file=sys.stderr,
        )


def _require_schema(engine: Engine, shown: str) -> None:
    try:
        current = migrate.current_revision(engine)
    except ProgrammingError:
        current = None
    head = migrate.head_revision()
    if current != head:
        raise PortalUnavailable(
            f"portal {shown} is at schema {current or 'none'}, this divert needs {head}; "
            "run 'divert db upgrade'"
        )


def _first_line(error: BaseException | None) -> str:
    return str(error).strip().splitlines()[0] if error and str(error).strip() else "unknown error"


def build_parser() -> Parser:
    parser = Parser(prog="divert", description="Call diversion for carrier SIP networks.")
    parser.add_argument(
        "--portal", help="portal database URL (default: $DIVERT_PORTAL or sqlite:///var/portal.db)"
    )
    groups = parser.add_subparsers(title="commands", metavar="COMMAND")

    db = groups.add_parser("db", help="portal schema").add_subparsers(metavar="ACTION")
    db.add_parser("upgrade", help="create or upgrade the portal schema").set_defaults(
        handler=db_upgrade
    )

    _tenant_commands(groups)
    _trunk_commands(groups)
    _subscriber_commands(groups)
    _number_commands(groups)
    _forward_commands(groups)
    _policy_commands(groups)
    _schedule_commands(groups)
    _sync_commands(groups)
    _run_command(groups)
    features = groups.add_parser("features", help="the feature-code server (divert run starts it)")
    features.add_argument("--listen", required=True, help="IPv4:PORT on loopback")
    features.add_argument("--kamailio", required=True, help="the only address it answers")
    features.add_argument("--state-dir", default="var")
    features.set_defaults(handler=features_run)

    explain = groups.add_parser("explain", help="show what a call would do, without placing it")
    explain.add_argument("number", help="the called number")
    explain.add_argument("--from", dest="caller", help="caller: number, username or extension")
    explain.add_argument(
        "--after",
        nargs="+",
        action="extend",
        default=[],
        choices=[o.value for o in Outcome],
        help="how each ringing step ends, in order",
    )
    explain.add_argument(
        "--at", help="ISO 8601 time of the call (default: now; tenant time zone if none given)"
    )
    explain.add_argument("--max-diversions", type=int, default=Limits().max_diversions)
    explain.add_argument("--json", action="store_true", help="print JSON")
    explain.set_defaults(handler=explain_call)
    return parser


def _tenant_commands(groups: argparse._SubParsersAction[Parser]) -> None:
    actions = groups.add_parser("tenant", help="customers").add_subparsers(metavar="ACTION")
    add = actions.add_parser("add", help="add a tenant")
    add.add_argument("name")
    add.add_argument(
        "--region", required=True, help="ISO country code for national numbers, e.g. IT"
    )
    add.add_argument("--timezone", default="UTC")
    add.add_argument("--domain", help="SIP domain and digest realm (default: the name)")
    add.add_argument("--voicemail-uri", help="e.g. sip:{mailbox}@vm.example.net")
    add.add_argument(
        "--code-profile", default="both", help="phone codes: vpbx (*72...), carrier (*1/*2), both"
    )
    add.set_defaults(handler=tenant_add)
    change = actions.add_parser("set", help="change a tenant")
    change.add_argument("name")
    change.add_argument("--region")
    change.add_argument("--timezone")
    change.add_argument(
        "--operator", help="return-to-operator destination: extension or number ('' clears)"
    )
    change.add_argument("--voicemail-uri", help="'' clears")
    change.add_argument("--code-profile", help="vpbx, carrier or both")
    change.set_defaults(handler=tenant_set)
    actions.add_parser("list", help="list tenants").set_defaults(handler=tenant_list)
    remove = actions.add_parser("delete", help="delete an unused tenant")
    remove.add_argument("name")
    remove.set_defaults(handler=tenant_delete)


def _trunk_commands(groups: argparse._SubParsersAction[Parser]) -> None:
    actions = groups.add_parser("trunk", help="customer PBX trunks").add_subparsers(
        metavar="ACTION"
    )
    add = actions.add_parser("add", help="add a trunk")
    add.add_argument("name")
    add.add_argument("--tenant", required=True)
    add.add_argument("--address", action="append", default=[], help="IPv4[:port]; repeat for more")
    add.add_argument("--emergency", help="number to take the trunk's calls when it is down")
    add.add_argument("--diversion-style", default="diversion", choices=DIVERSION_STYLES)
    add.set_defaults(handler=trunk_add)
    listing = actions.add_parser("list", help="list trunks")
    listing.add_argument("--tenant")
    listing.set_defaults(handler=trunk_list)
    remove = actions.add_parser("delete", help="delete a trunk without numbers")
    remove.add_argument("name")
    remove.add_argument("--tenant", required=True)
    remove.set_defaults(handler=trunk_delete)


def _subscriber_commands(groups: argparse._SubParsersAction[Parser]) -> None:
    actions = groups.add_parser("subscriber", help="hosted SIP accounts").add_subparsers(
        metavar="ACTION"
    )
    add = actions.add_parser("add", help="add a subscriber")
    add.add_argument("username")
    add.add_argument("--tenant", required=True)
    add.add_argument("--password", required=True, help="'-' reads it from standard input")
    add.add_argument("--extension", help="2 or 3 digits, unique in the tenant")
    add.add_argument("--name", default="", help="display name")
    add.set_defaults(handler=subscriber_add)
    listing = actions.add_parser("list", help="list subscribers")
    listing.add_argument("--tenant")
    listing.set_defaults(handler=subscriber_list)
    change = actions.add_parser("set", help="change a subscriber")
    change.add_argument("username")
    change.add_argument("--tenant", required=True)
    change.add_argument(
        "--caller-id",
        required=True,
        help="which of its numbers its calls to the carriers show ('' : the first given)",
    )
    change.set_defaults(handler=subscriber_set)
    remove = actions.add_parser("delete", help="delete a subscriber and its forwards")
    remove.add_argument("username")
    remove.add_argument("--tenant", required=True)
    remove.set_defaults(handler=subscriber_delete)


def _number_commands(groups: argparse._SubParsersAction[Parser]) -> None:
    actions = groups.add_parser("number", help="DIDs").add_subparsers(metavar="ACTION")
    add = actions.add_parser("add", help="add a number")
    add.add_argument("number")
    add.add_argument("--tenant", required=True)
    owner = add.add_mutually_exclusive_group(required=True)
    owner.add_argument("--trunk")
    owner.add_argument("--subscriber")
    add.set_defaults(handler=number_add)
    listing = actions.add_parser("list", help="list numbers")
    listing.add_argument("--tenant")
    listing.set_defaults(handler=number_list)
    remove = actions.add_parser("delete", help="delete a number and its forwards")
    remove.add_argument("number")
    remove.add_argument("--tenant", help="to read a national number")
    remove.set_defaults(handler=number_delete)


def _forward_commands(groups: argparse._SubParsersAction[Parser]) -> None:
    actions = groups.add_parser("forward", help="call forwards").add_subparsers(metavar="ACTION")
    listing = actions.add_parser("list", help="every active forward of every number")
    listing.add_argument("--tenant")
    listing.set_defaults(handler=forward_list)
    add = actions.add_parser("add", help="add a forward to a number or a subscriber")
    add.add_argument("number", nargs="?", help="the number whose calls are forwarded")
    add.add_argument(
        "--subscriber", help="forward all of a subscriber's calls instead (needs --tenant)"
    )
    add.add_argument("--tenant")
    add.add_argument("--when", required=True, choices=CONDITIONS)
    add.add_argument(
        "--to",
        required=True,
        help="number, ext:NNN, voicemail, operator, reject or reject:CODE",
    )
    add.add_argument("--callers", default="any", choices=CALLER_SCOPES)
    add.add_argument("--timeout", type=int, help="seconds to ring before a no-answer forward")
    add.add_argument("--until", help="ISO 8601 expiry (tenant time zone if none given)")
    add.add_argument("--modes", help="only in these time modes, e.g. night,holiday")
    add.set_defaults(handler=forward_add)
    change = actions.add_parser("set", help="change a forward's destination")
    change.add_argument("id", type=int)
    change.add_argument("--to", required=True)
    change.add_argument("--timeout", type=int)
    change.set_defaults(handler=forward_set)
    remove = actions.add_parser("delete", help="delete a forward")
    remove.add_argument("id", type=int)
    remove.set_defaults(handler=forward_delete)


def _schedule_commands(groups: argparse._SubParsersAction[Parser]) -> None:
    actions = groups.add_parser("schedule", help="time modes").add_subparsers(metavar="ACTION")
    add = actions.add_parser("add", help="a time mode over weekdays and hours")
    add.add_argument("--tenant", required=True)
    add.add_argument("--mode", required=True, help="e.g. day, night, holiday")
    add.add_argument("--days", required=True, help="mon-fri, sat,sun or all")
    add.add_argument("--from", dest="starts", required=True, help="HH:MM, tenant time zone")
    add.add_argument("--to", dest="ends", required=True, help="HH:MM; before --from: next day")
    add.set_defaults(handler=schedule_add)
    listing = actions.add_parser("list", help="list schedules")
    listing.add_argument("--tenant")
    listing.set_defaults(handler=schedule_list)
    remove = actions.add_parser("delete", help="delete a schedule entry")
    remove.add_argument("id", type=int)
    remove.set_defaults(handler=schedule_delete)


def schedule_add(connection: Connection, args: argparse.Namespace) -> None:
    entry = schedules.add(connection, args.tenant, args.mode, args.days, args.starts, args.ends)
    print(f"schedule {entry} added: {args.mode} on {args.days} {args.starts}-{args.ends}")


def schedule_list(connection: Connection, args: argparse.Namespace) -> None:
    _table(
        ("ID", "TENANT", "MODE", "DAYS", "FROM", "TO"),
        [
            (str(e.id), e.tenant, e.mode, e.weekdays, e.starts, e.ends)
            for e in schedules.listing(connection, args.tenant)
        ],
    )


def schedule_delete(connection: Connection, args: argparse.Namespace) -> None:
    schedules.remove(connection, args.id)
    print(f"schedule {args.id} deleted")


def _policy_commands(groups: argparse._SubParsersAction[Parser]) -> None:
    actions = groups.add_parser("policy", help="where forwards may go").add_subparsers(
        metavar="ACTION"
    )
    actions.add_parser("show", help="show the destination policy").set_defaults(handler=policy_show)
    change = actions.add_parser("set", help="change the destination policy")
    change.add_argument("--allow-countries", help="calling codes, e.g. 39,33 ('' allows all)")
    change.add_argument("--deny-prefixes", help="E.164 prefixes, e.g. +39899,+39892 ('' clears)")
    change.set_defaults(handler=policy_set)


def _sync_commands(groups: argparse._SubParsersAction[Parser]) -> None:
    sync = groups.add_parser("sync", help="run the sync worker (portal -> this node's store)")
    sync.add_argument("--state-dir", default="var", help="where the store lives (default: var)")
    sync.add_argument("--once", action="store_true", help="sync what is there, then exit")
    sync.add_argument("--poll", type=float, default=1.0, help="seconds between journal polls")
    sync.set_defaults(handler=sync_run)
    actions = sync.add_subparsers(metavar="ACTION")
    status = actions.add_parser("status", help="journal position, lag, errors, rejected rows")
    status.add_argument("--state-dir", default="var")
    status.set_defaults(handler=sync_status)


def _run_command(groups: argparse._SubParsersAction[Parser]) -> None:
    run = groups.add_parser("run", help="run this node: sync worker and Kamailio, until Ctrl-C")
    run.add_argument("--listen", default="127.0.0.1:5060", help="SIP address, IPv4:PORT")
    run.add_argument("--state-dir", default="var", help="store, dispatcher list, PID files")
    run.add_argument(
        "--carrier",
        action="append",
        default=[],
        help="carrier trunk IPv4:PORT, in order of preference",
    )
    run.add_argument("--domain", default="divert.invalid", help="host part of forwarded URIs")
    run.add_argument("--children", type=int, default=4, help="Kamailio SIP worker processes")
    run.add_argument("--probe-interval", type=int, default=2, help="seconds between OPTIONS probes")
    run.add_argument(
        "--shm",
        type=int,
        default=512,
        help="Kamailio shared memory in MB (transactions; 64 ran out at 650 calls/s)",
    )
    run.add_argument(
        "--cache",
        type=int,
        default=CACHE_ENTRIES,
        help="store entries each SIP worker caches (up to ~1.2 KB each)",
    )
    run.set_defaults(handler=node_run)


def node_run(args: argparse.Namespace, url: str, portal_reachable: bool = True) -> int:
    """`divert run`: the node in the foreground (see divert.node)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s divert %(levelname)s %(message)s")
    carriers = tuple(trunks.parse_address(c) for c in args.carrier)
    if not 1 <= args.children <= 64 or not 1 <= args.probe_interval <= 600:
        raise DivertError("--children must be 1-64 and --probe-interval 1-600 seconds")
    if not 32 <= args.shm <= 65536:
        raise DivertError("--shm must be 32-65536 MB")
    if not 100 <= args.cache <= 10_000_000:
        raise DivertError("--cache must be 100-10000000 entries")
    config = NodeConfig(
        url,
        args.listen,
        Path(args.state_dir).resolve(),
        carriers,
        args.domain,
        args.children,
        args.probe_interval,
        shm_mb=args.shm,
        cache_entries=args.cache,
    )
    return run_node(config, portal_reachable)


def features_run(args: argparse.Namespace, url: str) -> int:
    """`divert features`: answer feature codes relayed by Kamailio."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s divert-features %(levelname)s %(message)s"
    )
    host, port = trunks.parse_address(args.listen).split(":")
    config = FeatureConfig(url, (host, int(port)), args.kamailio, Path(args.state_dir))
    return serve_until_signalled(config)


def sync_run(args: argparse.Namespace, url: str) -> int:
    """`divert sync`: run the worker (its own engine and transactions)."""
    if args.poll <= 0:
        raise DivertError("--poll must be a positive number of seconds")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s divert-sync %(levelname)s %(message)s"
    )
    config = WorkerConfig(url, Path(args.state_dir), poll_interval=args.poll)
    if not args.once:
        return run_until_signalled(config)
    worker = SyncWorker(config)
    try:
        worker.sync_once()
    finally:
        worker.close()
    return 0


def sync_status(connection: Connection, args: argparse.Namespace) -> None:
    """Handled in `run`: reads the store, and the portal if it can."""


def sync_status_text(state_dir: Path, url: str) -> str:
    return status_text(read_status(state_dir, url))


def db_upgrade(connection: Connection, args: argparse.Namespace) -> None:
    """Handled in `run` (migrations manage their own transaction)."""


def tenant_add(connection: Connection, args: argparse.Namespace) -> None:
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
    _table(
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
    tenants.remove(connection, args.name)
    print(f"tenant {args.name} deleted")


def trunk_add(connection: Connection, args: argparse.Namespace) -> None:
    trunks.add(
        connection, args.tenant, args.name, args.address, args.emergency, args.diversion_style
    )
    print(f"trunk {args.name} added to tenant {args.tenant}")


def trunk_list(connection: Connection, args: argparse.Namespace) -> None:
    rows = trunks.listing(connection, args.tenant)
    names = {t.id: t.name for t in tenants.listing(connection)}
    _table(
        ("TENANT", "NAME", "ADDRESSES", "EMERGENCY", "DIVERSION"),
        [
            (names[t.tenant_id], t.name, t.addresses, t.emergency or "-", t.diversion_style)
            for t in rows
        ],
    )


def trunk_delete(connection: Connection, args: argparse.Namespace) -> None:
    trunks.remove(connection, args.tenant, args.name)
    print(f"trunk {args.name} deleted")


def subscriber_add(connection: Connection, args: argparse.Namespace) -> None:
    password = sys.stdin.readline().rstrip("\n") if args.password == "-" else args.password
    subscribers.add(connection, args.tenant, args.username, password, args.extension, args.name)
    print(f"subscriber {args.username} added to tenant {args.tenant}")


def subscriber_list(connection: Connection, args: argparse.Namespace) -> None:
    asserted = subscribers.caller_ids(connection, args.tenant)
    _table(
        ("TENANT", "USERNAME", "EXTENSION", "NAME", "CALLER ID"),
        [
            (s.tenant, s.username, s.extension or "-", s.display_name, asserted.get(s.id, "-"))
            for s in subscribers.listing(connection, args.tenant)
        ],
    )


def subscriber_set(connection: Connection, args: argparse.Namespace) -> None:
    chosen = subscribers.set_caller_id(connection, args.tenant, args.username, args.caller_id)
    shown = chosen or "the number it was given first"
    print(f"subscriber {args.username}: calls to the carriers show {shown}")


def subscriber_delete(connection: Connection, args: argparse.Namespace) -> None:
    subscribers.remove(connection, args.tenant, args.username)
    print(f"subscriber {args.username} deleted")


def number_add(connection: Connection, args: argparse.Namespace) -> None:
    e164 = numbers.add(connection, args.tenant, args.number, args.trunk, args.subscriber)
    print(f"number {e164} added to tenant {args.tenant}")


def number_list(connection: Connection, args: argparse.Namespace) -> None:
    _table(
        ("NUMBER", "TENANT", "OWNER"),
        [
            (n.e164, n.tenant, f"trunk {n.trunk}" if n.trunk else f"subscriber {n.subscriber}")
            for n in numbers.listing(connection, args.tenant)
        ],
    )


def number_delete(connection: Connection, args: argparse.Namespace) -> None:
    e164, count = numbers.remove(connection, args.number, args.tenant)
    print(f"number {e164} deleted with {count} forward(s)")


def forward_list(connection: Connection, args: argparse.Namespace) -> None:
    rows = forwards.listing(connection, args.tenant)
    _table(
        ("ID", "TENANT", "OWNER", "WHEN", "CALLERS", "TO", "TIMEOUT", "ORDER", "UNTIL", "MODES"),
        [
            (
                str(f.id),
                f.tenant,
                f.e164 or f"subscriber {f.username}",
                f.condition,
                f.callers,
                forwards.destination_label(f.dest_kind, f.dest_value),
                f"{f.ring_timeout} s" if f.ring_timeout else "-",
                str(f.position + 1),
                f.expires_at.isoformat(timespec="minutes") if f.expires_at else "-",
                f.modes or "any",
            )
            for f in rows
        ],
    )


def forward_add(connection: Connection, args: argparse.Namespace) -> None:
    if (args.number is None) == (args.subscriber is None):
        raise DivertError("give the NUMBER whose calls to forward, or --subscriber with --tenant")
    if args.subscriber is not None:
        if args.tenant is None:
            raise DivertError("--subscriber needs --tenant")
        owner = forwards.owner_of_subscriber(connection, args.tenant, args.subscriber)
    else:
        owner = forwards.owner_of_number(connection, args.number, args.tenant)
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
    label = forwards.change_destination(connection, args.id, args.to, args.timeout)
    print(f"forward {args.id} now goes to {label}")


def forward_delete(connection: Connection, args: argparse.Namespace) -> None:
    forwards.remove(connection, args.id)
    print(f"forward {args.id} deleted")


def policy_show(connection: Connection, args: argparse.Namespace) -> None:
    current = policy.load_policy(connection)
    countries = ",".join(str(c) for c in sorted(current.allowed_countries)) or "all"
    print(f"allowed countries: {countries}")
    print(f"denied prefixes: {','.join(current.denied_prefixes) or 'none'}")
    print("premium-rate and shared-cost numbers: always denied")


def policy_set(connection: Connection, args: argparse.Namespace) -> None:
    if args.allow_countries is None and args.deny_prefixes is None:
        raise DivertError("nothing to change: give --allow-countries or --deny-prefixes")
    if args.allow_countries is not None:
        policy.store(
            connection, policy.ALLOWED_COUNTRIES, policy.parse_countries(args.allow_countries)
        )
    if args.deny_prefixes is not None:
        policy.store(connection, policy.DENIED_PREFIXES, policy.parse_prefixes(args.deny_prefixes))
    policy_show(connection, args)


def explain_call(connection: Connection, args: argparse.Namespace) -> None:
    if args.max_diversions < 0:
        raise DivertError("--max-diversions must be 0 or more")
    at = _parse_time(connection, args.at, args.number) if args.at else datetime.now(UTC)
    result = explaining.explain(
        connection,
        args.number,
        args.caller,
        [Outcome(o) for o in args.after],
        at,
        Limits(max_diversions=args.max_diversions),
    )
    if args.json:
        print(json.dumps(explaining.as_json(result), indent=2))
    else:
        print(explaining.as_text(result))


def _parse_time(connection: Connection, text: str, called: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DivertError(f"--at {text!r} is not an ISO 8601 time, e.g. 2026-11-23T09:30") from None
    if moment.tzinfo is None:
        tenant = find.tenant_by_id(connection, find.number(connection, called).tenant_id)
        moment = moment.replace(tzinfo=ZoneInfo(str(tenant.timezone)))
    return moment


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )


if __name__ == "__main__":
    sys.exit(main())
