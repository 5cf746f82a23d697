"""What divert's metrics cost the SIP path (issue 15): Kamailio's
`statistics.update_stat` from KEMI Python, alone and as a decision pays it
(two clock reads and three counter adds), measured inside a real Kamailio.

    .venv/bin/python bench/stats_cost.py

A throwaway Kamailio on 127.0.0.71:5060 (one SIP worker) runs the loops
when a single OPTIONS arrives; the figures come back in its log.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LISTEN = "127.0.0.71:5060"
ROUNDS = 200_000

CONFIG = f"""#!KAMAILIO
debug=2
log_stderror=yes
children=1
listen=udp:{LISTEN}
auto_aliases=no
dns=no
rev_dns=no
disable_tcp=yes
loadmodule "sl.so"
loadmodule "statistics.so"
modparam("statistics", "variable", "divert:decision_le_50us")
modparam("statistics", "variable", "divert:decision_sum_us")
loadmodule "app_python3.so"
modparam("app_python3", "load", "SCRIPT")
cfgengine "python"
"""

SCRIPT = f"""
import time
import KSR

ROUNDS = {ROUNDS}


def mod_init():
    return Bench()


class Bench:
    def child_init(self, rank):
        return 0

    def ksr_request_route(self, msg):
        start = time.perf_counter_ns()
        for _ in range(ROUNDS):
            pass
        empty = time.perf_counter_ns() - start
        start = time.perf_counter_ns()
        for _ in range(ROUNDS):
            KSR.statistics.update_stat("divert:decision_le_50us", 1)
        one = time.perf_counter_ns() - start - empty
        start = time.perf_counter_ns()
        for _ in range(ROUNDS):
            began = time.perf_counter_ns()
            elapsed = (time.perf_counter_ns() - began) // 1000
            KSR.statistics.update_stat("divert:decision_le_50us", 1)
            KSR.statistics.update_stat("divert:decision_sum_us", elapsed)
            KSR.statistics.update_stat("divert:decision_le_50us", 1)
        full = time.perf_counter_ns() - start - empty
        KSR.info(f"STATS {{one / ROUNDS:.0f}} {{full / ROUNDS:.0f}}\\n")
        KSR.sl.sl_send_reply(200, "OK")
        return 1
"""


def main() -> int:
    kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "bench.py"
        script.write_text(SCRIPT)
        config = Path(folder) / "kamailio.cfg"
        config.write_text(CONFIG.replace("SCRIPT", str(script)))
        log = Path(folder) / "kamailio.log"
        with open(log, "wb") as output:
            server = subprocess.Popen(
                [kamailio, "-f", str(config), "-DD", "-E", "-Y", folder],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            time.sleep(2)
            for run in range(3):
                subprocess.run(
                    ["sipp", "-sn", "uac", LISTEN, "-i", "127.0.0.72", "-p", str(5071 + run),
                     "-m", "1", "-timeout", "20s", "-timeout_error"],
                    capture_output=True,
                    timeout=60,
                )  # fmt: skip
            found = re.findall(r"STATS (\d+) (\d+)", log.read_text())
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
    if not found:
        print("no figures: see whether Kamailio started", file=sys.stderr)
        return 1
    alone = sorted(int(a) for a, _ in found)[len(found) // 2]
    decision = sorted(int(b) for _, b in found)[len(found) // 2]
    print(f"update_stat from KEMI Python: {alone} ns per call (median of {len(found)} runs)")
    print(f"a decision's metrics (two clock reads, three adds): {decision} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
