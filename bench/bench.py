"""`make bench`: divert against native kamailio.cfg files, and the core's costs.

    .venv/bin/python bench/bench.py [--step-seconds 4] [--net 127.0.1] [--quick]
        [--parts main,cold,scale] [--large 1000000] [--no-core]

Runs bench/core_bench.py (decision core and store, 1,000 and 1,000,000
numbers) and bench/sip_bench.py (through Kamailio: divert, the
wire-equivalent native configuration, the minimal baseline and its Python
twin side by side; cold and warm numbers; nodes of 1,000 and 1,000,000
numbers), prints one table and writes every figure to var/bench/bench.json.
About 25 minutes on 2 cores (--quick: about 5); loopback only (the /24 of
--net), every run bounded in count and time.
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

# A Kamailio that failed a step while running out of its CPU quota in
# fewer of its periods than this was not stopped by the budget
BUDGET_SET_LIMIT = 0.1


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} us"


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def budget_rows(through: dict[str, Any]) -> list[tuple[str, str, str]]:
    """How often each Kamailio ran out of its CPU quota above its limit: a
    limit the budget did not set (hardly any throttling) was the machine's."""
    shares = {name: through.get(f"throttled_at_limit_{name}") for name in sip_bench.LADDER_SYSTEMS}
    if all(share is None for share in shares.values()):
        return []
    shown = ", ".join(
        f"{name} {'-' if share is None else f'{share:.0%}'}" for name, share in shares.items()
    )
    low = [name for name, share in shares.items() if share is not None and share < BUDGET_SET_LIMIT]
    verdict = (
        f"; under {BUDGET_SET_LIMIT:.0%}: {', '.join(low)} hardly met the budget "
        "(its limit was the machine's: that ratio says less)"
        if low
        else ""
    )
    return [("", f"periods throttled above the limit: {shown}{verdict}", "")]


