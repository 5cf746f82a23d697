"""`divert sync`: the sync worker (portal -> this node's store), and its status."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from divert.errors import DivertError

if TYPE_CHECKING:
    from divert.commands import Groups
    from divert.commands.context import Context


def register(groups: Groups) -> None:
    sync = groups.add_parser("sync", help="run the sync worker (portal -> this node's store)")
    sync.add_argument("--state-dir", default="var", help="where the store lives")
    sync.add_argument("--once", action="store_true", help="sync what is there, then exit")
    sync.add_argument("--poll", type=float, default=1.0, help="seconds between journal polls")
    sync.set_defaults(handler=sync_run)
    actions = sync.add_subparsers(metavar="[ACTION]", title="actions (none: run the worker)")
    status = actions.add_parser("status", help="journal position, lag, errors, rejected rows")
    status.add_argument("--state-dir", default="var", help="where the store lives")
    status.set_defaults(handler=sync_status)


def sync_run(context: Context, args: argparse.Namespace) -> int:
    """The worker, with its own engine and transactions; without --once it
    rides out portal outages."""
    from divert.sync.worker import SyncWorker, WorkerConfig, run_until_signalled

    if args.once:
        context.require_schema()
    else:
        context.require_schema_if_reachable()
    if args.poll <= 0:
        raise DivertError("--poll must be a positive number of seconds")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s divert-sync %(levelname)s %(message)s"
    )
    config = WorkerConfig(context.url, Path(args.state_dir), poll_interval=args.poll)
    if not args.once:
        return run_until_signalled(config)
    worker = SyncWorker(config)
    try:
        worker.sync_once()
    finally:
        worker.close()
    return 0


def sync_status(context: Context, args: argparse.Namespace) -> int:
    """Reads the store, and the portal if it can."""
    from divert.sync.status import as_text, read_status

    context.engine  # noqa: B018 -- a URL that is no database URL: one line, as for any command
    print(as_text(read_status(Path(args.state_dir), context.url)))
    return 0
