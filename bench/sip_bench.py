"""End-to-end benchmark: divert against a hand-written native kamailio.cfg.

    .venv/bin/python bench/sip_bench.py [--json FILE] [--step-seconds 4]

Both run at once on loopback, each a Kamailio with the same number of SIP
workers, in front of the same sipp peers:

- divert: `divert run` on 127.0.1.1:5060 with a SQLite portal of 100,000
  numbers (every even one forwards unconditionally to a mobile number, every
  odd one rings a PBX trunk and forwards on busy);
- baseline: bench/baseline/kamailio.cfg on 127.0.1.2:5060, htables of the
  same 100,000 numbers loaded from files;
- twin: the same cfg on 127.0.1.3:5060 routing with bench/baseline/twin.py,
  its routes in Python KEMI (a control, in the CPU-per-call pass only).

Peers: the carrier 127.0.1.11:5080 answers every call; the PBX
127.0.1.20:5060 answers 486 Busy Here; callers send from the carrier's
address (divert trusts carriers by address), to 10,000 random numbers of
the case from an injection file.

Throughput: for each case, a rising rate ladder; at each rate divert, then
the baseline, for `step_seconds` each; a rate passes with no failed call,
retransmissions under 1% of calls, and the calls done in time.  The figure
is the highest rate reached before a rate fails twice in a row.  Latency:
request route execution times from Kamailio's own `latency_cfg_log`, turned
on at run time for one fixed-rate pass per case.  CPU per call: the CPU time the
Kamailio processes of each system used (from /proc) over fixed-rate passes
in alternation, divided by the calls; steadier than the ladder on a shared
machine, and what the ladder's ratio comes from while Kamailio and sipp
share the cores.

Both Kamailios run with the same memory manager (divert's, TLSF) and, where
a cgroup can be written (bench/cpu_budget.py), the same CPU budget in the
ladder: 20% of one core each, so that the ladder measures what each
sustains on equal CPU rather than what the sipp peers sharing the machine
can drive.  The latency and CPU passes run unconfined, well below that.

Every sipp run is bounded by call count and timeout; every process started
is stopped by its PID.
"""

from __future__ import annotations

import argparse
import csv
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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpu_budget import BudgetUnavailable, CpuBudget

from divert.node import MEMORY_MANAGER

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DIVERT = str(Path(sys.executable).with_name("divert"))

NUMBERS = 100_000
CALLED = 10_000  # distinct numbers each case's callers dial
CHILDREN = 4  # SIP worker processes, both systems
SHM_MB = 512  # shared memory, both systems (the baseline's htables live there)
DIVERT_NODE = "127.0.1.1:5060"
BASELINE_NODE = "127.0.1.2:5060"
TWIN_NODE = "127.0.1.3:5060"  # the baseline's routes in Python: bench/baseline/twin.py
CARRIER = "127.0.1.11:5080"
PBX = "127.0.1.20:5060"
CALLER_IP = "127.0.1.11"  # the carrier's address: trusted by divert
# In the ladder each Kamailio (all its processes) gets CPU_SHARE of one core,
# the same for both: the rate each sustains is then set by its cost per
# call, at rates the sipp peers drive with ease.  Rates rise by about 15%
# from half of what divert's CPU per call (measured unconfined, at a lower
# rate: an overestimate) says the share sustains, so the ladder starts below
# divert's limit on a fast machine and a slow one alike.
CPU_SHARE = 0.2
LADDER_STEP = 1.15
LADDER_TOP = 3200
# Without a cgroup to write, both run unconfined: the ladder then finds the
# machine's limit (sipp and Kamailio sharing the cores) more than either's.
UNCONFINED_LADDER = (500, 1000, 1400, 1800, 2200, 2600, 3000, 3500, 4000, 4500, 5000)
LATENCY_RATE = 200
# CPU per call and route latency are measured unconfined: near a budget,
# throttling brings retransmissions, whose handling would count as cost.
CPU_RATE = 400
CPU_ROUNDS = 3
TICKS = os.sysconf("SC_CLK_TCK")
CASES = ("unconditional", "busy")


def number(index: int) -> str:
    return f"+3902{20_000_000 + index}"


