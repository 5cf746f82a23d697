"""Benchmark of a three-node cluster (issue 17): how fast a portal change and
a registration reach every node.

    .venv/bin/python bench/cluster_bench.py [--numbers 10000] [--changes 200]
        [--registrations 50] [--net 127.0.3]

Makes a PostgreSQL portal of its own (a database on the machine's cluster,
dropped at the end) with N numbers, each with a busy forward, and starts
three `divert run` nodes on NET.1-3:5060, each with the other two as
--peer.  Then:

- propagation: `--changes` single-forward commits (a busy forward's
  destination changed); for each, the time from the commit until each
  node's store shows it, read by a StoreReader on each node's state folder
  in a tight loop (a change visible in the store routes the next call:
  native plans are used only while they equal the store, see README
  "Native plans");
- registration replication: `--registrations` subscribers each REGISTER at
  node 1 (digest-authenticated, over UDP, each from its own NET.100+i);
  the time from node
  1's 200 OK until node 2 and node 3 list the contact (`kamcmd ul.lookup`,
  polled: a poll takes about 3 ms, the figures' resolution).

Prints p50 / p99 / max per node and writes var/bench/cluster.json.  Loopback
only; every loop is bounded in count and time; every process started is
stopped by its PID.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from divert.db import open_portal  # noqa: E402
from divert.kemi.store.reader import StoreReader  # noqa: E402
from divert.schema.migrate import upgrade  # noqa: E402

ADMIN = os.environ.get(
    "DIVERT_TEST_PG", "postgresql+psycopg://divert:divert@127.0.0.1:5432/postgres"
)
DIVERT = str(Path(sys.executable).with_name("divert"))
OUT = ROOT / "var" / "bench" / "cluster.json"
PASSWORD = "bench-secret-1"
TENANT = "acme"


def did(index: int) -> str:
    return f"+3902{10_000_000 + index}"


def populate(url: str, numbers: int, subscribers: int) -> None:
    """A tenant, `subscribers` subscribers, `numbers` numbers with a busy
    forward each: the first number through the CLI, the others copies of
    its rows in SQL (the CLI takes a second a number)."""
    run = [DIVERT, "--portal", url]
    steps = [
        ["tenant", "add", TENANT, "--region", "IT"],
        ["trunk", "add", "pbx", "--tenant", TENANT, "--address", "127.0.0.250:5060"],
        *(
            ["subscriber", "add", f"user{i}", "--tenant", TENANT, "--password", PASSWORD]
            for i in range(subscribers)
        ),
        ["number", "add", did(0), "--tenant", TENANT, "--trunk", "pbx"],
        ["forward", "add", did(0), "--when", "busy", "--to", "+393470000000"],
    ]
    for step in steps:
        subprocess.run([*run, *step], check=True, stdout=subprocess.DEVNULL)
    engine = open_portal(url)
    with engine.begin() as connection:
        number = dict(
            connection.execute(text("SELECT * FROM numbers WHERE e164 = :e"), {"e": did(0)})
            .mappings()
            .one()
        )
        forward = dict(
            connection.execute(
                text("SELECT * FROM forwards WHERE number_id = :n"), {"n": number["id"]}
            )
            .mappings()
            .one()
        )
        _copies(connection, "numbers", number, [{"e164": did(i)} for i in range(1, numbers)])
        ids = dict(connection.execute(text("SELECT e164, id FROM numbers")).all())
        rows = [{"number_id": ids[did(i)]} for i in range(1, numbers)]
        _copies(connection, "forwards", forward, rows)
    engine.dispose()


def _copies(
    connection: Connection, table: str, template: dict[str, Any], changes: list[dict[str, Any]]
) -> None:
    """Insert a copy of the row `template` (its id left to the database)
    for each of `changes`, with those columns changed."""
    if not changes:
        return
    rows = [{**{k: v for k, v in template.items() if k != "id"}, **change} for change in changes]
    columns = ", ".join(rows[0])
    values = ", ".join(f":{column}" for column in rows[0])
    connection.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({values})"), rows)


class Cluster:
    """Three `divert run` nodes, each with the others as --peer."""

    def __init__(self, url: str, net: str, work: Path) -> None:
        self.addresses = [f"{net}.{i}:5060" for i in (1, 2, 3)]
        self.states = [work / f"node{i}" for i in (1, 2, 3)]
        self.processes: list[subprocess.Popen[bytes]] = []
        for listen, state in zip(self.addresses, self.states, strict=True):
            peers = [o for p in self.addresses if p != listen for o in ("--peer", p)]
            command = [DIVERT, "--portal", url, "run", "--listen", listen, "--metrics", ""]
            log = open(work / f"{state.name}.log", "wb")  # noqa: SIM115 - the child's
            self.processes.append(
                subprocess.Popen(
                    [*command, "--state-dir", str(state), *peers],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def kamcmd(self, index: int, *args: str) -> str:
        socket_path = f"unix:{self.states[index] / 'run' / 'kamailio_ctl'}"
        return subprocess.run(
            ["kamcmd", "-s", socket_path, *args], capture_output=True, text=True, timeout=10
        ).stdout

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for index in range(3):
            while time.monotonic() < deadline:
                if self.processes[index].poll() is not None:
                    raise SystemExit(f"node {index + 1} exited: see {self.states[index]}.log")
                listing = self.kamcmd(index, "dmq.list_nodes")
                if listing.count("status: active") >= 3:
                    break
                time.sleep(0.5)
            else:
                raise SystemExit(f"node {index + 1} did not see its peers in {timeout} s")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def propagation(url: str, cluster: Cluster, numbers: int, changes: int) -> dict[str, object]:
    readers = [StoreReader(state, cache_size=10_000) for state in cluster.states]
    engine = open_portal(url)
    per_node: list[list[float]] = [[], [], []]
    rng = random.Random(7)
    try:
        for change in range(changes):
            number = rng.randrange(numbers)
            target = f"+39347{1_000_000 + change}"
            for reader in readers:
                reader.table(did(number))  # cached before the change, as in a busy node
            with engine.begin() as connection:
                connection.execute(
                    text(
                        "UPDATE forwards SET dest_value = :to WHERE number_id = "
                        "(SELECT id FROM numbers WHERE e164 = :e) AND condition = 'busy'"
                    ),
                    {"to": target, "e": did(number)},
                )
            committed = time.perf_counter()
            waiting = {0, 1, 2}
            deadline = committed + 10
            while waiting and time.perf_counter() < deadline:
                for index in sorted(waiting):
                    table = readers[index].table(did(number))
                    if table is not None and any(r.destination.key == target for r in table.rules):
                        per_node[index].append((time.perf_counter() - committed) * 1000)
                        waiting.discard(index)
                time.sleep(0.001)  # the figures' resolution; a tighter loop takes a core
            if waiting:
                raise SystemExit(f"change {change} not on node(s) {sorted(waiting)} after 10 s")
    finally:
        for reader in readers:
            reader.close()
        engine.dispose()
    every = [value for values in per_node for value in values]
    return {
        "changes": changes,
        "per_node_ms": [_summary(values) for values in per_node],
        "all_nodes_ms": _summary(every),
        "last_node_ms": _summary([max(trio) for trio in zip(*per_node, strict=True)]),
    }


def register(node: str, source: str, user: str) -> float:
    """REGISTER `user` at `node` with digest authentication; the
    perf_counter time its 200 OK arrived."""
    host, port = node.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.bind((source, 0))
    local = sock.getsockname()[1]
    call_id = f"bench-{uuid.uuid4().hex}"
    try:
        authorization = ""
        for cseq in (1, 2):
            request = "\r\n".join(
                [
                    f"REGISTER sip:{TENANT} SIP/2.0",
                    f"Via: SIP/2.0/UDP {source}:{local};rport;branch=z9hG4bK-{uuid.uuid4().hex}",
                    f"From: <sip:{user}@{TENANT}>;tag=bench{cseq}",
                    f"To: <sip:{user}@{TENANT}>",
                    f"Call-ID: {call_id}",
                    f"CSeq: {cseq} REGISTER",
                    f"Contact: <sip:{user}@{source}:{local}>",
                    "Expires: 600",
                    "Max-Forwards: 70",
                    *([authorization] if authorization else []),
                    "Content-Length: 0",
                    "",
                    "",
                ]
            )
            sock.sendto(request.encode(), (host, int(port)))
            while True:
                reply = sock.recv(65535).decode(errors="replace")
                status = int(reply.split(" ", 2)[1])
                if status >= 200:
                    break
            if status == 200:
                return time.perf_counter()
            if status != 401 or cseq == 2:
                raise SystemExit(f"REGISTER {user}: {reply.splitlines()[0]}")
            authorization = _authorization(reply, user)
    finally:
        sock.close()
    raise AssertionError("unreachable")


def _authorization(challenge: str, user: str) -> str:
    header = next(
        line for line in challenge.splitlines() if line.lower().startswith("www-authenticate:")
    )
    realm = re.search(r'realm="([^"]*)"', header)
    nonce = re.search(r'nonce="([^"]*)"', header)
    assert realm and nonce, header
    uri = f"sip:{TENANT}"
    ha1 = hashlib.md5(f"{user}:{realm[1]}:{PASSWORD}".encode()).hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce[1]}:{ha2}".encode()).hexdigest()
    return (
        f'Authorization: Digest username="{user}", realm="{realm[1]}", '
        f'nonce="{nonce[1]}", uri="{uri}", response="{response}", algorithm=MD5'
    )


def replication(cluster: Cluster, net: str, count: int) -> dict[str, object]:
    """Each subscriber's phone on an address of its own (NET.100 on): the
    node's flood protection takes 30 requests in 2 s from one stranger."""
    per_node: list[list[float]] = [[], []]
    for index in range(count):
        user = f"user{index}"
        answered = register(cluster.addresses[0], f"{net}.{100 + index}", user)
        waiting = {1, 2}
        deadline = answered + 10
        while waiting and time.perf_counter() < deadline:
            for node in sorted(waiting):
                if "Contact" in cluster.kamcmd(node, "ul.lookup", "location", f"{user}@{TENANT}"):
                    per_node[node - 1].append((time.perf_counter() - answered) * 1000)
                    waiting.discard(node)
        if waiting:
            raise SystemExit(f"{user}'s registration not on node(s) {sorted(waiting)} after 10 s")
    return {
        "registrations": count,
        "node2_ms": _summary(per_node[0]),
        "node3_ms": _summary(per_node[1]),
    }


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
        "max": round(ordered[-1], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--registrations", type=int, default=50)
    parser.add_argument("--net", default="127.0.3", help="loopback prefix of the nodes")
    args = parser.parse_args()
    if not 1 <= args.numbers <= 1_000_000 or not 1 <= args.changes <= 10_000:
        raise SystemExit("--numbers 1-1000000, --changes 1-10000")
    if not 1 <= args.registrations <= 150:
        raise SystemExit("--registrations 1-150")
    name = f"divert_cluster_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN).set(database=name).render_as_string(hide_password=False)
    cluster: Cluster | None = None
    results: dict[str, object] = {"numbers": args.numbers, "net": args.net}
    try:
        engine = open_portal(url)
        upgrade(engine)
        engine.dispose()
        started = time.monotonic()
        populate(url, args.numbers, args.registrations)
        results["populate_s"] = round(time.monotonic() - started, 1)
        with tempfile.TemporaryDirectory(prefix="divert-cluster-bench-") as work:
            cluster = Cluster(url, args.net, Path(work))
            started = time.monotonic()
            cluster.wait_ready()
            results["cluster_up_s"] = round(time.monotonic() - started, 1)
            print(f"  three nodes up and joined in {results['cluster_up_s']} s", flush=True)
            results["propagation"] = propagation(url, cluster, args.numbers, args.changes)
            print(f"  propagation: {results['propagation']}", flush=True)
            results["replication"] = replication(cluster, args.net, args.registrations)
            print(f"  registration replication: {results['replication']}", flush=True)
            cluster.stop()
            cluster = None
    finally:
        if cluster is not None:
            cluster.stop()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    report(results)
    return 0


def report(results: dict[str, object]) -> None:
    propagation = results["propagation"]
    replication = results["replication"]
    assert isinstance(propagation, dict) and isinstance(replication, dict)

    def row(label: str, figures: dict[str, float]) -> str:
        return f"| {label} | {figures['p50']} | {figures['p99']} | {figures['max']} |"

    lines = [
        "",
        f"three nodes, one PostgreSQL portal of {results['numbers']} numbers",
        "| measure (ms) | p50 | p99 | max |",
        "|---|---|---|---|",
        *(
            row(f"portal commit to node {i + 1}'s store", figures)
            for i, figures in enumerate(propagation["per_node_ms"])
        ),
        row("portal commit to the last of the three", propagation["last_node_ms"]),
        row("REGISTER's 200 at node 1 to node 2's usrloc", replication["node2_ms"]),
        row("REGISTER's 200 at node 1 to node 3's usrloc", replication["node3_ms"]),
        f"(figures in {OUT.relative_to(ROOT)})",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    sys.exit(main())
