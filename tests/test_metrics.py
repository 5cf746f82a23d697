"""divert's counters: Kamailio's config declares exactly those the adapter
adds to (`divert.kemi.metrics`)."""

from __future__ import annotations

import re
from pathlib import Path

from divert.kemi import metrics

CONFIG = Path(__file__).resolve().parent.parent / "kamailio-cfg" / "kamailio.cfg"


def test_the_config_declares_every_counter_and_no_other():
    declared = re.findall(r'modparam\("statistics", "variable", "([^"]+)"\)', CONFIG.read_text())
    assert declared == list(metrics.names())


def test_decision_times_fall_in_their_buckets():
    assert metrics.bucket_of(0) == "divert:decision_le_50us"
    assert metrics.bucket_of(50) == "divert:decision_le_50us"
    assert metrics.bucket_of(51) == "divert:decision_le_100us"
    assert metrics.bucket_of(10**6) == "divert:decision_le_inf"


def test_the_dashboard_plots_only_series_the_exporter_serves():
    import json

    dashboard = json.loads((CONFIG.parent.parent / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = set(re.findall(r"\b((?:divert|kamailio)_[a-z0-9_]+)", " ".join(exprs)))
    source = (CONFIG.parent.parent / "divert" / "metrics.py").read_text()
    divert_series = {name for name in used if name.startswith("divert_")}
    for name in divert_series:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert base in source, name
    assert {"kamailio_shmem_used_size", "kamailio_tmx_2xx_transactions"} <= used
    assert len(dashboard["panels"]) >= 8


def test_a_page_is_served_whatever_is_missing(tmp_path):
    """No Kamailio to ask, no store, no queue (a node starting, or its files
    gone): the page still comes, the missing sources counted as errors."""
    from divert.metrics import Exporter

    page = Exporter(tmp_path / "gone", f"unix:{tmp_path / 'no-ctl'}").render()
    assert page.endswith("divert_scrape_errors 3\n")  # Kamailio, its trunks, the store
    assert "divert_feature_codes_queued 0" in page
