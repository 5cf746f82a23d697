"""A feature code dialled while the portal is down: the node checks it,
routes by it at once, and the portal gets it when it is back (issue 5).

This node has a PostgreSQL portal of its own, to take away and give back,
and listens on NET.2 (tests/e2e/net.py) beside the session's node.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from divert.kemi.store.reader import StoreReader
from tests.conftest import portal_reachable
from tests.e2e.conftest import (
    CALLER,
    CARRIER_1,
    SEED,
    DivertNode,
    dial,
    numbered,
    wait_for_store,
)
from tests.e2e.net import NET
from tests.e2e.sip import call, callee

pytestmark = pytest.mark.postgres

LISTEN = f"{NET}.2:5160"
TARGET = "+393351000077"


@pytest.fixture
def pg_node(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DivertNode]:
    running = DivertNode(tmp_path_factory.mktemp("pg-node"), portal=pg_url, listen=LISTEN)
    for args in SEED:
        running.divert(*args)
    running.start()
    yield running
    portal_reachable(pg_url, True)
    running.stop()


def origins(node: DivertNode) -> list[str]:
    reader = StoreReader(node.state, cache_size=10)
    try:
        table = reader.table("sub:alice@acme")
        return [] if table is None else [rule.origin for rule in table.rules]
    finally:
        reader.close()


def test_a_code_dialled_while_the_portal_is_down_routes_at_once_and_is_delivered(
    pg_node: DivertNode, pg_url: str, workdir: Path
):
    portal_reachable(pg_url, False)

    refused = dial(pg_node, workdir, "*72+39899123456", 403, 7101)
    assert refused.startswith("SIP/2.0 403 Forwarding Refused:") and "premium-rate" in refused
    looping = dial(pg_node, workdir, f"*72{numbered(8)}", 403, 7102)  # her own number
    assert "loop" in looping
    status = dial(pg_node, workdir, f"*72{TARGET}", 480, 7103)
    assert (
        status == f"SIP/2.0 480 Forwarding Activated (always) to {TARGET} (queued for the portal)"
    )
    assert wait_for_store(pg_node, [("always", TARGET)]) == [("always", TARGET)]

    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    pg_node.wait_trunk(CARRIER_1, active=True)
    caller = call(workdir, "caller", LISTEN, numbered(8), 200, f"{CALLER}:6090")
    assert caller.wait() == 0, f"{caller.diagnostics()}\n{pg_node.tail()}"
    carrier.stop()
    assert carrier.received()[0].ruri_user == TARGET

    portal_reachable(pg_url, True)
    deadline = time.monotonic() + 40  # the sync worker delivers after its next pass
    while pg_node.subscriber_forwards("alice") == [] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pg_node.subscriber_forwards("alice") == [("always", TARGET)]
    # the portal's own row now replaces the local effect (within the worker's backoff)
    (delivered,) = pg_node.subscriber_forward_ids("alice")
    deadline = time.monotonic() + 35
    while origins(pg_node) != [f"forward {delivered}"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert origins(pg_node) == [f"forward {delivered}"]