def mobile(index: int) -> str:
    return f"+39335{1_000_000 + index}"


# -- the two systems ----------------------------------------------------------------


def seed_portal(url: str) -> None:
    """A tenant, the PBX trunk, NUMBERS numbers and one forward each."""
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
            ((i + 1, number(i), tenant_id, trunk_id) for i in range(NUMBERS)),
        )
        db.executemany(
            "INSERT INTO forwards (tenant_id, number_id, condition, callers, dest_kind, "
            "dest_value, position, enabled) VALUES (?, ?, ?, 'any', 'number', ?, 0, 1)",
            (
                (tenant_id, i + 1, "always" if i % 2 == 0 else "busy", mobile(i))
                for i in range(NUMBERS)
            ),
        )
    db.close()


def baseline_tables(folder: Path) -> None:
    """The baseline's htables as db_text files: always, busy, dest."""
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


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def start(name: str, command: list[str], work: Path, **env: str) -> Process:
    log = work / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
    (work / f"{name}.pid").write_text(str(popen.pid))
    return Process(name, popen, log)


def options_ok(address: str) -> bool:
    host, port = address.split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.5)
        probe.bind(("127.0.1.99", 0))
        local = probe.getsockname()[1]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.1.99:{local};branch=z9hG4bK-{time.monotonic_ns()}\r\n"
            "From: <sip:probe@127.0.1.99>;tag=1\r\nTo: <sip:probe@127.0.1.99>\r\n"
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

    @property
    def passed(self) -> bool:
        return (
            self.exit_code == 0
            and self.failed == 0
            and self.successful == self.calls
            and self.retransmissions < 0.01 * self.calls
            and self.seconds <= 1.5 * self.calls / self.rate + 2
        )


def sipp_calls(
    work: Path, node: str, numbers: Path, rate: int, calls: int, port: int, tag: str
) -> Step:
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
            str(port),
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
    """The confined ladder: from half the rate CPU_SHARE sustains at
    `divert_us` a call, up by LADDER_STEP, to LADDER_TOP."""
    sustained = CPU_SHARE / (divert_us or 500) * 1e6
    rate = max(50.0, sustained / 2)
    rates = []
    while rate <= LADDER_TOP:
        rates.append(int(round(rate, -1)))
        rate *= LADDER_STEP
    return tuple(rates)


