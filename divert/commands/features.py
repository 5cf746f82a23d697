"""`divert features`: the feature-code server (`divert run` starts it)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from divert.commands import Groups
    from divert.commands.context import Context


def register(groups: Groups) -> None:
    features = groups.add_parser("features", help="the feature-code server (divert run starts it)")
    features.add_argument("--listen", required=True, help="IPv4:PORT on loopback")
    features.add_argument("--kamailio", required=True, help="the only address it answers")
    features.add_argument("--state-dir", default="var")
    features.set_defaults(handler=features_run)


def features_run(context: Context, args: argparse.Namespace) -> int:
    """Answer feature codes relayed by Kamailio; rides out portal outages."""
    from divert.features.server import FeatureConfig, serve_until_signalled
    from divert.portal import trunks

    context.require_schema_if_reachable()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s divert-features %(levelname)s %(message)s"
    )
    host, port = trunks.parse_address(args.listen).split(":")
    config = FeatureConfig(context.url, (host, int(port)), args.kamailio, Path(args.state_dir))
    return serve_until_signalled(config)
