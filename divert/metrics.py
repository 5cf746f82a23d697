"""`divert run --metrics ADDR:PORT`: one Prometheus scrape target per node.

Each scrape reads, at that moment:

- Kamailio's statistics (``kamcmd stats.get_statistics all``): its own
  (transactions, replies by class, shared memory, registrations) as
  ``kamailio_<group>_<name>``, and divert's counters (`divert.kemi.metrics`)
  as ``divert_*_total`` and the histogram ``divert_decision_seconds``;
- the dispatcher's view of each carrier and customer trunk
  (``divert_trunk_up``);
- the store: its sequence and epoch, when the sync worker last applied a
  portal change, the rows it rejected, and whether the worker's last try
  of the portal failed;
- the feature codes waiting in the node's queue for the portal.

Nothing is kept between scrapes; a source that cannot be read (Kamailio
restarting, no store yet) leaves its lines out and says so in
``divert_scrape_errors``.  The decision histogram costs the SIP path two
counter adds per decision (`divert.kemi.adapter`).
"""

from __future__ import annotations

import logging
import re
import socketserver
import sqlite3
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from divert.db import open_portal
from divert.features.queue import QUEUE_FILE
from divert.kemi import metrics
from divert.kemi.store.format import (
    META_EPOCH,
    META_LAST_ERROR,
    META_POSITION,
    META_SYNCED_AT,
    SEQ_FILE,
)
from divert.kemi.store.view import StoreView
from divert.sync.journal import pending

log = logging.getLogger("divert")

