"""`divert run`: this node in the foreground (see divert.node)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from divert.errors import DivertError
from divert.kemi.store.reader import CACHE_ENTRIES

if TYPE_CHECKING:
    from divert.commands import Groups
    from divert.commands.context import Context


def register(groups: Groups) -> None:
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
    run.add_argument(
        "--metrics",
        default="127.0.0.1:9161",
        help="Prometheus scrape target ADDR:PORT (GET /metrics); '' : none",
    )
    run.add_argument(
        "--peer",
        action="append",
        default=[],
        help="another node of this cluster, its SIP IPv4:PORT (repeat for each); "
        "registrations are shared with the peers over DMQ on the SIP port",
    )
    run.set_defaults(handler=node_run)


def node_run(context: Context, args: argparse.Namespace) -> int:
    """A node with a store routes through a portal outage: `prepare` says so."""
    from divert import node
    from divert.portal import trunks

    node.parse_listen(args.listen)  # before anything is made: a typo costs nothing
    if args.metrics:
        node.parse_listen(args.metrics, "--metrics")
    reachable = context.reachable()
    if reachable:
        context.require_schema()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s divert %(levelname)s %(message)s")
    if not args.carrier:
        logging.getLogger("divert").warning(
            "no --carrier given: calls to numbers outside divert (forwards to mobiles, "
            "subscribers' calls out) get 503"
        )
    carriers = tuple(trunks.parse_address(c) for c in args.carrier)
    if not 1 <= args.children <= 64:
        raise DivertError("--children must be 1-64")
    if not 1 <= args.probe_interval <= 600:
        raise DivertError("--probe-interval must be 1-600 seconds")
    if not 32 <= args.shm <= 65536:
        raise DivertError("--shm must be 32-65536 MB")
    if not 100 <= args.cache <= 10_000_000:
        raise DivertError("--cache must be 100-10000000 entries")
    peers = node.parse_peers(args.listen, args.peer)
    config = node.NodeConfig(
        context.url,
        args.listen,
        Path(args.state_dir).resolve(),
        carriers,
        args.domain,
        args.children,
        args.probe_interval,
        shm_mb=args.shm,
        cache_entries=args.cache,
        metrics=args.metrics,
        peers=peers,
    )
    return node.run_node(config, reachable)