def ladder(
    work: Path,
    case: str,
    injections: dict[str, Path],
    step_seconds: float,
    rates: tuple[int, ...],
) -> dict[str, Any]:
    """Rising rate, divert and baseline in alternation at each rate.

    A rate that fails is tried once more before it counts: on a shared
    machine one hiccup (a burst of retransmissions) should not end a ladder.
    """
    steps: dict[str, list[Step]] = {"divert": [], "baseline": []}
    best = {"divert": 0, "baseline": 0}
    done: set[str] = set()
    port = 7000
    for rate in rates:
        for name, node in (("divert", DIVERT_NODE), ("baseline", BASELINE_NODE)):
            for attempt in range(2):
                if name in done:
                    break
                port += 1
                step = sipp_calls(
                    work,
                    node,
                    injections[case],
                    rate,
                    int(rate * step_seconds),
                    port,
                    f"{case}-{name}-{rate}-{attempt}",
                )
                steps[name].append(step)
                print(
                    f"  {case:13} {name:8} {rate:5}/s  ok {step.successful}/{step.calls}  "
                    f"retrans {step.retransmissions}  {step.seconds:.1f} s  "
                    f"{'pass' if step.passed else 'FAIL'}",
                    flush=True,
                )
                time.sleep(1.0)
                if step.passed:
                    best[name] = rate
                    break
                if attempt == 1:
                    done.add(name)
        if len(done) == 2:
            break
    return {
        "max_rate_divert": best["divert"],
        "max_rate_baseline": best["baseline"],
        "baseline_capped": "baseline" not in done,
        "divert_capped": "divert" not in done,
        "ratio": round(best["divert"] / best["baseline"], 3) if best["baseline"] else None,
        "steps": {name: [vars(s) for s in runs] for name, runs in steps.items()},
    }


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
    for index, (name, node) in enumerate((("divert", DIVERT_NODE), ("baseline", BASELINE_NODE))):
        offset = logs[name].stat().st_size
        kamcmd(sockets[name], "cfg.seti", "core", "latency_cfg_log", "2")
        try:
            sipp_calls(
                work,
                node,
                injections[case],
                LATENCY_RATE,
                int(LATENCY_RATE * step_seconds),
                7900 + index + (10 if case == "busy" else 0),
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


def kamailio_pids(root: int) -> list[int]:
    """The Kamailio processes in the process tree under PID `root`."""
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
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        if names.get(pid) == "kamailio":
            found.append(pid)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the processes `pids` have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def cpu_per_call(running: Systems, case: str, step_seconds: float) -> dict[str, Any]:
    """Kamailio CPU per call at CPU_RATE, divert, the baseline and its
    Python twin in alternation."""
    nodes = {"divert": DIVERT_NODE, "baseline": BASELINE_NODE, "twin": TWIN_NODE}
    samples: dict[str, list[float]] = {name: [] for name in nodes}
    retransmissions = dict.fromkeys(nodes, 0)
    for round_ in range(CPU_ROUNDS):
        for index, (name, node) in enumerate(nodes.items()):
            pids = kamailio_pids(running.processes[name].popen.pid)
            before = cpu_seconds(pids)
            step = sipp_calls(
                running.work,
                node,
                running.injections[case],
                CPU_RATE,
                int(CPU_RATE * step_seconds),
                7800 + 10 * round_ + index + (50 if case == "busy" else 0),
                f"cpu-{case}-{name}-{round_}",
            )
            retransmissions[name] += step.retransmissions
            if step.successful:
                samples[name].append((cpu_seconds(pids) - before) / step.successful * 1e6)
    figures = {name: round(statistics.median(us)) if us else None for name, us in samples.items()}
    divert, baseline, twin = figures["divert"], figures["baseline"], figures["twin"]
    return {
        "rate": CPU_RATE,
        "divert_us": divert,
        "baseline_us": baseline,
        "twin_us": twin,
        "ratio": round(divert / baseline, 2) if divert and baseline else None,
        "twin_ratio": round(twin / baseline, 2) if twin and baseline else None,
        "retransmissions": retransmissions,
        "samples": samples,
    }


def _p99(samples: list[int]) -> float:
    ordered = sorted(samples)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))])


# -- the run ----------------------------------------------------------------------------


@dataclass
class Systems:
    """Both Kamailios and the sipp peers, up and warmed, in a scratch folder."""

    work: Path
    injections: dict[str, Path]
    processes: dict[str, Process]
    sockets: dict[str, Path]
    budgets: list[CpuBudget]  # one cgroup per Kamailio; none: unconfined
    cpu_note: str  # how the Kamailios' CPU is limited, or why it is not

    @contextmanager
    def confined(self) -> Iterator[None]:
        """Each Kamailio limited to CPU_SHARE of one core, for the ladder."""
        for budget in self.budgets:
            budget.limit(CPU_SHARE)
        try:
            yield
        finally:
            for budget in self.budgets:
                budget.limit(None)

    @property
    def logs(self) -> dict[str, Path]:
        return {name: self.processes[name].log for name in ("divert", "baseline")}


