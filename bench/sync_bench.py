"""Benchmark of the sync worker and the store (issue 3's targets).

    .venv/bin/python bench/sync_bench.py [--numbers 1000000] [--changes 1000]

Builds a PostgreSQL portal of its own (a database it creates and drops on the
machine's cluster) with N numbers, each with a busy forward and every tenth
with a no-answer forward to voicemail, then measures:

- full sync: `divert sync --once` from scratch, wall time and peak RSS;
- store lookups on that store: cold (every key a miss) and cached, in us;
- reader memory: RSS growth of a reader doing 200,000 distinct lookups
  through a 10,000-entry cache;
- propagation: a running `divert sync` worker, 1,000 single-forward
  commits, time from commit to the change being visible in a reader.

Prints a table and writes var/bench/sync.json.  Loopback only; every loop is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, text
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
TENANTS = 10
SUBSCRIBERS_PER_TENANT = 100


def did(index: int) -> str:
    return f"+3902{10_000_000 + index}"


def mobile(index: int) -> str:
    return f"+39335{1_000_000 + index}"


def populate(url: str, count: int) -> None:
    """Fill the portal with COPY (journal triggers off: a full sync reads tables)."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as connection:
        tables = ("tenants", "trunks", "subscribers", "numbers", "forwards")
        for table in tables:
            connection.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        with connection.cursor() as cursor:
            for t in range(1, TENANTS + 1):
                cursor.execute(
                    "INSERT INTO tenants (id, name, region, domain, voicemail_uri) "
                    "VALUES (%s, %s, 'IT', %s, 'sip:{mailbox}@127.0.0.1:5090')",
                    (t, f"t{t}", f"t{t}.example"),
                )
                cursor.execute(
                    "INSERT INTO trunks (id, tenant_id, name, addresses, emergency) "
                    "VALUES (%s, %s, 'pbx', %s, %s)",
                    (t, t, f"127.0.1.{t}:5060", mobile(9_000_000 + t)),
                )
            with cursor.copy(
                "COPY subscribers (id, tenant_id, username, ha1, extension, display_name) "
                "FROM STDIN"
            ) as copy:
                for s in range(TENANTS * SUBSCRIBERS_PER_TENANT):
                    tenant = s % TENANTS + 1
                    copy.write_row(
                        (s + 1, tenant, f"user{s}", "0" * 32, f"{200 + s // TENANTS}", "")
                    )
            with cursor.copy(
                "COPY numbers (id, e164, tenant_id, trunk_id, subscriber_id) FROM STDIN"
            ) as copy:
                subscribers = TENANTS * SUBSCRIBERS_PER_TENANT
                for n in range(count):
                    tenant = n % TENANTS + 1
                    if n < subscribers:
                        copy.write_row((n + 1, did(n), n % TENANTS + 1, None, n + 1))
                    else:
                        copy.write_row((n + 1, did(n), tenant, tenant, None))
            with cursor.copy(
                "COPY forwards (tenant_id, number_id, condition, callers, dest_kind, dest_value, "
                "ring_timeout, position) FROM STDIN"
            ) as copy:
                for n in range(count):
                    tenant = n % TENANTS + 1
                    copy.write_row((tenant, n + 1, "busy", "any", "number", mobile(n), None, 0))
                    if n % 10 == 0:
                        copy.write_row((tenant, n + 1, "no-answer", "any", "voicemail", "", 20, 0))
        for table in tables:
            connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
            connection.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        connection.execute("ANALYZE")


def full_sync(url: str, state: Path) -> tuple[float, float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [DIVERT, "--portal", url, "sync", "--once", "--state-dir", str(state)],
        stderr=subprocess.PIPE,
        text=True,
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"full sync failed: {stderr.strip().splitlines()[-1:]}")
    return seconds, usage.ru_maxrss / 1024


def lookups(state: Path, count: int) -> dict[str, float]:
    keys = [did(random.randrange(count)) for _ in range(20_000)]
    cold = StoreReader(state, cache_size=len(keys) + 1)
    cold_times = []
    for key in dict.fromkeys(keys):
        started = time.perf_counter_ns()
        cold.table(key)
        cold_times.append(time.perf_counter_ns() - started)
    warm = StoreReader(state, cache_size=10_000)
    hot = list(dict.fromkeys(keys))[:1_000]
    for key in hot:
        warm.table(key)
    per_call = []
    for key in hot * 20:
        started = time.perf_counter_ns()
        warm.table(key)
        per_call.append(time.perf_counter_ns() - started)
    rounds = []
    for _ in range(20):
        started = time.perf_counter_ns()
        for key in hot:
            warm.table(key)
        rounds.append((time.perf_counter_ns() - started) / len(hot))
    assert warm.misses == len(hot), "the cached loop missed"
    return {
        "cold_median_us": statistics.median(cold_times) / 1000,
        "cold_p99_us": _p99(cold_times) / 1000,
        "cached_median_us": statistics.median(per_call) / 1000,
        "cached_p99_us": _p99(per_call) / 1000,
        "cached_loop_average_us": statistics.median(rounds) / 1000,
    }


