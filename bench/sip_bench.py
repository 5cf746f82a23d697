"""End-to-end benchmark: divert against hand-written native kamailio.cfg files.

    .venv/bin/python bench/sip_bench.py [--json FILE] [--step-seconds 4]
        [--net 127.0.1] [--quick] [--parts main,cold,scale] [--large 1000000]

Four Kamailios run at once on loopback, each with the same number of SIP
workers, in front of the same sipp peers (addresses: NET.x, `--net`):

- divert: `divert run` on NET.1:5060 with a SQLite portal of 100,000
  numbers (every even one forwards unconditionally to a mobile number, every
  odd one rings a PBX trunk and forwards on busy);
- equivalent: bench/baseline/equivalent.cfg on NET.4:5060, native routes
  that put the same messages on the wire as divert (trusted-source check,
  signed Record-Route and in-dialog check, dispatcher with probing, 181,
  Diversion per branch), htables of the same numbers loaded from files;
- baseline: bench/baseline/kamailio.cfg on NET.2:5060, the minimal native
  routes (relay, Diversion on busy), the same htables;
- twin: the baseline's cfg on NET.3:5060 routing with bench/baseline/twin.py,
  its routes in Python KEMI (a control, in the CPU-per-call pass only);
- bare: divert on NET.7:5060 without the checks its native routes make and
  the equivalent does not (bench/bare_node.py), in a CPU-per-call pass of
  its own with divert and the equivalent: what those checks cost.

Peers: the carrier NET.11:5080 answers every call; the PBX NET.20:5060
answers 486 Busy Here; callers send from the carrier's address (divert
trusts carriers by address), to 10,000 random numbers of the case from an
injection file.

Throughput: for each case, a rising rate ladder; at each rate divert, the
equivalent, then the baseline, for `step_seconds` each; a rate passes with
no failed call, retransmissions under 1% of calls, and the calls done in
time.  The highest rate reached before a rate fails twice in a row, then
5% and 10% above it (REFINE_STEPS) until one fails twice: a ladder's
figure.  LADDERS ladders per case, the repeats from two steps below the
lowest limit the first found; each figure the median of the ladders', each
ratio the median of the ladders' own (paired) ratios.  Under a cgroup, each
step also counts how often the Kamailio ran out of its CPU quota: often at
a system's limit when the budget set it, hardly ever when the machine did
(the sipp peers share its cores).
Warm-up: before anything is measured, every system takes the calls of each
case measured at WARM_RATE for WARM_SECONDS, unconfined, then all rest for
tm's wait time.  A Kamailio's shared memory is touched page by page the
first time its allocator hands it out, and the kernel zeroes each page
then: a node still growing into the transactions of a new rate paid that
(about 180,000 page faults in the warm-up) where a running node long has.
The live transactions of a rate are those of tm's wait time (5 s), so
WARM_SECONDS exceeds it, and WARM_RATE every ladder's limit so far.
Latency: request route execution times from Kamailio's own
`latency_cfg_log`, turned on at run time for one fixed-rate pass per case.
CPU per call: the CPU time the Kamailio processes of each system used (the
scheduler's count in /proc, in ns) over fixed-rate passes, every system
called at once in each, divided by the calls; ratios the median of the
passes' own: steadier than the ladder on a shared machine.

Cold and warm (divert): passes where every call dials a number no worker
has dialled since the node started (numbers set aside for it, never in
another pass) against passes dialling ten numbers every worker has cached.

Scale: two more divert nodes, NET.5 with 1,000 numbers and NET.6 with
1,000,000 (`--large`), started for this pass only, callers dialling
uniformly over all the numbers of each (the unconditional ones); CPU per
call of each, the time the large node takes from start until it routes,
and its memory (store on disk, PSS of its Kamailio, Kamailio's shared
memory in use, the sync worker and `divert run`).

All run with the same memory manager (divert's, TLSF) and, where a cgroup
can be written (bench/cpu_budget.py), the same CPU budget in the ladder:
20% of one core each.  The latency, CPU, cold/warm and scale passes run
unconfined, well below that.

Every sipp run is bounded by call count and timeout; every process started
is stopped by its PID.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bare_node import bare_config, checks
from cpu_budget import BudgetUnavailable, CpuBudget

from divert.kemi.store.view import StoreView
from divert.node import CONFIG, MEMORY_MANAGER

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DIVERT = str(Path(sys.executable).with_name("divert"))

NUMBERS = 100_000
CALLED = 10_000  # distinct numbers each case's callers dial
CHILDREN = 4  # SIP worker processes, every system
SHM_MB = 512  # shared memory, every system (the baselines' htables live there)
LARGE_SHM_MB = 1024  # the large divert node's (its native plans live there)
SMALL = 1_000  # numbers of the scale pass's small node
LARGE = 1_000_000  # and of its large one (--large)
NODE_KEY = "5eed" * 16  # the yardsticks' DIVERT_NODE_KEY: 64 hex characters, signs dialogs
WARM_NUMBERS = 10  # the warm pass dials these, cached by every worker
# Addresses: NET.<host>, NET from --net (configure)
HOSTS = {
    "divert": 1,
    "baseline": 2,
    "twin": 3,
    "equivalent": 4,
    "small": 5,
    "large": 6,
    "bare": 7,
    "carrier": 11,
    "pbx": 20,
    "probe": 99,
}
NET = "127.0.1"
NODES: dict[str, str] = {}  # system -> IP:5060
CARRIER = PBX = CALLER_IP = PROBE_IP = ""
LADDER_SYSTEMS = ("divert", "equivalent", "baseline")
CPU_SYSTEMS = ("divert", "equivalent", "baseline", "twin")
# the checks' pass (part "main"): the bare node between divert and the equivalent
CHECKS_SYSTEMS = ("divert", "bare", "equivalent")
# In the ladder each Kamailio (all its processes) gets CPU_SHARE of one core,
# the same for all: the rate each sustains is then set by its cost per
# call, at rates the sipp peers drive with ease.  Rates rise by about 15%
# from what divert's CPU per call (measured unconfined at CPU_RATE, where a
# call costs 3 to 5 times what it does near the limit: processes wake for
# each message instead of finding several) says the share sustains, so the
# ladder starts below divert's limit on a fast machine and a slow one alike.
CPU_SHARE = 0.2
LADDER_STEP = 1.15
# then, above each system's last rate passed, these finer steps (the first
# that fails twice ends them)
REFINE_STEPS = (1.05, 1.10)
LADDER_TOP = 3200
LADDER_RATES = 0  # at most this many rates (0: no limit; --quick: 4)
# The ladder is run this many times per case (--quick: once) and each
# figure is the median: on a shared machine one ladder's outcome near the
# limit turns on a handful of failed calls, and two runs of the same commit
# gave ratios 0.79 and 0.91.  The repeats start two steps below the lowest
# limit the first found, so they cost about half a ladder each.
LADDERS = 3
# Without a cgroup to write, all run unconfined: the ladder then finds the
# machine's limit (sipp and Kamailio sharing the cores) more than each's.
UNCONFINED_LADDER = (500, 1000, 1400, 1800, 2200, 2600, 3000, 3500, 4000, 4500, 5000)
LATENCY_RATE = 200
# CPU per call and route latency are measured unconfined: near a budget,
# throttling brings retransmissions, whose handling would count as cost.
CPU_RATE = 400
# the warm-up (module docstring): above every limit a ladder has found,
# longer than tm's wait time; --quick: none
WARM_RATE = 3000
WARM_SECONDS = 7
TM_WAIT_SECONDS = 5  # tm's wait_timer: how long a transaction outlives its call
# rounds of each CPU-per-call pass, the median taken: one 4 s round differs
# from the next by up to 30% on a shared machine
CPU_ROUNDS = 5
TICKS = os.sysconf("SC_CLK_TCK")
CASES = ("unconditional", "busy")
PARTS = ("main", "cold", "scale")
_ports = itertools.count(10_000)  # each sipp caller its own local port
TRACE = False  # sipp peers and callers log every message (checking the wire)


def configure(net: str) -> None:
    """Every node's and peer's address on the loopback prefix `net`."""
    global NET, CARRIER, PBX, CALLER_IP, PROBE_IP
    parts = net.split(".")
    if len(parts) != 3 or parts[0] != "127" or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise SystemExit(f"--net {net!r}: three octets of loopback, e.g. 127.0.1")
    NET = net
    for name in ("divert", "baseline", "twin", "equivalent", "small", "large", "bare"):
        NODES[name] = f"{net}.{HOSTS[name]}:5060"
    CARRIER = f"{net}.{HOSTS['carrier']}:5080"
    PBX = f"{net}.{HOSTS['pbx']}:5060"
    CALLER_IP = f"{net}.{HOSTS['carrier']}"  # the carrier's address: trusted by divert
    PROBE_IP = f"{net}.{HOSTS['probe']}"


configure(NET)


def number(index: int) -> str:
    return f"+3902{20_000_000 + index}"


def mobile(index: int) -> str:
    return f"+39335{1_000_000 + index}"


# -- the systems ----------------------------------------------------------------------


def seed_portal(url: str, numbers: int = NUMBERS) -> None:
    """A tenant, the PBX trunk, `numbers` numbers and one forward each (even:
    unconditional, odd: on busy), written in one transaction."""
    for args in (
        ("db", "upgrade"),
        ("tenant", "add", "bench", "--region", "IT"),
        ("trunk", "add", "pbx", "--tenant", "bench", "--address", PBX),
    ):
        subprocess.run([DIVERT, "--portal", url, *args], check=True, capture_output=True)
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    with db:
        tenant_id, trunk_id = db.execute("SELECT tenant_id, id FROM trunks").fetchone()
        db.executemany(
            "INSERT INTO numbers (id, e164, tenant_id, trunk_id) VALUES (?, ?, ?, ?)",
            ((i + 1, number(i), tenant_id, trunk_id) for i in range(numbers)),
        )
        db.executemany(
            "INSERT INTO forwards (tenant_id, number_id, condition, callers, dest_kind, "
            "dest_value, position, enabled) VALUES (?, ?, ?, 'any', 'number', ?, 0, 1)",
            (
                (tenant_id, i + 1, "always" if i % 2 == 0 else "busy", mobile(i))
                for i in range(numbers)
            ),
        )
    db.close()


def baseline_tables(folder: Path) -> None:
    """The baselines' htables as db_text files: always, busy, dest."""
    folder.mkdir(parents=True, exist_ok=True)
    header = "key_name(string) key_type(int) value_type(int) key_value(string) expires(int)\n"
    pbx = "sip\\:" + PBX.replace(":", "\\:")
    tables: dict[str, list[str]] = {"always": [], "busy": [], "dest": []}
    for i in range(NUMBERS):
        if i % 2 == 0:
            tables["always"].append(f"{number(i)}:0:0:{mobile(i)}:0\n")
        else:
            tables["busy"].append(f"{number(i)}:0:0:{mobile(i)}:0\n")
            tables["dest"].append(f"{number(i)}:0:0:{pbx}:0\n")
    for name, rows in tables.items():
        (folder / name).write_text(header + "".join(rows))


