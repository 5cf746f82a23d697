"""divert.supervisor: restarts with backoff, and no process left behind."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from divert import supervisor
from divert.supervisor import Child, Supervisor, describe, group_members, kill_group, leftovers

# A child that forks a grandchild into its own process group (as Kamailio
# forks its workers), then sleeps.
FORKING = (
    "import os, time\nif os.fork() == 0:\n    time.sleep(60)\n    os._exit(0)\ntime.sleep(60)\n"
)


def child(tmp_path: Path, name: str = "worker", code: str = FORKING) -> Child:
    return Child(name, lambda: [sys.executable, "-c", code], {}, tmp_path / f"{name}.pid")


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervisor]:
    running = Supervisor()
    yield running
    running.stop_all()


def wait_for(check, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_dead_child_is_restarted_after_a_delay_with_one_log_line(
    supervised: Supervisor, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    supervised.add(child(tmp_path))
    supervised.start_all()
    first = supervised.child("worker")
    assert first.process is not None
    leader = first.process.pid
    wait_for(lambda: len(group_members(leader)) == 2)
    assert int((tmp_path / "worker.pid").read_text()) == leader

    os.kill(leader, signal.SIGKILL)
    wait_for(lambda: first.process is not None and first.process.poll() is not None)
    with caplog.at_level(logging.WARNING, logger="divert.run"):
        supervised.check()
    (line,) = [r.message for r in caplog.records]
    assert f"worker (pid {leader}) was killed by SIGKILL" in line
    assert "restarting in 0.5 s" in line
    assert group_members(leader) == []  # the orphaned grandchild went with it
    wait_for(lambda: supervised.check() is not None and first.starts == 2)
    assert first.process is not None and first.process.pid != leader


def test_quick_deaths_double_the_delay_up_to_its_limit(supervised: Supervisor, tmp_path: Path):
    quick = child(tmp_path, "quick", "raise SystemExit(3)")
    supervised.add(quick)
    supervised.start_all()
    delays = []
    for _ in range(8):
        wait_for(lambda: quick.process is not None and quick.process.poll() is not None)
        before = time.monotonic()
        supervised.check()
        assert quick.restart_at is not None
        delays.append(round(quick.restart_at - before, 1))
        quick.restart_at = before  # do not wait for it in the test
        supervised.check()
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_stopping_leaves_no_process_of_any_group(supervised: Supervisor, tmp_path: Path):
    supervised.add(child(tmp_path, "a"))
    supervised.add(child(tmp_path, "b"))
    supervised.start_all()
    leaders = [c.process.pid for c in supervised.children if c.process is not None]
    wait_for(lambda: all(len(group_members(leader)) == 2 for leader in leaders))
    supervised.stop_all()
    assert [group_members(leader) for leader in leaders] == [[], []]
    assert not (tmp_path / "a.pid").exists()


def test_children_are_told_to_stop_when_the_supervisor_dies(tmp_path: Path):
    """A supervisor killed with SIGKILL: its children get SIGTERM (PDEATHSIG)."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from divert.supervisor import Child, Supervisor\n"
        f"folder = Path({str(tmp_path)!r})\n"
        "s = Supervisor()\n"
        "s.add(Child('sleeper', lambda: [sys.executable, '-c', 'import time; time.sleep(60)'],"
        " {}, folder / 'sleeper.pid'))\n"
        "s.start_all()\n"
        "time.sleep(60)\n"
    )
    import subprocess

    boss = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[1])
    try:
        wait_for(lambda: (tmp_path / "sleeper.pid").exists())
        sleeper = int((tmp_path / "sleeper.pid").read_text())
        boss.kill()
        boss.wait()
        wait_for(lambda: not Path(f"/proc/{sleeper}").exists() or _zombie(sleeper))
    finally:
        boss.kill()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_leftovers_of_a_previous_node_are_stopped_only_if_they_are_its_own(tmp_path: Path):
    import subprocess

    marker = str(tmp_path / "state")
    ours = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", marker], process_group=0
    )
    theirs = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], process_group=0
    )
    try:
        (tmp_path / "ours.pid").write_text(f"{ours.pid}\n")
        (tmp_path / "theirs.pid").write_text(f"{theirs.pid}\n")
        leftovers([tmp_path / "ours.pid", tmp_path / "theirs.pid", tmp_path / "none.pid"], marker)
        ours.wait(timeout=5)  # reaped by kill_group already: the status is gone with it
        assert not Path(f"/proc/{ours.pid}").exists()
        assert theirs.poll() is None  # a PID that is not ours is left alone
    finally:
        for process in (ours, theirs):
            process.kill()
            process.wait()


def test_kill_group_of_an_empty_group_is_true_at_once():
    assert kill_group(2**22 + 12345) is True


def test_exits_are_described_in_words():
    assert describe(-9) == "was killed by SIGKILL"
    assert describe(1) == "exited with status 1"
    assert supervisor.FIRST_DELAY == 0.5


def test_a_restart_that_cannot_start_is_tried_again_not_the_end(
    supervised: Supervisor, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    program = tmp_path / "program"
    program.write_text("#!/bin/sh\nexit 3\n")
    program.chmod(0o755)
    flaky = Child("flaky", lambda: [str(program)], {}, tmp_path / "flaky.pid")
    supervised.add(flaky)
    supervised.start_all()
    wait_for(lambda: flaky.process is not None and flaky.process.poll() is not None)
    supervised.check()
    program.unlink()  # the next start fails: FileNotFoundError from Popen
    assert flaky.restart_at is not None
    flaky.restart_at = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="divert.run"):
        supervised.check()
    assert "flaky could not be started (FileNotFoundError" in caplog.records[-1].message
    assert flaky.restart_at is not None and flaky.restart_at > time.monotonic()


def test_leftovers_match_the_folder_exactly():
    assert supervisor.names(b"divert\0--state-dir\0/var/lib/divert\0", "/var/lib/divert")
    assert supervisor.names(
        b'kamailio\0-A\0CTL="unix:/var/lib/divert/run/ctl"\0', "/var/lib/divert"
    )
    assert not supervisor.names(b"divert\0--state-dir\0/var/lib/divert2\0", "/var/lib/divert")
