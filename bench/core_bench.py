"""Benchmark of the decision core and the store at 1,000 and 1,000,000 numbers.

    .venv/bin/python bench/core_bench.py [--json FILE]

Writes two stores straight through the store writer (no portal: this is
about lookup and decision cost, not sync), half the numbers with an
unconditional forward, half with a busy forward, then measures per call:

- store lookup, cold (a key's first lookup: a SQLite read) and cached;
- `decide()` for a new call to a number with an unconditional forward, and
  after busy, with the store lookups it makes hitting the reader's cache;

and the growth of each from 1,000 to 1,000,000 numbers (target: 20% at
most).  Every loop is bounded in count; nothing touches the network.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from divert.kemi.core.decide import decide  # noqa: E402
from divert.kemi.core.model import Call, CallState, Outcome  # noqa: E402
from divert.kemi.store.format import encode_parts  # noqa: E402
from divert.kemi.store.reader import StoreReader  # noqa: E402
from divert.kemi.store.writer import StoreWriter  # noqa: E402

SIZES = (1_000, 1_000_000)
COLD_SAMPLES = 1_000  # distinct keys read once each, at both sizes
CALLS = 50_000


def number(index: int) -> str:
    return f"+3902{10_000_000 + index}"


def target(index: int) -> str:
    return f"+39335{1_000_000 + index}"


def rows(count: int) -> Iterator[tuple[str, str, str | None, bytes]]:
    for index in range(count):
        key = number(index)
        condition = "always" if index % 2 == 0 else "busy"
        rule = (
            condition,
            "any",
            "number",
            target(index),
            target(index),
            0,
            "forward",
            None,
            (),
            None,
        )
        yield key, "bench", None, encode_parts(key, "bench", key, "trunk", "1", None, (rule,))


def build(state: Path, count: int) -> float:
    started = time.perf_counter()
    writer = StoreWriter(state)
    with writer.transaction():
        writer.reset()
        writer.put_tables(rows(count))
        writer.index_tables()
    writer.close()
    return time.perf_counter() - started


def timed(work: Callable[[], object], times: int) -> list[int]:
    samples = []
    for _ in range(times):
        started = time.perf_counter_ns()
        work()
        samples.append(time.perf_counter_ns() - started)
    return samples


def measure(state: Path, count: int) -> dict[str, float]:
    rng = random.Random(count)
    picks = rng.sample(range(count), COLD_SAMPLES)
    cold_reader = StoreReader(state, cache_size=COLD_SAMPLES + 10)
    cold_reader.table(number(picks[0]))  # opens the files: not a lookup cost
    cold = []
    for index in picks[1:]:
        key = number(index)
        started = time.perf_counter_ns()
        cold_reader.table(key)
        cold.append(time.perf_counter_ns() - started)
    cold_reader.close()

    reader = StoreReader(state, cache_size=10_000)
    hot = [number(i) for i in picks if i % 2 == 0][:200]
    busy = [number(i) for i in picks if i % 2 == 1][:200]
    for key in hot + busy:
        reader.table(key)
        reader.table(target(int(key[5:]) - 10_000_000))  # the forward target: absent
    cycle = iter(range(10**9))
    cached = timed(lambda: reader.table(hot[next(cycle) % len(hot)]), CALLS)

    call = Call(caller="+441234567890", internal=False, now=time.time())
    new_calls = [CallState.begin(key) for key in hot]
    after_busy = [CallState.begin(key) for key in busy]
    cycle = iter(range(10**9))
    unconditional = timed(
        lambda: decide(call, new_calls[next(cycle) % len(new_calls)], None, reader.table), CALLS
    )
    cycle = iter(range(10**9))
    on_busy = timed(
        lambda: decide(call, after_busy[next(cycle) % len(after_busy)], Outcome.BUSY, reader.table),
        CALLS,
    )
    check = decide(call, new_calls[0], None, reader.table)
    assert getattr(check, "target", None) is not None, f"no relay: {check}"
    reader.close()
    return {
        "cold_lookup_median_us": _us(statistics.median(cold)),
        "cold_lookup_p99_us": _us(_p99(cold)),
        "cached_lookup_median_us": _us(statistics.median(cached)),
        "cached_lookup_p99_us": _us(_p99(cached)),
        "decide_unconditional_median_us": _us(statistics.median(unconditional)),
        "decide_unconditional_p99_us": _us(_p99(unconditional)),
        "decide_busy_median_us": _us(statistics.median(on_busy)),
        "decide_busy_p99_us": _us(_p99(on_busy)),
    }


def run(rounds: int = 3) -> dict[str, object]:
    """Both sizes measured in alternation, `rounds` times; the median round."""
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="divert-core-bench-") as scratch:
        states = {count: Path(scratch) / str(count) for count in SIZES}
        built = {count: build(state, count) for count, state in states.items()}
        rounds_of: dict[int, list[dict[str, float]]] = {count: [] for count in SIZES}
        for _ in range(rounds):
            for count, state in states.items():
                rounds_of[count].append(measure(state, count))
        for count in SIZES:
            figures = {
                name: round(statistics.median(r[name] for r in rounds_of[count]), 3)
                for name in rounds_of[count][0]
            }
            figures["store_build_s"] = round(built[count], 2)
            results[str(count)] = figures
    small, large = results[str(SIZES[0])], results[str(SIZES[1])]
    assert isinstance(small, dict) and isinstance(large, dict)
    results["growth"] = {
        name: round(large[name] / small[name], 3)
        for name in (
            "cold_lookup_median_us",
            "cached_lookup_median_us",
            "decide_unconditional_median_us",
            "decide_busy_median_us",
        )
    }
    return results


def _us(nanoseconds: float) -> float:
    return round(nanoseconds / 1000, 3)


def _p99(samples: list[int]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    results = run()
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