def equivalent_dispatcher(path: Path) -> None:
    """The equivalent's trunks as divert lists them: set 1 the carrier, set
    1001 the PBX (the portal's first trunk), both probed with OPTIONS."""
    path.write_text(f"1 sip:{CARRIER} 8 10\n1001 sip:{PBX} 8 0\n")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(name: str, command: list[str], work: Path, **env: str) -> Process:
    log = work / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=work
        )
    (work / f"{name}.pid").write_text(str(popen.pid))
    return Process(name, popen, log)


def start_divert(
    name: str,
    portal: str,
    state: Path,
    listen: str,
    work: Path,
    shm_mb: int = SHM_MB,
    divert: tuple[str, ...] = (DIVERT,),
) -> Process:
    """A divert node; `divert`: the command that stands for `divert`."""
    host = listen.split(":")[0]
    return start(
        name,
        [
            *divert,
            "--portal",
            portal,
            "run",
            "--listen",
            listen,
            "--state-dir",
            str(state),
            "--carrier",
            CARRIER,
            "--children",
            str(CHILDREN),
            "--shm",
            str(shm_mb),
            "--metrics",
            f"{host}:9161",
        ],
        work,  # `divert run` gives its Kamailio the key of its own state folder
    )


def options_ok(address: str) -> bool:
    host, port = address.split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.5)
        probe.bind((PROBE_IP, 0))
        local = probe.getsockname()[1]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {PROBE_IP}:{local};branch=z9hG4bK-{time.monotonic_ns()}\r\n"
            f"From: <sip:probe@{PROBE_IP}>;tag=1\r\nTo: <sip:probe@{PROBE_IP}>\r\n"
            f"Call-ID: bench-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 5\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        try:
            probe.sendto(request.encode(), (host, int(port)))
            return probe.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


