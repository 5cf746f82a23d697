"""Benchmark of the portal API (issue 18): reads and writes per second
against a PostgreSQL portal of 100,000 numbers.

    .venv/bin/python bench/api_bench.py [--numbers 100000] [--seconds 10]
        [--clients 8] [--listen 127.0.0.1:8199]

Makes a PostgreSQL portal of its own (a database on the machine's cluster,
dropped at the end): one tenant, N numbers on one trunk, each with a busy
forward (bench/cluster_bench.py's populate).  Starts `divert api` (one
uvicorn process, as `divert api` runs) and, with a tenant token, runs each
workload for `--seconds` with `--clients` keep-alive connections, each
request to a number drawn uniformly from all N:

- read, a number's forwards: ``GET /api/v1/forwards?number=N``;
- read, what a call would do: ``GET /api/v1/explain?number=N&after=busy``;
- write, change a forward: ``PATCH /api/v1/forwards/ID`` (a new destination);
- write, add then delete a forward: ``POST /api/v1/forwards`` + ``DELETE``.

Prints requests per second, p50 / p99 latency and errors per workload, and
writes var/bench/api.json.  Loopback only; bounded in time; the API
process is stopped by its PID.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cluster_bench import ADMIN, DIVERT, TENANT, did, populate  # noqa: E402  (bench/, sys.path[0])

from divert.db import open_portal  # noqa: E402
from divert.schema.migrate import upgrade  # noqa: E402

OUT = ROOT / "var" / "bench" / "api.json"

Request = Callable[[http.client.HTTPConnection, random.Random], int]


def workloads(numbers: int, forward_ids: list[int], headers: dict[str, str]) -> dict[str, Request]:
    def ask(
        connection: http.client.HTTPConnection, method: str, path: str, body: object = None
    ) -> tuple[int, bytes]:
        payload = None if body is None else json.dumps(body)
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()

    def forwards(connection: http.client.HTTPConnection, rng: random.Random) -> int:
        number = did(rng.randrange(numbers)).replace("+", "%2B")
        return ask(connection, "GET", f"/api/v1/forwards?number={number}")[0]

    def explain(connection: http.client.HTTPConnection, rng: random.Random) -> int:
        number = did(rng.randrange(numbers)).replace("+", "%2B")
        return ask(connection, "GET", f"/api/v1/explain?number={number}&after=busy")[0]

    def change(connection: http.client.HTTPConnection, rng: random.Random) -> int:
        forward = rng.choice(forward_ids)
        target = f"+39347{rng.randrange(10**7):07d}"
        return ask(connection, "PATCH", f"/api/v1/forwards/{forward}", {"to": target})[0]

    def add_delete(connection: http.client.HTTPConnection, rng: random.Random) -> int:
        body = {"number": did(rng.randrange(numbers)), "when": "no-answer", "to": "+393471234567"}
        status, data = ask(connection, "POST", "/api/v1/forwards", body)
        if status != 201:
            return status
        return ask(connection, "DELETE", f"/api/v1/forwards/{json.loads(data)['id']}")[0]

    return {
        "read: a number's forwards": forwards,
        "read: explain a call": explain,
        "write: change a forward": change,
        "write: add + delete a forward": add_delete,
    }


def run(address: str, request: Request, clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads, each with one keep-alive connection, for `seconds`."""
    host, port = address.split(":")
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        mine: list[float] = []
        failed = 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                status = request(connection, rng)
            except (OSError, http.client.HTTPException):
                status = 0
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
            mine.append((time.perf_counter() - started) * 1000)
            failed += not 200 <= status < 300
        connection.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    elapsed = time.monotonic() - started
    ordered = sorted(latencies) or [0.0]
    return {
        "requests": len(latencies),
        "per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1),
        "errors": errors[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--listen", default="127.0.0.1:8199")
    args = parser.parse_args()
    if not 1 <= args.numbers <= 1_000_000 or not 1 <= args.seconds <= 120:
        raise SystemExit("--numbers 1-1000000, --seconds 1-120")
    if not 1 <= args.clients <= 64:
        raise SystemExit("--clients 1-64")
    name = f"divert_api_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN).set(database=name).render_as_string(hide_password=False)
    server: subprocess.Popen[bytes] | None = None
    results: dict[str, object] = {"numbers": args.numbers, "clients": args.clients}
    try:
        engine = open_portal(url)
        upgrade(engine)
        started = time.monotonic()
        populate(url, args.numbers, 0)
        results["populate_s"] = round(time.monotonic() - started, 1)
        with engine.connect() as connection:
            forward_ids = list(connection.scalars(text("SELECT id FROM forwards")))
        engine.dispose()
        token = subprocess.run(
            [DIVERT, "--portal", url, "token", "add", "--tenant", TENANT],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[-1]
        server = subprocess.Popen(
            [DIVERT, "--portal", url, "api", "--listen", args.listen],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(args.listen, server)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for label, request in workloads(args.numbers, forward_ids, headers).items():
            figures = run(args.listen, request, args.clients, args.seconds)
            results[label] = figures
            print(f"  {label}: {figures}", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    report(results)
    return 0


def _wait_for(address: str, server: subprocess.Popen[bytes]) -> None:
    host, port = address.split(":")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"divert api exited with {server.returncode}")
        try:
            connection = http.client.HTTPConnection(host, int(port), timeout=2)
            connection.request("GET", "/api/openapi.json")
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"divert api did not answer on {address} in 30 s")


def report(results: dict[str, object]) -> None:
    print(
        f"\nportal API, PostgreSQL portal of {results['numbers']} numbers, "
        f"{results['clients']} clients, one `divert api` process ({os.cpu_count()} CPUs)"
    )
    print("| workload | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|")
    for label, figures in results.items():
        if isinstance(figures, dict):
            print(
                f"| {label} | {figures['per_second']} | {figures['p50_ms']} | "
                f"{figures['p99_ms']} | {figures['errors']} |"
            )
    print(f"(figures in {OUT.relative_to(ROOT)})")


if __name__ == "__main__":
    sys.exit(main())
