"""The node's Prometheus page (issue 15): scraped over HTTP, its counters
move with the calls."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.e2e.conftest import CALLER, CARRIER_1, NODE, DivertNode, numbered
from tests.e2e.sip import call, callee


def value(page: str, series: str) -> float:
    found = re.search(rf"^{re.escape(series)} (\S+)$", page, re.M)
    assert found, f"{series} not on the page"
    return float(found.group(1))


def test_the_metrics_page_counts_forwards_decisions_and_their_time(node: DivertNode, workdir: Path):
    before = node.scrape()
    time.sleep(1.1)  # a page is served again for a second: the next one is new
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(CARRIER_1, active=True)
    caller = call(workdir, "caller", NODE, numbered(1), 200, f"{CALLER}:6300")  # always forward
    assert caller.wait() == 0, caller.diagnostics()
    after = node.scrape()  # while the carrier still answers the probes
    carrier.stop()
    forwards = 'divert_forwards_total{condition="always"}'
    assert value(after, forwards) == value(before, forwards) + 1
    relays = 'divert_decisions_total{kind="relay"}'
    assert value(after, relays) >= value(before, relays) + 1
    # the call's decision was the core's (the histogram) or a native plan's
    # (compiled ahead of the call: its own counter, not the histogram)
    decided = ("divert_decision_seconds_count", "divert_native_plan_calls_total")
    assert sum(value(after, series) - value(before, series) for series in decided) >= 1
    assert value(after, "divert_decision_seconds_sum") > 0  # the session's earlier calls
    assert value(after, "kamailio_core_rcv_replies_2xx_invite") > value(
        before, "kamailio_core_rcv_replies_2xx_invite"
    )
    assert value(after, f'divert_trunk_up{{set="1",kind="carrier",uri="sip:{CARRIER_1}"}}') == 1
    assert value(after, "divert_store_sequence") >= 0
    assert value(after, "divert_sync_portal_up") == 1
    assert value(after, "divert_sync_lag_rows") >= 0
    assert value(after, "divert_feature_codes_queued") == 0
    assert value(after, "divert_scrape_errors") == 0


def test_only_metrics_is_served(node: DivertNode):
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"http://{node.metrics}/other", timeout=5)
    except urllib.error.HTTPError as error:
        assert error.code == 404
    else:
        raise AssertionError("/other answered")
