"""make bench says whether the CPU budget set each system's limit in the
throughput ladder: a ratio of two limits the machine set (the sipp peers
share its cores) says less than it seems to."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def bench_module(name: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        while str(ROOT / "bench") in sys.path:  # bench.py adds it too
            sys.path.remove(str(ROOT / "bench"))


def test_the_throttling_above_a_limit_is_the_median_of_the_failed_steps() -> None:
    sip = bench_module("sip_bench")

    def step(rate: int, passed: bool, use: float | None):  # type: ignore[no-untyped-def]
        made = sip.Step(rate, 4000, 4000 if passed else 3900, 0 if passed else 100, 0, 4.0, 0)
        made.throttled = use
        return made

    steps = [
        step(1000, True, 0.1),
        step(1150, False, 0.05),  # a hiccup: tried again, passed
        step(1150, True, 0.3),
        step(1300, False, 0.6),
        step(1300, False, 0.4),
    ]
    assert sip._throttled_at_limit(steps, 1150) == 0.5
    assert sip._throttled_at_limit([step(1000, True, 0.9)], 1000) is None  # capped
    assert sip._throttled_at_limit([step(1150, False, None)], 1000) is None  # unconfined


def test_a_limit_the_budget_did_not_set_is_named() -> None:
    bench = bench_module("bench")
    through = {
        "throttled_at_limit_divert": 0.47,
        "throttled_at_limit_equivalent": 0.35,
        "throttled_at_limit_baseline": 0.02,
    }
    [(_, text, _)] = bench.budget_rows(through)
    assert text.startswith(
        "periods throttled above the limit: divert 47%, equivalent 35%, baseline 2%"
    )
    assert "baseline hardly met the budget" in text
    through["throttled_at_limit_baseline"] = 0.3
    [(_, text, _)] = bench.budget_rows(through)
    assert "hardly" not in text
    assert bench.budget_rows({}) == []  # a run without a cgroup: no row