def reader_memory(state: Path, count: int) -> dict[str, float]:
    """RSS of a fresh process before and after 200,000 distinct lookups."""
    script = (
        "import random, resource, sys\n"
        "from divert.kemi.store.reader import StoreReader\n"
        f"reader = StoreReader({str(state)!r}, cache_size=10_000)\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20\n"
        f"keys = ['+3902' + str(10_000_000 + random.randrange({count})) for _ in range(200_000)]\n"
        "for key in keys[:20_000]: reader.table(key)\n"
        "after_20k = rss()\n"
        "for key in keys[20_000:]: reader.table(key)\n"
        "print(after_20k, rss(), reader.cached)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout.split()
    return {
        "rss_after_20k_mb": float(out[0]),
        "rss_after_200k_mb": float(out[1]),
        "cached_entries": float(out[2]),
    }


def propagation(url: str, state: Path, count: int, changes: int) -> dict[str, float]:
    worker = subprocess.Popen(
        [DIVERT, "--portal", url, "sync", "--state-dir", str(state), "--poll", "1"],
        stderr=subprocess.DEVNULL,
    )
    reader = StoreReader(state, cache_size=10_000)
    engine = open_portal(url)
    latencies = []
    try:
        time.sleep(2)
        rng = random.Random(7)
        for change in range(changes):
            number = rng.randrange(count)
            target = f"+39347{1_000_000 + change}"
            reader.table(did(number))  # cached before the change, as in a busy node
            with engine.begin() as connection:
                connection.execute(
                    text(
                        "UPDATE forwards SET dest_value = :to "
                        "WHERE number_id = :n AND condition = 'busy'"
                    ),
                    {"to": target, "n": number + 1},
                )
            committed = time.perf_counter()
            deadline = committed + 10
            while time.perf_counter() < deadline:
                table = reader.table(did(number))
                if table is not None and any(r.destination.key == target for r in table.rules):
                    break
                time.sleep(0.0002)
            else:
                raise SystemExit(f"change {change} not visible after 10 s")
            latencies.append((time.perf_counter() - committed) * 1000)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        engine.dispose()
    return {
        "changes": float(len(latencies)),
        "p50_ms": statistics.median(latencies),
        "p99_ms": _p99(latencies),
        "max_ms": max(latencies),
    }


def _p99(values: list[float] | list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numbers", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=1_000)
    args = parser.parse_args()
    if not 1_000 <= args.numbers <= 2_000_000 or not 1 <= args.changes <= 5_000:
        parser.error("--numbers 1000..2000000, --changes 1..5000")
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    database = f"divert_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    url = make_url(ADMIN).set(database=database).render_as_string(hide_password=False)
    results: dict[str, object] = {
        "machine": f"{os.cpu_count()} cores, {_cpu()}, Python {platform.python_version()}",
        "numbers": args.numbers,
    }
    try:
        engine = open_portal(url)
        upgrade(engine)
        engine.dispose()
        started = time.perf_counter()
        populate(url, args.numbers)
        results["populate_s"] = time.perf_counter() - started
        with tempfile.TemporaryDirectory(prefix="divert-bench-") as scratch:
            state = Path(scratch) / "state"
            seconds, rss = full_sync(url, state)
            results["full_sync"] = {"seconds": seconds, "peak_rss_mb": rss}
            results["lookup"] = lookups(state, args.numbers)
            results["reader_memory"] = reader_memory(state, args.numbers)
            results["propagation"] = propagation(url, state, args.numbers, args.changes)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
    report(results)
    out = ROOT / "var" / "bench" / "sync.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out.relative_to(ROOT)}")
    return 0


def report(results: dict[str, object]) -> None:
    full = results["full_sync"]
    look = results["lookup"]
    memory = results["reader_memory"]
    prop = results["propagation"]
    assert isinstance(full, dict) and isinstance(look, dict)
    assert isinstance(memory, dict) and isinstance(prop, dict)
    rows = [
        (f"full sync of {results['numbers']} numbers", f"{full['seconds']:.1f} s", "<= 30 s"),
        ("  peak RSS of the worker", f"{full['peak_rss_mb']:.0f} MB", ""),
        (
            "propagation p50 / p99",
            f"{prop['p50_ms']:.1f} / {prop['p99_ms']:.1f} ms",
            "p99 <= 500 ms",
        ),
        (
            "cold lookup median / p99",
            f"{look['cold_median_us']:.1f} / {look['cold_p99_us']:.1f} us",
            "<= 50 us",
        ),
        (
            "cached lookup median / p99",
            f"{look['cached_median_us']:.2f} / {look['cached_p99_us']:.2f} us",
            "<= 2 us",
        ),
        ("cached lookup, loop average", f"{look['cached_loop_average_us']:.2f} us", ""),
        (
            "reader RSS after 20k / 200k keys",
            f"{memory['rss_after_20k_mb']:.1f} / {memory['rss_after_200k_mb']:.1f} MB",
            "bounded",
        ),
    ]
    print(f"machine: {results['machine']}")
    buffer = io.StringIO()
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        buffer.write(f"{name.ljust(width)}  {value.ljust(22)}  {target}\n")
    print(buffer.getvalue(), end="")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup in main()


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.exit(main())
