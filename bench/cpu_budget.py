"""Confine processes to a share of one CPU core with a Linux cgroup.

The SIP benchmark gives divert's Kamailio and the baseline's the same CPU
budget, so that the highest call rate each sustains is set by its own cost
per call and not by the sipp peers sharing the machine.  cgroup v2 (a
``cpu.max`` file) and v1 (the ``cpu`` controller's ``cpu.cfs_quota_us``)
are both handled; where neither can be written (no root, no cpu
controller), `CpuBudget.create` says why and the caller runs unconfined.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

PERIOD_US = 20_000  # short periods: a throttled worker waits milliseconds, not 100
V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup/cpu")


class BudgetUnavailable(Exception):
    """No cgroup this process may write to limit CPU."""


class CpuBudget:
    """One cgroup with a CPU quota of `share` of one core."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, name: str, share: float | None) -> CpuBudget:
        """A new cgroup limited to `share` of one core (None: no limit yet)."""
        errors = []
        for root, limit in ((V2_ROOT, cls._limit_v2), (V1_ROOT, cls._limit_v1)):
            path = root / f"{name}-{os.getpid()}"
            try:
                if not cls._usable(root):
                    errors.append(f"{root}: no cpu controller")
                    continue
                path.mkdir()
                limit(path, share)
                return cls(path)
            except OSError as error:
                errors.append(f"{path}: {error.strerror or error}")
                if path.is_dir():
                    path.rmdir()
        raise BudgetUnavailable("; ".join(errors))

    @staticmethod
    def _usable(root: Path) -> bool:
        if root == V2_ROOT:
            controllers = root / "cgroup.controllers"
            return controllers.is_file() and "cpu" in controllers.read_text().split()
        return (root / "cpu.cfs_quota_us").is_file()

    @staticmethod
    def _limit_v2(path: Path, share: float | None) -> None:
        quota = "max" if share is None else str(int(PERIOD_US * share))
        (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")

    @staticmethod
    def _limit_v1(path: Path, share: float | None) -> None:
        (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        quota = -1 if share is None else int(PERIOD_US * share)
        (path / "cpu.cfs_quota_us").write_text(str(quota))

    def limit(self, share: float | None) -> None:
        """Change the budget to `share` of one core (None: no limit)."""
        if (self.path / "cpu.max").is_file():
            self._limit_v2(self.path, share)
        else:
            self._limit_v1(self.path, share)

    def throttling(self) -> tuple[int, int]:
        """(periods the group ran in, periods it ran out of quota in) so
        far, from cpu.stat (cgroup v1 and v2 alike); (0, 0) if unreadable."""
        try:
            fields = dict(
                line.split() for line in (self.path / "cpu.stat").read_text().splitlines()
            )
            return int(fields["nr_periods"]), int(fields["nr_throttled"])
        except (OSError, KeyError, ValueError):
            return 0, 0

    def add(self, pids: Iterable[int]) -> None:
        for pid in pids:
            (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """Delete the cgroup; its processes must have exited (or they move
        back to the parent group first)."""
        if not self.path.is_dir():
            return
        parent = self.path.parent / "cgroup.procs"
        for pid in (self.path / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # exited meanwhile
                parent.write_text(pid)
        self.path.rmdir()
