"""The sync worker's half of native plans (`divert.kemi.plan_sync`).

Before every store transaction the worker sets Kamailio's
``$shv(divert_store)`` to ``busy``; after it, to the store's
``<epoch>:<seq>``.  Kamailio uses a native plan only while that value equals
the one its plan timer wrote for what its table holds: so from before a
commit until the table has the change, calls take the Python routes, which
read the store itself.

Kamailio not running (no control socket, or nobody listening) is fine: a
Kamailio that starts has ``none`` and waits for the next transaction's
value, or `refresh`'s.  A Kamailio that runs but does not answer is logged:
then only its plan timer, which looks once a second when nothing tells it
to sooner, keeps stale plans from being used (it marks the table
``filling`` as soon as it sees the new sequence).
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

VARIABLE = "divert_store"
BUSY = "busy"
log = logging.getLogger(__name__)


class KamailioGate:
    def __init__(self, run_dir: Path) -> None:
        self.socket = run_dir / "kamailio_ctl"
        self.pid_file = run_dir / "kamailio.pid.main"
        self._told: str | None = None  # the Kamailio (main PID) that has the value
        self._failing = False

    def closing(self) -> None:
        """Before a transaction: no native plan until `opened`."""
        self._set(BUSY)

    def opened(self, epoch: int, seq: int) -> None:
        """After it: plans of the store at (`epoch`, `seq`) may be used."""
        self._set(f"{epoch}:{seq}")

    def refresh(self, epoch: int, seq: int) -> None:
        """A Kamailio started since the last value it was told gets it now."""
        if self._kamailio() not in (None, self._told):
            self._set(f"{epoch}:{seq}")

    def _kamailio(self) -> str | None:
        try:
            return self.pid_file.read_text().strip() or None
        except OSError:
            return None

    def _set(self, value: str) -> None:
        if not self.socket.exists():
            return  # no Kamailio: one that starts has none
        kamailio = self._kamailio()
        for _attempt in range(2):
            try:
                done = subprocess.run(
                    ["kamcmd", "-s", f"unix:{self.socket}", "pv.shvSet", VARIABLE, "str", value],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                problem = str(error)
            else:
                if done.returncode == 0:
                    self._told = kamailio
                    if self._failing:
                        self._failing = False
                        log.info("Kamailio's plan gate answers again")
                    return
                problem = (done.stderr or done.stdout).strip()
                if "connect" in problem.lower() and "refused" in problem.lower():
                    return  # a control socket nobody listens on: Kamailio is down
        if not self._failing:
            self._failing = True
            log.warning("Kamailio's plan gate cannot be set (%s): native plans may lag", problem)
