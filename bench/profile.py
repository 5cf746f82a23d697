"""Where a loaded divert node spends its CPU: perf and py-spy inside Kamailio.

    .venv/bin/python bench/profile.py [--case unconditional|busy] [--seconds 8] [--net 127.0.1]

Starts the benchmark's systems (bench/sip_bench.py: divert, the
wire-equivalent and the minimal baseline, 100,000 numbers), warms them, then
puts CPU_RATE calls a second on divert and on the wire-equivalent in turn,
each for `--seconds`, and records while the calls run:

- perf (if installed): samples of every Kamailio process of the system, at
  2 kHz with call graphs, split by shared object (libpython, SQLite, the
  kernel, Kamailio and its modules): what divert costs beyond the
  wire-equivalent, and in which layer;
- py-spy (divert only): the Python stacks of the four busiest SIP workers,
  the functions by share of the samples that had Python on the stack.

Prints both and keeps the raw data in var/bench/profile/.  Loopback only;
every sipp run bounded in count and time, every process stopped by its PID.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import sip_bench

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench" / "profile"
PY_SPY = Path(sys.executable).with_name("py-spy")
WORKERS = 4  # py-spy records this many of divert's busiest processes
PERF_HZ = 2000


def loaded(running: sip_bench.Systems, system: str, case: str, seconds: float) -> threading.Thread:
    """CPU_RATE calls a second on `system` for about `seconds` plus two, in
    a thread (sipp is bounded by the call count)."""
    calls = int(sip_bench.CPU_RATE * (seconds + 2))
    thread = threading.Thread(
        target=sip_bench.sipp_calls,
        args=(
            running.work,
            sip_bench.NODES[system],
            running.injections[case],
            sip_bench.CPU_RATE,
            calls,
            f"profile-{system}-{case}",
        ),
    )
    thread.start()
    time.sleep(1.5)  # past sipp's start
    return thread


def perf_split(data: Path) -> list[tuple[str, float]]:
    """Share of the samples per shared object, from `perf report`."""
    report = subprocess.run(
        [
            *("perf", "report", "-i", str(data), "--no-children"),
            *("--sort", "dso", "--stdio", "-g", "none"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    shares = []
    for line in report.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].endswith("%") and not line.startswith("#"):
            shares.append((parts[1], float(parts[0].rstrip("%"))))
    return shares


def perf_samples(data: Path) -> int:
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "comm"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return len(script.splitlines())


def record_perf(pids: list[int], seconds: float, data: Path) -> None:
    subprocess.run(
        [
            *("perf", "record", "-F", str(PERF_HZ), "-g", "-o", str(data)),
            *("-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)),
        ],
        capture_output=True,
        timeout=seconds + 60,
        check=True,
    )


def busiest(pids: list[int], count: int) -> list[int]:
    before = {pid: sip_bench.cpu_seconds([pid]) for pid in pids}
    time.sleep(1.0)
    used = {pid: sip_bench.cpu_seconds([pid]) - before[pid] for pid in pids}
    return sorted(pids, key=lambda pid: used[pid], reverse=True)[:count]


def record_py_spy(pids: list[int], seconds: float) -> list[Path]:
    outputs = [OUT / f"py-spy-{pid}.txt" for pid in pids]
    spies = [
        subprocess.Popen(
            [
                *(str(PY_SPY), "record", "-p", str(pid), "-d", str(int(seconds))),
                *("-r", "1000", "-f", "raw", "-o", str(output)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, output in zip(pids, outputs, strict=True)
    ]
    for spy in spies:
        spy.wait(timeout=seconds + 60)
    return [output for output in outputs if output.exists()]


def py_spy_functions(outputs: list[Path], top: int) -> list[tuple[str, float]]:
    """Functions by share of the samples with Python on the stack (inclusive)."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for output in outputs:
        for line in output.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            # "Router._invite (divert/kemi/adapter.py:457)": by function
            frames = {f"{frame.split(':')[0]})" for frame in stack.split(";") if " (" in frame}
            if not frames:
                continue  # no Python on the stack: Kamailio's own work
            total += int(count)
            for frame in frames:
                inclusive[frame] += int(count)
    if not total:
        return []
    return [(frame, 100 * n / total) for frame, n in inclusive.most_common(top)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sip_bench.CASES, default="unconditional")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--net", default="127.0.1", help="loopback prefix of every address")
    args = parser.parse_args()
    sip_bench.configure(args.net)
    have_perf = shutil.which("perf") is not None
    if not have_perf:
        print("perf is not installed (Debian: linux-perf): py-spy only")
    if not PY_SPY.exists():
        raise SystemExit(f"py-spy is not installed in {PY_SPY.parent}: run 'make deps'")
    OUT.mkdir(parents=True, exist_ok=True)
    samples: dict[str, int] = {}
    with sip_bench.systems(args.seconds, ("main",)) as running:
        for system in ("divert", "equivalent"):
            sip_bench.sipp_calls(
                running.work,
                sip_bench.NODES[system],
                running.injections[args.case],
                200,
                400,
                f"profile-warm-{system}",
            )
            # as make bench warms them: the shared memory of a high rate
            sip_bench.sipp_calls(
                running.work,
                sip_bench.NODES[system],
                running.injections[args.case],
                sip_bench.WARM_RATE,
                sip_bench.WARM_RATE * sip_bench.WARM_SECONDS,
                f"profile-warm-high-{system}",
            )
        time.sleep(sip_bench.TM_WAIT_SECONDS + 1)
        for system in ("divert", "equivalent"):
            pids = sip_bench.kamailio_pids(running.processes[system].popen.pid)
            load = loaded(running, system, args.case, args.seconds)
            if have_perf:
                data = OUT / f"perf-{system}.data"
                record_perf(pids, args.seconds, data)
                samples[system] = perf_samples(data)
                print(f"\n{system}: {samples[system]} perf samples in {args.seconds:.0f} s")
                for dso, share in perf_split(data)[:10]:
                    print(f"  {share:5.1f}%  {dso}")
            load.join()
            if system == "divert":
                load = loaded(running, system, args.case, args.seconds)
                spied = record_py_spy(busiest(pids, WORKERS), args.seconds)
                load.join()
                print(f"\ndivert's Python, {len(spied)} busiest workers (py-spy, inclusive):")
                for frame, share in py_spy_functions(spied, 25):
                    print(f"  {share:5.1f}%  {frame}")
    if len(samples) == 2 and samples["equivalent"]:
        print(
            f"\ndivert / wire-equivalent samples: x{samples['divert'] / samples['equivalent']:.2f}"
        )
    print(f"raw data in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