def wait_until(what: str, check: object, timeout: float, process: Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise SystemExit(f"{process.name} exited:\n{process.log.read_text()[-3000:]}")
        if callable(check) and check():
            return
        time.sleep(0.2)
    raise SystemExit(f"{what} not ready in {timeout:.0f} s")


def kamcmd(socket_path: Path, *args: str) -> str:
    return subprocess.run(
        ["kamcmd", "-s", f"unix:{socket_path}", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout


def plans_ready(socket_path: Path) -> bool:
    """Has divert's plan timer brought its native plans up to the store
    (kemi/plan_sync.py): the two shared values equal?"""
    try:
        plans, store = (
            kamcmd(socket_path, "pv.shvGet", name).split("value:")[-1].strip()
            for name in ("divert_plans", "divert_store")
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return plans == store and plans not in ("", "filling", "none")


def trunks_up(socket_path: Path) -> bool:
    try:
        return kamcmd(socket_path, "dispatcher.list").count("FLAGS: AP") >= 2
    except (subprocess.SubprocessError, OSError):
        return False


# -- measuring ------------------------------------------------------------------------


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    seconds: float
    exit_code: int
    # the share of the periods the Kamailio ran in that ended with its CPU
    # quota spent (ladder steps under a cgroup only)
    throttled: float | None = None

    @property
    def passed(self) -> bool:
        return (
            self.exit_code == 0
            and self.failed == 0
            and self.successful == self.calls
            and self.retransmissions < 0.01 * self.calls
            and self.seconds <= 1.5 * self.calls / self.rate + 2
        )


def sipp_calls(work: Path, node: str, numbers: Path, rate: int, calls: int, tag: str) -> Step:
    stat = work / f"{tag}.csv"
    started = time.monotonic()
    result = subprocess.run(
        [
            "sipp",
            node,
            "-sf",
            str(BENCH / "sipp" / "uac.xml"),
            "-inf",
            str(numbers),
            "-i",
            CALLER_IP,
            "-p",
            str(next(_ports)),
            "-r",
            str(rate),
            "-m",
            str(calls),
            "-l",
            str(max(100, rate * 2)),
            "-timeout",
            # a step that runs past 1.5x its time has failed already
            f"{int(calls / rate * 1.5) + 3}s",
            "-timeout_error",
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(stat),
            "-fd",
            "1",
            *(["-trace_msg"] if TRACE else []),
        ],
        capture_output=True,
        timeout=calls / rate * 2 + 30,
        cwd=work,
    )
    seconds = time.monotonic() - started
    row = _last_row(stat)
    return Step(
        rate,
        calls,
        int(row.get("SuccessfulCall(C)", 0)),
        int(row.get("FailedCall(C)", 0)),
        int(row.get("Retransmissions(C)", 0)),
        round(seconds, 2),
        result.returncode,
    )


def _last_row(stat: Path) -> dict[str, str]:
    if not stat.exists():
        return {}
    with open(stat, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    return rows[-1] if rows else {}


def ladder_rates(divert_us: float | None) -> tuple[int, ...]:
    """The confined ladder: from the rate CPU_SHARE sustains at
    `divert_us` a call, up by LADDER_STEP, to LADDER_TOP."""
    return ladder_rates_from(CPU_SHARE / (divert_us or 500) * 1e6)


def ladder_rates_from(start: float) -> tuple[int, ...]:
    """From `start` (at least 50 calls/s) up by LADDER_STEP to LADDER_TOP."""
    rate = max(50.0, start)
    rates = []
    while rate <= LADDER_TOP:
        rates.append(int(round(rate, -1)))
        rate *= LADDER_STEP
    return tuple(rates)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _ratio(a: float | None, b: float | None, digits: int = 3) -> float | None:
    return round(a / b, digits) if a and b else None


def ladders(
    work: Path,
    case: str,
    injections: dict[str, Path],
    step_seconds: float,
    rates: tuple[int, ...],
    confined: dict[str, CpuBudget] | None = None,
) -> dict[str, Any]:
    """LADDERS ladders of `case`; each figure the median over them.

    A ratio is the median of the ladders' own ratios: each ladder measures
    divert and the yardsticks side by side in the same minutes, so the
    pairs share whatever the machine did meanwhile.  `confined`: each
    system's cgroup when they run under the CPU budget.
    """
    runs = [ladder(work, case, injections, step_seconds, rates, "", confined)]
    lowest = min(runs[0][f"max_rate_{name}"] for name in LADDER_SYSTEMS) or rates[0]
    again = ladder_rates_from(lowest / LADDER_STEP**2)
    for number in range(1, LADDERS):
        runs.append(
            ladder(work, case, injections, step_seconds, again, f"-again{number}", confined)
        )

    def median(key: str) -> Any:
        values = [run[key] for run in runs if run[key] is not None]
        return statistics.median(values) if values else None

    return {
        **{f"max_rate_{name}": round(median(f"max_rate_{name}")) for name in LADDER_SYSTEMS},
        **{f"{name}_capped": any(run[f"{name}_capped"] for run in runs) for name in LADDER_SYSTEMS},
        "ratio_equivalent": _round(median("ratio_equivalent")),
        "ratio_baseline": _round(median("ratio_baseline")),
        **{
            f"throttled_at_limit_{name}": _round(median(f"throttled_at_limit_{name}"))
            for name in LADDER_SYSTEMS
        },
        "ladders": runs,
    }


def ladder(
    work: Path,
    case: str,
    injections: dict[str, Path],
    step_seconds: float,
    rates: tuple[int, ...],
    tag: str,
    confined: dict[str, CpuBudget] | None = None,
) -> dict[str, Any]:
    """Rising rate, divert and the yardsticks in alternation at each rate.

    A rate that fails is tried once more before it counts: on a shared
    machine one hiccup (a burst of retransmissions) should not end a ladder.
    With `confined` (each system's cgroup, under the CPU budget), every
    step also says how often the Kamailio ran out of its quota: often at
    a system's limit, the budget set it; hardly ever, something else did
    (the sipp peers, the machine), and the ratio says less.
    """
    steps: dict[str, list[Step]] = {name: [] for name in LADDER_SYSTEMS}

    def passes(name: str, rate: int, kind: str) -> bool:
        """`rate` on `name`, tried once more if it fails."""
        for attempt in range(2):
            before = confined[name].throttling() if confined else (0, 0)
            step = sipp_calls(
                work,
                NODES[name],
                injections[case],
                rate,
                int(rate * step_seconds),
                f"{case}-{name}-{rate}{kind}{tag}-{attempt}",
            )
            if confined:
                after = confined[name].throttling()
                periods = after[0] - before[0]
                if periods > 0:
                    step.throttled = round((after[1] - before[1]) / periods, 3)
            steps[name].append(step)
            budget = "" if step.throttled is None else f"  throttled {step.throttled:.0%}"
            print(
                f"  {case:13} {name:10} {rate:5}/s  ok {step.successful}/{step.calls}  "
                f"retrans {step.retransmissions}  {step.seconds:.1f} s{budget}  "
                f"{'pass' if step.passed else 'FAIL'}{(kind + tag).replace('-', ' ')}",
                flush=True,
            )
            time.sleep(1.0)
            if step.passed:
                return True
        return False

    best = dict.fromkeys(LADDER_SYSTEMS, 0)
    done: set[str] = set()
    if LADDER_RATES:
        rates = rates[:LADDER_RATES]
    for rate in rates:
        for name in LADDER_SYSTEMS:
            if name in done:
                continue
            if passes(name, rate, ""):
                best[name] = rate
            else:
                done.add(name)
        if len(done) == len(LADDER_SYSTEMS):
            break
    # finer steps above each one's last rate passed: a 15% step is of the
    # order of the gaps measured
    coarse = dict(best)
    refining = [name for name in LADDER_SYSTEMS if name in done and best[name]]
    for factor in REFINE_STEPS:
        for name in list(refining):
            rate = int(round(coarse[name] * factor, -1))
            if passes(name, rate, "-finer"):
                best[name] = rate
            else:
                refining.remove(name)
    return {
        **{f"max_rate_{name}": best[name] for name in LADDER_SYSTEMS},
        **{f"{name}_capped": name not in done for name in LADDER_SYSTEMS},
        **{
            f"throttled_at_limit_{name}": _throttled_at_limit(steps[name], best[name])
            for name in LADDER_SYSTEMS
        },
        "ratio_equivalent": _ratio(best["divert"], best["equivalent"]),
        "ratio_baseline": _ratio(best["divert"], best["baseline"]),
        "steps": {name: [vars(s) for s in runs] for name, runs in steps.items()},
    }


def _throttled_at_limit(steps: list[Step], limit: int) -> float | None:
    """The median throttled share of the steps that failed above a
    system's `limit` (not a first try that failed below it and passed
    again); None without such a step or a budget."""
    shares = [
        step.throttled
        for step in steps
        if not step.passed and step.rate > limit and step.throttled is not None
    ]
    return round(statistics.median(shares), 3) if shares else None


def latency(
    work: Path,
    case: str,
    injections: dict[str, Path],
    logs: dict[str, Path],
    sockets: dict[str, Path],
    step_seconds: float,
) -> dict[str, Any]:
    """Request-route execution times at LATENCY_RATE, from Kamailio's log."""
    figures = {}
    for name in LADDER_SYSTEMS:
        offset = logs[name].stat().st_size
        kamcmd(sockets[name], "cfg.seti", "core", "latency_cfg_log", "2")
        try:
            sipp_calls(
                work,
                NODES[name],
                injections[case],
                LATENCY_RATE,
                int(LATENCY_RATE * step_seconds),
                f"latency-{case}-{name}",
            )
        finally:
            kamcmd(sockets[name], "cfg.seti", "core", "latency_cfg_log", "3")
        with open(logs[name], "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
        invites, every = [], []
        for line in text.splitlines():
            if "request-route executed in:" not in line:
                continue
            usec = int(line.rsplit(":", 1)[1].split()[0])
            every.append(usec)
            if " INVITE " in line.split("}", 1)[0]:
                invites.append(usec)
        figures[name] = {
            "invite_median_us": statistics.median(invites) if invites else None,
            "invite_p99_us": _p99(invites) if invites else None,
            "requests_median_us": statistics.median(every) if every else None,
            "requests_p99_us": _p99(every) if every else None,
            "samples": len(every),
        }
    return figures


def process_tree() -> tuple[dict[int, list[int]], dict[int, str]]:
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm, rest = (entry / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue  # gone meanwhile
        names[int(entry.name)] = comm.split("(", 1)[1]
        children.setdefault(int(rest.split()[1]), []).append(int(entry.name))
    return children, names


def kamailio_pids(root: int) -> list[int]:
    """The Kamailio processes in the process tree under PID `root`."""
    children, names = process_tree()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        if names.get(pid) == "kamailio":
            found.append(pid)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU time the processes `pids` (all their threads) have used so far.

    The scheduler's own count, in nanoseconds (/proc/PID/task/TID/schedstat),
    where the kernel keeps it: user and system time in /proc/PID/stat are
    sampled at the clock tick (10 ms), and a pass of 1,600 calls at some
    200 us each is only about 30 ticks, a noise of several percent.
    """
    total = 0.0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
            total += sum(int((task / "schedstat").read_text().split()[0]) for task in tasks) / 1e9
        except (OSError, ValueError, IndexError):
            total += _ticks_seconds(pid)
    return total


def _ticks_seconds(pid: int) -> float:
    """User + system time of `pid` from /proc/PID/stat (kernels without
    schedstat); 0 for a process gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Target:
    """One system in a CPU-per-call pass: its address, the PID its Kamailio
    processes descend from, and the injection file of each round."""

    node: str
    root: int
    numbers: Callable[[int], Path]


def cpu_rounds(
    work: Path,
    targets: dict[str, Target],
    step_seconds: float,
    tag: str,
    together: bool = False,
) -> dict[str, Any]:
    """Kamailio CPU per call at CPU_RATE of each target, CPU_ROUNDS rounds;
    the median round of each.

    `together`: the targets are separate nodes, and each round calls all of
    them at once, each measured over the same seconds: whatever the shared
    machine does meanwhile (a neighbour's burst, a slower hour) it does to
    all of them alike.  Otherwise (one node, two kinds of call) in
    alternation.  Compare two targets with `paired`, round by round.
    """
    samples: dict[str, list[float | None]] = {name: [] for name in targets}
    retransmissions = dict.fromkeys(targets, 0)
    failed = dict.fromkeys(targets, 0)
    calls = int(CPU_RATE * step_seconds)

    def measure(names: list[str], round_: int) -> None:
        pids = {name: kamailio_pids(targets[name].root) for name in names}
        before = {name: cpu_seconds(pids[name]) for name in names}
        steps: dict[str, Step] = {}

        def call(name: str) -> None:
            steps[name] = sipp_calls(
                work,
                targets[name].node,
                targets[name].numbers(round_),
                CPU_RATE,
                calls,
                f"cpu-{tag}-{name}-{round_}",
            )

        threads = [threading.Thread(target=call, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name in names:
            step = steps[name]
            retransmissions[name] += step.retransmissions
            failed[name] += step.calls - step.successful
            used = cpu_seconds(pids[name]) - before[name]
            # a round with a failed call does not count: its cost is not a call's
            if step.successful == step.calls:
                samples[name].append(round(used / step.successful * 1e6, 1))
            else:
                samples[name].append(None)

    for round_ in range(CPU_ROUNDS):
        if together:
            measure(list(targets), round_)
        else:
            for name in targets:
                measure([name], round_)
    return {
        "rate": CPU_RATE,
        "calls": calls,
        "together": together,
        "us": {name: _median(us) for name, us in samples.items()},
        "retransmissions": retransmissions,
        "failed": failed,
        "samples": samples,
    }


def _median(values: list[float | None]) -> int | None:
    counted = [value for value in values if value is not None]
    return round(statistics.median(counted)) if counted else None


def paired(figures: dict[str, Any], a: str, b: str) -> float | None:
    """a / b: the median of the rounds' own ratios, each of two figures
    measured side by side (together, or one straight after the other)."""
    ratios = [
        x / y
        for x, y in zip(figures["samples"][a], figures["samples"][b], strict=True)
        if x is not None and y
    ]
    return round(statistics.median(ratios), 2) if ratios else None


def called_together(
    running: Systems, case: str, names: tuple[str, ...], step_seconds: float, tag: str
) -> dict[str, Any]:
    """cpu_rounds of the systems `names`, all called at once with `case`'s
    numbers; each one's median as `<name>_us` too."""
    targets = {
        name: Target(
            NODES[name], running.processes[name].popen.pid, lambda _r: running.injections[case]
        )
        for name in names
    }
    figures = cpu_rounds(running.work, targets, step_seconds, tag, together=True)
    return {**figures, **{f"{name}_us": figures["us"][name] for name in names}}


def cpu_per_call(running: Systems, case: str, step_seconds: float) -> dict[str, Any]:
    """Kamailio CPU per call at CPU_RATE, divert and the yardsticks called
    at once in each round."""
    figures = called_together(running, case, CPU_SYSTEMS, step_seconds, case)
    return {
        **figures,
        "ratio_equivalent": paired(figures, "divert", "equivalent"),
        "ratio_baseline": paired(figures, "divert", "baseline"),
        "twin_ratio": paired(figures, "twin", "baseline"),
    }


def checks_cost(running: Systems, case: str, step_seconds: float) -> dict[str, Any]:
    """Kamailio CPU per call at CPU_RATE of divert, the bare node (divert
    without the checks the equivalent lacks) and the equivalent, called at
    once in each round."""
    figures = called_together(running, case, CHECKS_SYSTEMS, step_seconds, f"checks-{case}")
    return {
        **figures,
        "checks": checks(),
        "ratio_equivalent": paired(figures, "divert", "equivalent"),
        "bare_ratio_equivalent": paired(figures, "bare", "equivalent"),
        "ratio_bare": paired(figures, "divert", "bare"),
    }


def cold_warm(running: Systems, step_seconds: float) -> dict[str, Any]:
    """divert's CPU per call dialling numbers no worker has dialled (a fresh
    file each round) against ten numbers every worker has cached."""
    work, files = running.work, running.injections
    root = running.processes["divert"].popen.pid
    # warm: each of the ten numbers reaches every worker many times over
    sipp_calls(work, NODES["divert"], files["warm"], 200, 400, "warm-warm")
    targets = {
        "cold": Target(NODES["divert"], root, lambda r: files[f"cold-{r}"]),
        "warm": Target(NODES["divert"], root, lambda _r: files["warm"]),
    }
    figures = cpu_rounds(work, targets, step_seconds, "coldwarm")
    us = figures["us"]
    return {
        **figures,
        "cold_us": us["cold"],
        "warm_us": us["warm"],
        "ratio": paired(figures, "cold", "warm"),
    }


def _p99(samples: list[int]) -> float:
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))])


def _kb(status: Path, field_name: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def memory(process: Process, state: Path) -> dict[str, Any]:
    """A divert node's memory: store on disk, PSS of its Kamailio, Kamailio's
    shared memory in use, the sync worker's and `divert run`'s own."""
    store = (state / "store.sqlite").resolve()
    on_disk = sum(
        path.stat().st_size
        for path in (store, Path(f"{store}-wal"), Path(f"{store}-shm"))
        if path.exists()
    )
    pids = kamailio_pids(process.popen.pid)
    pss = sum(_kb(Path(f"/proc/{pid}/smaps_rollup"), "Pss") for pid in pids)
    shm = kamcmd(state / "run" / "kamailio_ctl", "core.shmmem")
    shm_fields = dict(
        (line.split(":", 1)[0].strip(), line.split(":", 1)[1].strip())
        for line in shm.splitlines()
        if ":" in line
    )
    figures: dict[str, Any] = {
        "store_file": str(store),
        "store_mb": round(on_disk / 2**20, 1),
        "kamailio_processes": len(pids),
        "kamailio_pss_mb": round(pss / 1024, 1),
        "shm_used_mb": round(int(shm_fields.get("used", 0)) / 2**20, 1),
        "shm_real_used_mb": round(int(shm_fields.get("real_used", 0)) / 2**20, 1),
        "shm_max_used_mb": round(int(shm_fields.get("max_used", 0)) / 2**20, 1),
    }
    sync_pid = state / "run" / "sync.pid"
    try:
        pid = int(sync_pid.read_text().split()[0])
        figures["sync_rss_mb"] = round(_kb(Path(f"/proc/{pid}/status"), "VmRSS") / 1024, 1)
        figures["sync_pss_mb"] = round(_kb(Path(f"/proc/{pid}/smaps_rollup"), "Pss") / 1024, 1)
    except (OSError, ValueError, IndexError) as error:
        figures["sync_rss_mb"] = None
        figures["sync_error"] = str(error)
    own = Path(f"/proc/{process.popen.pid}")
    figures["divert_run_rss_mb"] = round(_kb(own / "status", "VmRSS") / 1024, 1)
    return figures


# -- the run ----------------------------------------------------------------------------


@dataclass
class Systems:
    """The Kamailios and the sipp peers, up and warmed, in a scratch folder."""

    work: Path
    injections: dict[str, Path]
    processes: dict[str, Process]
    sockets: dict[str, Path]
    budgets: dict[str, CpuBudget]  # a cgroup per system's Kamailio; none: unconfined
    cpu_note: str  # how the Kamailios' CPU is limited, or why it is not
    portals: dict[str, str] = field(default_factory=dict)  # the scale pass's
    seeded_s: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def confined(self) -> Iterator[None]:
        """Each Kamailio limited to CPU_SHARE of one core, for the ladder."""
        for budget in self.budgets.values():
            budget.limit(CPU_SHARE)
        try:
            yield
        finally:
            for budget in self.budgets.values():
                budget.limit(None)

    @property
    def logs(self) -> dict[str, Path]:
        return {name: self.processes[name].log for name in LADDER_SYSTEMS}


def write_numbers(path: Path, picks: list[int]) -> Path:
    path.write_text("SEQUENTIAL\n" + "".join(f"{number(i)}\n" for i in picks))
    return path


def plan_injections(work: Path, step_seconds: float, parts: tuple[str, ...]) -> dict[str, Path]:
    """Every pass's injection file.  The cases' callers dial 10,000 numbers
    of their kind; the warm pass ten of the unconditional ones; each cold
    round numbers of no other file, each once; the scale passes a fresh
    uniform pick over all the unconditional numbers of their node per run."""
    rng = random.Random(6)
    files = {}
    calls = int(CPU_RATE * step_seconds)
    dialled: set[int] = set()
    for case, parity in (("unconditional", 0), ("busy", 1)):
        picks = rng.sample(range(parity, NUMBERS, 2), CALLED)
        dialled.update(picks)
        files[case] = write_numbers(work / f"{case}.csv", picks)
    warm = [n for n in sorted(dialled) if n % 2 == 0][:WARM_NUMBERS]
    files["warm"] = write_numbers(work / "warm.csv", warm * (max(calls, 400) // len(warm) + 1))
    if "cold" in parts:
        fresh = [i for i in range(0, NUMBERS, 2) if i not in dialled]
        rng.shuffle(fresh)
        if len(fresh) < CPU_ROUNDS * calls:
            raise SystemExit(f"{CPU_ROUNDS} cold rounds of {calls} calls: too few numbers")
        for r in range(CPU_ROUNDS):
            files[f"cold-{r}"] = write_numbers(
                work / f"cold-{r}.csv", fresh[r * calls : (r + 1) * calls]
            )
    if "scale" in parts:
        for name, size in (("small", SMALL), ("large", LARGE)):
            for r in ("w", *range(CPU_ROUNDS)):
                picks = [2 * rng.randrange(size // 2) for _ in range(max(calls, 400))]
                files[f"{name}-{r}"] = write_numbers(work / f"{name}-{r}.csv", picks)
    return files


@contextmanager
def systems(step_seconds: float, parts: tuple[str, ...]) -> Iterator[Systems]:
    """Seed every system's numbers, start them and the sipp peers; stop all
    of them (by PID) on the way out."""
    for tool in ("kamailio", "sipp", "kamcmd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: run 'make deps' first")
    processes: dict[str, Process] = {}
    budgets: dict[str, CpuBudget] = {}
    with tempfile.TemporaryDirectory(prefix="divert-sip-bench-") as scratch:
        work = Path(scratch)
        try:
            portal = f"sqlite:///{work / 'portal.db'}"
            seed_portal(portal)
            portals, seeded = {}, {}
            if "scale" in parts:
                for name, size in (("small", SMALL), ("large", LARGE)):
                    began = time.monotonic()
                    portals[name] = f"sqlite:///{work / f'portal-{name}.db'}"
                    seed_portal(portals[name], size)
                    seeded[name] = round(time.monotonic() - began, 1)
                    print(f"  {name} portal: {size} numbers in {seeded[name]} s", flush=True)
            baseline_tables(work / "ht")
            equivalent_dispatcher(work / "equivalent.list")
            injections = plan_injections(work, step_seconds, parts)
            for name, scenario, address in (
                ("carrier", "answer.xml", CARRIER),
                ("pbx", "busy.xml", PBX),
            ):
                host, port = address.split(":")
                processes[name] = start(
                    name,
                    [
                        "sipp",
                        "-sf",
                        str(BENCH / "sipp" / scenario),
                        "-i",
                        host,
                        "-p",
                        port,
                        "-aa",
                        "-nostdin",
                        "-m",
                        "10000000",
                        "-timeout",
                        "3600s",
                        *(["-trace_msg"] if TRACE else []),
                    ],
                    work,
                )
            state = work / "state"
            divert = processes["divert"] = start_divert(
                "divert", portal, state, NODES["divert"], work
            )
            if "main" in parts:
                bare = work / "bare.cfg"
                bare.write_text(bare_config(CONFIG.read_text()))
                processes["bare"] = start_divert(
                    "bare",
                    portal,
                    work / "state-bare",
                    NODES["bare"],
                    work,
                    divert=(sys.executable, str(BENCH / "bare_node.py"), str(bare), "--"),
                )
            for name, cfg in (
                ("baseline", "kamailio.cfg"),
                ("twin", "kamailio.cfg"),
                ("equivalent", "equivalent.cfg"),
            ):
                extra = {
                    "baseline": ["-A", f'CARRIER="sip:{CARRIER}"'],
                    "twin": [
                        "-A",
                        f'CARRIER="sip:{CARRIER}"',
                        "-A",
                        f'PYTHON_TWIN="{BENCH / "baseline" / "twin.py"}"',
                    ],
                    "equivalent": ["-A", f'DS_LIST="{work / "equivalent.list"}"'],
                }[name]
                processes[name] = start(
                    name,
                    [
                        "kamailio",
                        "-f",
                        str(BENCH / "baseline" / cfg),
                        "-x",
                        MEMORY_MANAGER,
                        "-X",
                        MEMORY_MANAGER,
                        "-DD",
                        "-E",
                        "-m",
                        str(SHM_MB),
                        "-n",
                        str(CHILDREN),
                        "-Y",
                        str(work),
                        "-A",
                        f"LISTEN=udp:{NODES[name]}",
                        "-A",
                        f'HT_DB="text://{work / "ht"}"',
                        "-A",
                        f'CTL_SOCKET="unix:{work / name}.ctl"',
                        *extra,
                    ],
                    work,
                    BENCH_CARRIER=f"sip:{CARRIER}",
                    DIVERT_NODE_KEY=NODE_KEY,
                )
            wait_until("divert", lambda: options_ok(NODES["divert"]), 120, divert)
            for name in ("baseline", "twin", "equivalent"):
                wait_until(name, lambda at=NODES[name]: options_ok(at), 60, processes[name])
            sockets = {
                "divert": state / "run" / "kamailio_ctl",
                **{name: work / f"{name}.ctl" for name in ("baseline", "twin", "equivalent")},
            }
            nodes = [name for name in ("divert", "bare") if name in processes]
            if "bare" in processes:
                sockets["bare"] = work / "state-bare" / "run" / "kamailio_ctl"
                wait_until("bare", lambda: options_ok(NODES["bare"]), 120, processes["bare"])
            for name in (*nodes, "equivalent"):
                wait_until(
                    f"{name}'s trunks", lambda s=sockets[name]: trunks_up(s), 30, processes[name]
                )
            for name in nodes:
                wait_until(
                    f"{name}'s native plans",
                    lambda s=sockets[name]: plans_ready(s),
                    120,
                    processes[name],
                )
            try:
                for name in (*CPU_SYSTEMS, *(["bare"] if "bare" in processes else [])):
                    budgets[name] = CpuBudget.create(f"divert-bench-{name}", None)
                    budgets[name].add(kamailio_pids(processes[name].popen.pid))
                cpu_note = (
                    f"each Kamailio limited to {CPU_SHARE:.0%} of one core in the ladder "
                    f"({budgets['divert'].path})"
                )
            except (BudgetUnavailable, OSError) as error:
                for budget in budgets.values():
                    budget.remove()
                budgets.clear()
                cpu_note = f"unconfined (no CPU budget: {error})"
            print(f"  {cpu_note}", flush=True)
            time.sleep(1.0)
            yield Systems(work, injections, processes, sockets, budgets, cpu_note, portals, seeded)
        finally:
            for process in reversed(list(processes.values())):
                process.stop()
            for budget in budgets.values():
                budget.remove()


def scale(running: Systems, step_seconds: float) -> dict[str, Any]:
    """Two more divert nodes, SMALL and LARGE numbers, started for this pass
    only: the time each takes to route, CPU per call with callers dialling
    uniformly over all of each node's numbers, the large node's memory."""
    work, files = running.work, running.injections
    nodes: dict[str, Process] = {}
    states = {name: work / f"state-{name}" for name in ("small", "large")}
    figures: dict[str, Any] = {"numbers": {"small": SMALL, "large": LARGE}}
    try:
        for name, size in (("small", SMALL), ("large", LARGE)):
            began = time.monotonic()
            # the large node's plans take some 400 MB of shared memory
            process = nodes[name] = start_divert(
                f"divert-{name}",
                running.portals[name],
                states[name],
                NODES[name],
                work,
                SHM_MB if size < 100_000 else LARGE_SHM_MB,
            )
            # `divert run` syncs the store in full before Kamailio starts:
            # Kamailio answering means the store is complete; checked below
            wait_until(f"{name} node", lambda at=NODES[name]: options_ok(at), 600, process)
            answered = time.monotonic() - began
            control = states[name] / "run" / "kamailio_ctl"
            wait_until(f"{name}'s trunks", lambda c=control: trunks_up(c), 60, process)
            view = StoreView.open(states[name])
            try:
                tables = view.counts()["forward_tables"]
            finally:
                view.close()
            if tables != size:
                raise SystemExit(f"{name} node: {tables} forward tables in its store, not {size}")
            first = sipp_calls(work, NODES[name], files[f"{name}-w"], 10, 1, f"first-{name}")
            if first.successful != 1:
                raise SystemExit(f"{name} node: its first call failed\n{process.log}")
            figures[f"{name}_answers_s"] = round(answered, 1)
            figures[f"{name}_routes_s"] = round(time.monotonic() - began, 1)
            wait_until(f"{name}'s native plans", lambda c=control: plans_ready(c), 600, process)
            figures[f"{name}_native_s"] = round(time.monotonic() - began, 1)
            print(
                f"  {name} node ({size} numbers): answers in {answered:.1f} s, "
                f"routes in {figures[f'{name}_routes_s']} s, "
                f"native plans in {figures[f'{name}_native_s']} s",
                flush=True,
            )
        for name in nodes:  # imports, the small node's caches
            sipp_calls(work, NODES[name], files[f"{name}-w"], 200, 400, f"warm-{name}")
        targets = {
            name: Target(NODES[name], nodes[name].popen.pid, lambda r, n=name: files[f"{n}-{r}"])
            for name in nodes
        }
        cpu = cpu_rounds(work, targets, step_seconds, "scale", together=True)
        figures |= {
            "cpu": cpu,
            "small_us": cpu["us"]["small"],
            "large_us": cpu["us"]["large"],
            "growth": paired(cpu, "large", "small"),
            "memory_large": memory(nodes["large"], states["large"]),
        }
    finally:
        for process in nodes.values():
            process.stop()
    return figures


def run(
    step_seconds: float = 4.0, parts: tuple[str, ...] = PARTS, quick: bool = False
) -> dict[str, Any]:
    global CPU_ROUNDS, LADDER_RATES, LADDERS, WARM_SECONDS
    if quick:
        CPU_ROUNDS, LADDER_RATES, LADDERS, WARM_SECONDS = 2, 4, 1, 0
    results: dict[str, Any] = {
        "numbers": NUMBERS,
        "children": CHILDREN,
        "step_seconds": step_seconds,
        "net": NET,
        "parts": list(parts),
        "quick": quick,
    }
    started = time.monotonic()
    with systems(step_seconds, parts) as running:
        results["setup_s"] = round(time.monotonic() - started, 1)
        results["seeded_s"] = running.seeded_s
        results["cpu"] = running.cpu_note
        work, injections = running.work, running.injections
        warm_ups = ("unconditional", "busy") if "main" in parts else ("unconditional",)
        warmed = [name for name in (*CPU_SYSTEMS, "bare") if name in running.processes]
        results["warm_up"] = {}
        for case in warm_ups:
            # Python workers import lazily, caches fill; then the shared
            # memory a high rate needs (the module's docstring)
            for name in warmed:
                sipp_calls(work, NODES[name], injections[case], 200, 400, f"warm-{case}-{name}")
                if WARM_SECONDS:
                    step = sipp_calls(
                        work,
                        NODES[name],
                        injections[case],
                        WARM_RATE,
                        WARM_RATE * WARM_SECONDS,
                        f"warm-high-{case}-{name}",
                    )
                    results["warm_up"][f"{case}-{name}"] = vars(step)
            if WARM_SECONDS:
                answered = ", ".join(
                    f"{name} {results['warm_up'][f'{case}-{name}']['successful']}"
                    for name in warmed
                )
                print(
                    f"  {case}: warmed at {WARM_RATE}/s for {WARM_SECONDS} s, calls answered "
                    f"of {WARM_RATE * WARM_SECONDS}: {answered}",
                    flush=True,
                )
        if WARM_SECONDS:
            time.sleep(TM_WAIT_SECONDS + 1)  # the warm-up's transactions freed
        if "main" in parts:
            for case in CASES:
                print(f"  {case}: latency, CPU per call", flush=True)
                results[f"latency_{case}"] = latency(
                    work, case, injections, running.logs, running.sockets, step_seconds
                )
                results[f"cpu_{case}"] = cpu_per_call(running, case, step_seconds)
                print(f"  {case}: CPU per call {results[f'cpu_{case}']['us']}", flush=True)
                results[f"checks_{case}"] = checks_cost(running, case, step_seconds)
                print(f"  {case}: checks' CPU {results[f'checks_{case}']['us']}", flush=True)
                rates: tuple[int, ...]
                if not running.budgets:
                    rates = UNCONFINED_LADDER
                else:
                    rates = ladder_rates(results[f"cpu_{case}"]["divert_us"])
                confined = running.budgets or None
                with running.confined():
                    results[f"throughput_{case}"] = ladders(
                        work, case, injections, step_seconds, rates, confined
                    )
        if "cold" in parts:
            results["cold_warm"] = cold_warm(running, step_seconds)
            print(f"  cold / warm: {results['cold_warm']['us']}", flush=True)
        if "scale" in parts:
            results["scale"] = scale(running, step_seconds)
            print(f"  scale: {results['scale']['cpu']['us']}", flush=True)
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def parse_parts(text: str) -> tuple[str, ...]:
    parts = tuple(p for p in text.split(",") if p)
    if not parts or set(parts) - set(PARTS):
        raise argparse.ArgumentTypeError(f"parts: some of {','.join(PARTS)}")
    return parts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--step-seconds", type=float, default=None, help="4 (--quick: 1)")
    parser.add_argument("--net", default="127.0.1", help="loopback prefix of every address")
    parser.add_argument(
        "--quick", action="store_true", help="1 s steps, 2 rounds, 4 ladder rates: a smoke run"
    )
    parser.add_argument("--parts", type=parse_parts, default=PARTS, help="main,cold,scale")
    parser.add_argument("--large", type=int, default=LARGE, help="numbers of the large node")


def apply_arguments(args: argparse.Namespace) -> float:
    """Configure the module from the command line; the step length."""
    global LARGE
    configure(args.net)
    LARGE = args.large
    if args.step_seconds is not None:
        return float(args.step_seconds)
    return 1.0 if args.quick else 4.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    add_arguments(parser)
    args = parser.parse_args()
    step = apply_arguments(args)
    results = run(step, args.parts, args.quick)
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    sys.exit(main())
