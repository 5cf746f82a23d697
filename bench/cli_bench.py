"""How long `divert --help` and a portal command take to start (issue 15's
target: --help under 150 ms).  Each is run `--runs` times; the median and
the slowest are printed.  A benchmark, not a test: machines are noisy.

    .venv/bin/python bench/cli_bench.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DIVERT = str(Path(sys.executable).with_name("divert"))


def timed(command: list[str], runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        portal = f"sqlite:///{folder}/portal.db"
        subprocess.run(
            [DIVERT, "--portal", portal, "db", "upgrade"], capture_output=True, check=True
        )
        cases = {
            "divert --help": [DIVERT, "--help"],
            "divert run --help": [DIVERT, "run", "--help"],
            "divert tenant list": [DIVERT, "--portal", portal, "tenant", "list"],
        }
        for name, command in cases.items():
            seconds = timed(command, args.runs)
            print(
                f"{name:<22} median {statistics.median(seconds) * 1000:6.1f} ms, "
                f"slowest {max(seconds) * 1000:6.1f} ms ({args.runs} runs)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