def sip_rows(sip: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    if "throughput_unconditional" in sip:
        for case in sip_bench.CASES:
            through = sip[f"throughput_{case}"]

            def rate(name: str, through: dict[str, Any] = through) -> str:
                # "+": the ladder's top rate passed, the real limit is higher
                capped = "+" if through[f"{name}_capped"] else ""
                return f"{through[f'max_rate_{name}']}{capped}"

            def each(key: str, through: dict[str, Any] = through) -> str:
                # every ladder's own ratio, when there were several
                runs = through.get("ladders", [])
                if len(runs) < 2:
                    return ""
                return " [" + ", ".join(_x(run[key]) for run in runs) + "]"

            rows += [
                (
                    f"throughput, {case} (calls/s)",
                    f"divert {rate('divert')} / wire-equivalent {rate('equivalent')} "
                    f"= {through['ratio_equivalent']}{each('ratio_equivalent')}",
                    ">= 0.9",
                ),
                (
                    "",
                    f"divert {rate('divert')} / minimal baseline {rate('baseline')} "
                    f"= {through['ratio_baseline']}{each('ratio_baseline')}",
                    ">= 0.75",
                ),
            ]
            rows += budget_rows(through)
        for case in sip_bench.CASES:
            cpu = sip[f"cpu_{case}"]
            resent = "/".join(str(n) for n in cpu["retransmissions"].values())
            rows += [
                (
                    f"Kamailio CPU per call, {case}",
                    f"divert {_us(cpu['divert_us'])}, wire-equivalent "
                    f"{_us(cpu['equivalent_us'])}, baseline {_us(cpu['baseline_us'])}, "
                    f"twin {_us(cpu['twin_us'])}",
                    "",
                ),
                (
                    "",
                    f"divert / equivalent x{cpu['ratio_equivalent']}, / baseline "
                    f"x{cpu['ratio_baseline']}, twin / baseline x{cpu['twin_ratio']} "
                    f"({cpu['rate']}/s each, all at once, rounds paired; "
                    f"retransmissions {resent})",
                    "",
                ),
            ]
        for case in sip_bench.CASES:
            checks = sip.get(f"checks_{case}")
            if checks is None:
                continue
            rows += [
                (
                    f"what divert's checks cost, {case}",
                    f"divert {_us(checks['divert_us'])}, without them {_us(checks['bare_us'])}, "
                    f"wire-equivalent {_us(checks['equivalent_us'])}: divert / equivalent "
                    f"x{checks['ratio_equivalent']}, divert / without x{checks['ratio_bare']}, "
                    f"without / equivalent x{checks['bare_ratio_equivalent']} "
                    "(all at once, rounds paired)",
                    "",
                ),
            ]
        if "checks_unconditional" in sip:
            rows.append(
                (
                    "",
                    "the checks (bench/bare_node.py): "
                    + ", ".join(sip["checks_unconditional"]["checks"]),
                    "",
                )
            )
        for case in sip_bench.CASES:
            late = sip[f"latency_{case}"]
            rows.append(
                (
                    f"INVITE route, {case} (median / p99)",
                    ", ".join(
                        f"{name} {late[name]['invite_median_us'] or 0:.0f} / "
                        f"{late[name]['invite_p99_us'] or 0:.0f} us"
                        for name in sip_bench.LADDER_SYSTEMS
                    ),
                    "",
                )
            )
    if "cold_warm" in sip:
        cold = sip["cold_warm"]
        rows.append(
            (
                "divert CPU per call, cold / warm numbers",
                f"cold {_us(cold['cold_us'])} / warm {_us(cold['warm_us'])}: "
                f"x{_x(cold['ratio'])} ({cold['rate']}/s, unconditional; rounds paired)",
                "<= x1.3",
            )
        )
    if "scale" in sip:
        scale = sip["scale"]
        numbers = scale["numbers"]
        memory = scale["memory_large"]
        rows += [
            (
                "divert CPU per call, dialling all numbers",
                f"{numbers['small']:,}: {_us(scale['small_us'])}, {numbers['large']:,}: "
                f"{_us(scale['large_us'])}: x{_x(scale['growth'])} (both at once, rounds paired)",
                "<= x1.10",
            ),
            (
                f"node of {numbers['large']:,} numbers: start",
                f"answers SIP {scale['large_answers_s']} s, routes {scale['large_routes_s']} s, "
                f"native plans {scale.get('large_native_s')} s "
                f"after `divert run` (portal seeded in {sip['seeded_s'].get('large')} s)",
                "",
            ),
            (
                f"node of {numbers['large']:,} numbers: memory",
                f"store {memory['store_mb']} MB on disk, Kamailio PSS "
                f"{memory['kamailio_pss_mb']} MB "
                f"({memory['kamailio_processes']} processes), shm in use "
                f"{memory['shm_real_used_mb']} MB, sync worker RSS {memory['sync_rss_mb']} MB, "
                f"divert run {memory['divert_run_rss_mb']} MB",
                "report",
            ),
        ]
    return rows


def table(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = sip_rows(results["sip"])
    if "core" not in results:
        return rows
    core = results["core"]
    small, large, growth = core["1000"], core["1000000"], core["growth"]
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
    sip_bench.add_arguments(parser)
    parser.add_argument("--no-core", action="store_true", help="leave out core_bench.py")
    args = parser.parse_args()
    step = sip_bench.apply_arguments(args)
    started = time.monotonic()
    results: dict[str, Any] = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if not args.no_core:
        print("core and store ...", flush=True)
        results["core"] = core_bench.run(1 if args.quick else 3)
    print("through Kamailio (divert and the native yardsticks in alternation) ...", flush=True)
    results["sip"] = sip_bench.run(step, args.parts, args.quick)
    results["seconds"] = round(time.monotonic() - started, 1)
    out = ROOT / "var" / "bench" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nmachine: {results['machine']}")
    print(f"Kamailio CPU in the throughput rows: {results['sip']['cpu']}")
    rows = table(results)
    width = max(len(name) for name, _, _ in rows)
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value.ljust(72)}  {target}")
    print(f"\n{results['seconds']:.0f} s; every figure in {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