@contextmanager
def systems() -> Iterator[Systems]:
    """Seed both systems' numbers, start them and the sipp peers; stop all
    of them (by PID) on the way out."""
    for tool in ("kamailio", "sipp", "kamcmd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: run 'make deps' first")
    processes: dict[str, Process] = {}
    budgets: list[CpuBudget] = []
    with tempfile.TemporaryDirectory(prefix="divert-sip-bench-") as scratch:
        work = Path(scratch)
        try:
            portal = f"sqlite:///{work / 'portal.db'}"
            seed_portal(portal)
            baseline_tables(work / "ht")
            rng = random.Random(6)
            injections = {}
            for case, parity in (("unconditional", 0), ("busy", 1)):
                picks = rng.sample(range(parity, NUMBERS, 2), CALLED)
                path = work / f"{case}.csv"
                path.write_text("SEQUENTIAL\n" + "".join(f"{number(i)}\n" for i in picks))
                injections[case] = path
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
                        "900s",
                    ],
                    work,
                )
            state = work / "state"
            divert = processes["divert"] = start(
                "divert",
                [
                    DIVERT,
                    "--portal",
                    portal,
                    "run",
                    "--listen",
                    DIVERT_NODE,
                    "--state-dir",
                    str(state),
                    "--carrier",
                    CARRIER,
                    "--children",
                    str(CHILDREN),
                    "--shm",
                    str(SHM_MB),
                ],
                work,
            )
            for name, listen in (("baseline", BASELINE_NODE), ("twin", TWIN_NODE)):
                twin = ["-A", f'PYTHON_TWIN="{BENCH / "baseline" / "twin.py"}"']
                processes[name] = start(
                    name,
                    [
                        "kamailio",
                        "-f",
                        str(BENCH / "baseline" / "kamailio.cfg"),
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
                        "-A",
                        f"LISTEN=udp:{listen}",
                        "-A",
                        f'CARRIER="sip:{CARRIER}"',
                        "-A",
                        f'HT_DB="text://{work / "ht"}"',
                        "-A",
                        f'CTL_SOCKET="unix:{work / name}.ctl"',
                        *(twin if name == "twin" else []),
                    ],
                    work,
                    BENCH_CARRIER=f"sip:{CARRIER}",
                )
            wait_until("divert", lambda: options_ok(DIVERT_NODE), 120, divert)
            for name, listen in (("baseline", BASELINE_NODE), ("twin", TWIN_NODE)):
                wait_until(name, lambda at=listen: options_ok(at), 60, processes[name])
            divert_socket = state / "run" / "kamailio_ctl"
            wait_until(
                "divert's trunks",
                lambda: kamcmd(divert_socket, "dispatcher.list").count("FLAGS: AP") >= 2,
                30,
                divert,
            )
            try:
                for name in ("divert", "baseline", "twin"):
                    budgets.append(CpuBudget.create(f"divert-bench-{name}", None))
                    budgets[-1].add(kamailio_pids(processes[name].popen.pid))
                cpu_note = (
                    f"each Kamailio limited to {CPU_SHARE:.0%} of one core in the ladder "
                    f"({budgets[0].path})"
                )
            except (BudgetUnavailable, OSError) as error:
                for budget in budgets:
                    budget.remove()
                budgets.clear()
                cpu_note = f"unconfined (no CPU budget: {error})"
            print(f"  {cpu_note}", flush=True)
            time.sleep(1.0)
            yield Systems(
                work,
                injections,
                processes,
                {"divert": divert_socket, "baseline": work / "baseline.ctl"},
                budgets,
                cpu_note,
            )
        finally:
            for process in reversed(list(processes.values())):
                process.stop()
            for budget in budgets:
                budget.remove()


def run(step_seconds: float = 4.0) -> dict[str, Any]:
    results: dict[str, Any] = {
        "numbers": NUMBERS,
        "children": CHILDREN,
        "step_seconds": step_seconds,
    }
    started = time.monotonic()
    with systems() as running:
        results["setup_s"] = round(time.monotonic() - started, 1)
        results["cpu"] = running.cpu_note
        work, injections = running.work, running.injections
        for case in CASES:
            # a short warm-up: Python workers import lazily, caches fill
            sipp_calls(work, DIVERT_NODE, injections[case], 200, 400, 6990, f"warm-{case}")
            sipp_calls(work, BASELINE_NODE, injections[case], 200, 400, 6991, f"warmb-{case}")
            sipp_calls(work, TWIN_NODE, injections[case], 200, 400, 6992, f"warmt-{case}")
            results[f"latency_{case}"] = latency(
                work, case, injections, running.logs, running.sockets, step_seconds
            )
            results[f"cpu_{case}"] = cpu_per_call(running, case, step_seconds)
            rates: tuple[int, ...]
            if not running.budgets:
                rates = UNCONFINED_LADDER
            else:
                rates = ladder_rates(results[f"cpu_{case}"]["divert_us"])
            with running.confined():
                results[f"throughput_{case}"] = ladder(work, case, injections, step_seconds, rates)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--step-seconds", type=float, default=4.0)
    args = parser.parse_args()
    results = run(args.step_seconds)
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    sys.exit(main())