_STAT_LINE = re.compile(r"^([A-Za-z0-9_.]+):(.+?) = (-?\d+)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


class Exporter:
    def __init__(self, state_dir: Path, ctl_socket: str, portal_url: str | None = None) -> None:
        self.state_dir = state_dir
        self.ctl_socket = ctl_socket
        self.portal_url = portal_url
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._rendered_at = -1e9
        self._page = ""

    def render(self) -> str:
        """The page; one scrape at a time (Kamailio's control socket serves
        one client), and a page less than a second old is served again."""
        with self._lock:
            now = time.monotonic()
            if now - self._rendered_at >= 1.0:
                self._page = self._render()
                self._rendered_at = time.monotonic()
            return self._page

    def _render(self) -> str:
        errors = 0
        lines: list[str] = []
        for source in (self._kamailio, self._trunks, self._store, self._lag, self._queue):
            try:
                lines.extend(list(source()))  # whole or not at all
            except Exception:  # a source that cannot be read now: left out, counted
                errors += 1
        lines.append("# TYPE divert_scrape_errors gauge")
        lines.append(f"divert_scrape_errors {errors}")
        return "\n".join(lines) + "\n"

    def _kamcmd(self, *args: str) -> str:
        done = subprocess.run(
            ["kamcmd", "-s", self.ctl_socket, *args],
            capture_output=True,
            text=True,
            timeout=2,  # two calls stay well inside Prometheus's 10 s scrape timeout
            check=True,
        )
        return done.stdout

    def _kamailio(self) -> Iterator[str]:
        stats: dict[str, int] = {}
        for line in self._kamcmd("stats.get_statistics", "all").splitlines():
            found = _STAT_LINE.match(line.strip())
            if found:
                group, name, value = found.groups()
                stats[f"{group}:{name}"] = int(value)
        mine = {k.removeprefix("script:"): v for k, v in stats.items() if k.startswith("script:")}
        yield from _divert_counters(mine)
        for key, value in sorted(stats.items()):
            if key.startswith("script:"):
                continue
            name = "kamailio_" + _UNSAFE.sub("_", key.replace(":", "_"))
            yield f"{name} {value}"

    def _trunks(self) -> Iterator[str]:
        listing = self._kamcmd("dispatcher.list")
        yield "# HELP divert_trunk_up 1 when the dispatcher's probing sees the trunk up"
        yield "# TYPE divert_trunk_up gauge"
        set_id, uri = "", ""
        seen: set[tuple[str, str]] = set()
        for line in listing.splitlines():
            text = line.strip()
            if text.startswith("ID:"):
                set_id = text.split(":", 1)[1].strip()
            elif text.startswith("URI:"):
                uri = text.split(":", 1)[1].strip()
            elif text.startswith("FLAGS:") and uri and (set_id, uri) not in seen:
                seen.add((set_id, uri))
                # A: active, T: trying (still routed to); I, D: inactive, disabled
                up = 1 if text.split(":", 1)[1].strip()[:1] in ("A", "T") else 0
                kind = "carrier" if set_id == "1" else "customer"
                yield (
                    f'divert_trunk_up{{set="{_label(set_id)}",kind="{kind}",'
                    f'uri="{_label(uri)}"}} {up}'
                )
                uri = ""

    def _store(self) -> Iterator[str]:
        view = StoreView.open(self.state_dir)
        try:
            meta, rejected = view.meta(), len(view.rejected())
        finally:
            view.close()
        with open(self.state_dir / SEQ_FILE, "rb") as seq:
            data = seq.read(16)
        if len(data) != 16:
            raise ValueError("store.seq is being written")
        epoch, sequence = struct.unpack("<QQ", data)
        yield "# TYPE divert_store_sequence gauge"
        yield f"divert_store_sequence {sequence}"
        yield f"divert_store_epoch {int(meta.get(META_EPOCH, epoch))}"
        synced = meta.get(META_SYNCED_AT)
        if synced:
            yield (
                "# HELP divert_sync_last_applied_timestamp_seconds "
                "when a portal change last reached the store"
            )
            yield "# TYPE divert_sync_last_applied_timestamp_seconds gauge"
            moment = datetime.fromisoformat(synced).timestamp()
            yield f"divert_sync_last_applied_timestamp_seconds {moment:.3f}"
        yield "# TYPE divert_sync_rejected_rows gauge"
        yield f"divert_sync_rejected_rows {rejected}"
        yield "# HELP divert_sync_portal_up 0 when the sync worker's last try of the portal failed"
        yield "# TYPE divert_sync_portal_up gauge"
        yield f"divert_sync_portal_up {0 if meta.get(META_LAST_ERROR) else 1}"

    def _lag(self) -> Iterator[str]:
        """Journal rows the sync worker has not applied yet (asks the portal,
        2 s at most; a portal that does not answer is a scrape error)."""
        if not self.portal_url:
            return
        view = StoreView.open(self.state_dir)
        try:
            position = view.meta().get(META_POSITION)
        finally:
            view.close()
        if position is None:
            return
        if self._engine is None:
            self._engine = open_portal(self.portal_url, limit=2, create=False)
        try:
            with self._engine.connect() as connection:
                waiting, age = pending(connection, position)
        except SQLAlchemyError:
            self._engine.dispose()
            raise
        yield "# HELP divert_sync_lag_rows portal changes not yet in this node's store"
        yield "# TYPE divert_sync_lag_rows gauge"
        yield f"divert_sync_lag_rows {waiting}"
        yield "# HELP divert_sync_lag_seconds age of the oldest of them (0: none)"
        yield "# TYPE divert_sync_lag_seconds gauge"
        yield f"divert_sync_lag_seconds {age or 0:.3f}"

    def _queue(self) -> Iterator[str]:
        path = self.state_dir / QUEUE_FILE
        waiting = failed = 0
        if path.exists():
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                waiting = int(db.execute("SELECT count(*) FROM queued").fetchone()[0])
                if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'failed'").fetchone():
                    failed = int(db.execute("SELECT count(*) FROM failed").fetchone()[0])
            finally:
                db.close()
        yield "# HELP divert_feature_codes_queued codes waiting on this node for the portal"
        yield "# TYPE divert_feature_codes_queued gauge"
        yield f"divert_feature_codes_queued {waiting}"
        yield "# HELP divert_feature_codes_failed codes the portal failed on, set aside"
        yield "# TYPE divert_feature_codes_failed gauge"
        yield f"divert_feature_codes_failed {failed}"


def _label(value: str) -> str:
    """A Prometheus label value, escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Server(ThreadingHTTPServer):
    """No reverse DNS lookup of the address at start (HTTPServer's
    server_bind asks for the host's FQDN), one line per failed request."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request: object, client_address: object) -> None:
        log.debug("metrics request from %s failed", client_address)


def _divert_counters(stats: dict[str, int]) -> Iterator[str]:
    """divert's counters as Prometheus counters and one histogram."""
    yield "# HELP divert_decisions_total decisions of the core: relay (ring) or reply (end)"
    yield "# TYPE divert_decisions_total counter"
    for kind in metrics.DECISIONS:
        count = stats.get(metrics.decisions_name(kind), 0)
        yield f'divert_decisions_total{{kind="{kind}"}} {count}'
    yield "# HELP divert_forwards_total forwards taken, by condition"
    yield "# TYPE divert_forwards_total counter"
    for condition, name in metrics.FORWARD_STATS.items():
        yield f'divert_forwards_total{{condition="{condition.value}"}} {stats.get(name, 0)}'
    yield "# HELP divert_emergency_forwards_total calls sent to a trunk's emergency number"
    yield "# TYPE divert_emergency_forwards_total counter"
    yield f"divert_emergency_forwards_total {stats.get(metrics.EMERGENCY, 0)}"
    yield "# HELP divert_native_plan_calls_total calls routed by a native plan, no Python"
    yield "# TYPE divert_native_plan_calls_total counter"
    yield f"divert_native_plan_calls_total {stats.get(metrics.NATIVE_PLANS, 0)}"
    yield "# HELP divert_decision_seconds time the decision core took, per decision"
    yield "# TYPE divert_decision_seconds histogram"
    total = 0
    for bound in metrics.DECISION_BUCKETS_US:
        total += stats.get(metrics.bucket_name(bound), 0)
        yield f'divert_decision_seconds_bucket{{le="{bound / 1e6:g}"}} {total}'
    total += stats.get(metrics.bucket_name(None), 0)
    yield f'divert_decision_seconds_bucket{{le="+Inf"}} {total}'
    yield f"divert_decision_seconds_sum {stats.get(metrics.DECISION_SUM_US, 0) / 1e6:.6f}"
    yield f"divert_decision_seconds_count {total}"


def serve(exporter: Exporter, address: tuple[str, int]) -> ThreadingHTTPServer | None:
    """Serve GET /metrics on `address` in a daemon thread; None (and one
    warning) when the address cannot be taken: the node routes on without."""

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # an idle or slow client does not keep a thread for ever

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics here")
                return
            body = exporter.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # one line per scrape would drown the node's log

    try:
        server = _Server(address, Handler)
    except OSError as error:
        log.warning("metrics not served: cannot listen on %s:%d: %s", *address, error.strerror)
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", *address)
    return server
