"""`make bench`: divert against a native kamailio.cfg, and the core's costs.

    .venv/bin/python bench/bench.py [--step-seconds 4]

Runs bench/core_bench.py (decision core and store, 1,000 and 1,000,000
numbers) and bench/sip_bench.py (end-to-end throughput and route latency
through Kamailio, divert and the baseline side by side), prints one table
and writes every figure to var/bench/bench.json.  About 8 minutes on 2
cores; loopback only, every run bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import core_bench  # noqa: E402
import sip_bench  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def table(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    core = results["core"]
    small, large, growth = core["1000"], core["1000000"], core["growth"]
    rows = []
    for case in sip_bench.CASES:
        through = results["sip"][f"throughput_{case}"]
        # "+": the ladder's top rate passed, the real limit is higher
        capped = {name: "+" if through[f"{name}_capped"] else "" for name in ("divert", "baseline")}
        rows.append(
            (
                f"throughput, {case} (calls/s)",
                f"divert {through['max_rate_divert']}{capped['divert']} / baseline "
                f"{through['max_rate_baseline']}{capped['baseline']} = {through['ratio']}",
                ">= 0.9",
            )
        )
    for case in sip_bench.CASES:
        cpu = results["sip"][f"cpu_{case}"]
        resent = "/".join(str(n) for n in cpu["retransmissions"].values())
        rows.append(
            (
                f"Kamailio CPU per call, {case}",
                f"divert {cpu['divert_us']} us / baseline {cpu['baseline_us']} us "
                f"= x{cpu['ratio']} (Python twin x{cpu['twin_ratio']}; {cpu['rate']}/s, "
                f"retransmissions {resent})",
                "",
            )
        )
    for case in sip_bench.CASES:
        late = results["sip"][f"latency_{case}"]
        rows.append(
            (
                f"INVITE route, {case} (median / p99)",
                f"divert {late['divert']['invite_median_us']:.0f} / "
                f"{late['divert']['invite_p99_us']:.0f} us, baseline "
                f"{late['baseline']['invite_median_us']:.0f} / "
                f"{late['baseline']['invite_p99_us']:.0f} us",
                "",
            )
        )
    rows += [
        (
            "decide(), cache hit (median / p99)",
            f"{large['decide_unconditional_median_us']:.2f} / "
            f"{large['decide_unconditional_p99_us']:.2f} us unconditional, "
            f"{large['decide_busy_median_us']:.2f} / {large['decide_busy_p99_us']:.2f} us busy",
            "median <= 10 us",
        ),
        (
            "store lookup, 1M numbers",
            f"cold {large['cold_lookup_median_us']:.1f} / {large['cold_lookup_p99_us']:.1f} us, "
            f"cached {large['cached_lookup_median_us']:.2f} / "
            f"{large['cached_lookup_p99_us']:.2f} us",
            "",
        ),
        (
            "per-call cost, 1M vs 1k numbers",
            f"decide x{growth['decide_unconditional_median_us']} / "
            f"x{growth['decide_busy_median_us']}, cached lookup "
            f"x{growth['cached_lookup_median_us']}, cold x{growth['cold_lookup_median_us']}",
            "<= x1.2",
        ),
        ("", f"(1k: decide {small['decide_unconditional_median_us']:.2f} us)", ""),
    ]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-seconds", type=float, default=4.0)
    args = parser.parse_args()
    started = time.monotonic()
    print("core and store ...", flush=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results["core"] = core_bench.run()
    print("through Kamailio (divert and baseline in alternation) ...", flush=True)
    results["sip"] = sip_bench.run(args.step_seconds)
    results["seconds"] = round(time.monotonic() - started, 1)
    out = ROOT / "var" / "bench" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nmachine: {results['machine']}")
    print(f"Kamailio CPU in the throughput rows: {results['sip']['cpu']}")
    rows = table(results)
    width = max(len(name) for name, _, _ in rows)
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value.ljust(64)}  {target}")
    print(f"\n{results['seconds']:.0f} s; every figure in {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
