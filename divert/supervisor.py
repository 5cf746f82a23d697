"""Keeping a node's processes running: restart with backoff, leave no orphan.

`divert run` starts two children (the sync worker and Kamailio) and keeps
them running.  A child that dies is started again after
a delay that doubles with each quick death (0.5 s up to 30 s; a run of
30 s forgets the count), with one log line saying what ended it.

No exit path leaves a process behind.  The choice, and why:

- Each child runs in a **process group of its own**.  Kamailio forks its SIP
  workers, timers and probers into that group; when its main process dies
  (it stops by design when any of its processes dies, or a ``kill -9`` takes
  it) the group's leftovers are killed and reaped before a new Kamailio may
  take the port.  Ctrl-C in a terminal reaches `divert run` alone, which
  stops the children in order.
- Each child gets **PR_SET_PDEATHSIG = SIGTERM** before it runs: if `divert
  run` itself dies, ``kill -9`` included, the kernel tells every child to
  stop, and Kamailio's main process stops its own workers.
- `divert run` is a **child subreaper**: Kamailio workers orphaned by their
  main process are reparented to it, not to a PID 1 that may never reap
  them, so their exit is seen and no zombie remains.
- A cgroup would need root or a systemd delegation; under systemd the unit's
  own cgroup (``KillMode=mixed``) is an outer layer on top of these, not a
  replacement.

What this cannot cover: a ``kill -9`` of `divert run` and of Kamailio's main
process at the same time leaves Kamailio's workers to the next `divert run`
on the same state folder, which stops them before it starts (`leftovers`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("divert.run")

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
FIRST_DELAY = 0.5  # seconds before the first restart
MOST_DELAY = 30.0
STEADY = 30.0  # a child that ran this long starts its backoff afresh
STOP_SECONDS = 15.0
GONE_SECONDS = 5.0  # how long a killed group may take to disappear

_libc = ctypes.CDLL(None, use_errno=True)


def become_subreaper() -> None:
    """Orphaned descendants are reparented to this process (Linux only)."""
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _stop_with(parent: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: SIGTERM when `parent` dies.

    Only an already-resolved C call and ``os`` calls: nothing that could
    wait on a lock another thread of `divert run` held at the fork."""

    def in_child() -> None:
        # `divert run`'s own SIGTERM handler would swallow the signal until exec
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # died before the line above took effect
            os._exit(1)

    return in_child


def group_members(group: int) -> list[int]:
    """Live (not yet reaped) processes of process group `group`, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == group:
            found.append(int(stat.parent.name))
    return found


def kill_group(group: int, timeout: float = GONE_SECONDS) -> bool:
    """SIGKILL every process of `group`, reap those that are ours, and wait
    until none is left.  False if some are still there after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        members = group_members(group)
        if not members:
            return True
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):  # not ours: its parent reaps it
                os.waitpid(pid, os.WNOHANG)  # reparented to us: reap it
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


@dataclass
class Child:
    """One supervised program and its restart bookkeeping."""

    name: str
    command: Callable[[], list[str]]
    env: dict[str, str]
    pid_file: Path
    # set up a standard error for the child: (fd the child gets, cleanup after spawn)
    stderr: Callable[[], tuple[int, Callable[[], None]]] | None = None
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    group_left: bool = False  # its group outlived its leader: kill it before a restart
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Supervisor:
    """Starts the children, restarts the dead ones, stops them all."""

    children: list[Child] = field(default_factory=list)
    _unwritable_logged: bool = False

    def __post_init__(self) -> None:
        self._parent = os.getpid()
        self._thread = threading.get_ident()
        become_subreaper()

    def add(self, child: Child) -> None:
        self.children.append(child)

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def start_all(self) -> None:
        for child in self.children:
            self._start(child)

    def _start(self, child: Child) -> None:
        # PR_SET_PDEATHSIG fires when the *thread* that forked exits: always fork from one.
        assert threading.get_ident() == self._thread, "children are started by the main thread"
        stderr, after = child.stderr() if child.stderr is not None else (None, lambda: None)
        try:
            child.process = subprocess.Popen(
                child.command(),
                env={**os.environ, **child.env},
                stderr=stderr,
                process_group=0,
                preexec_fn=_stop_with(self._parent),
            )
        finally:
            after()
        child.started = time.monotonic()
        child.restart_at = None
        child.starts += 1
        self._write_pid(child)
        log.info("%s started (pid %d)", child.name, child.process.pid)

    def _write_pid(self, child: Child) -> None:
        assert child.process is not None
        try:
            temporary = child.pid_file.with_suffix(".tmp")
            temporary.write_text(f"{child.process.pid}\n")
            temporary.replace(child.pid_file)
        except OSError as error:  # a full disk must not stop the node
            if not self._unwritable_logged:
                log.warning("cannot write %s: %s", child.pid_file, error.strerror)
                self._unwritable_logged = True

    def check(self) -> float:
        """Handle deaths and due restarts; seconds until the next due restart."""
        now = time.monotonic()
        soonest = MOST_DELAY
        for child in self.children:
            if child.process is not None and child.restart_at is None:
                code = child.process.poll()
                if code is not None:
                    self._died(child, code, now)
            if child.group_left and child.process is not None:
                child.group_left = not kill_group(child.process.pid, timeout=0.5)
                if child.group_left:
                    continue  # try again at the next check
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child, now)
                else:
                    soonest = min(soonest, child.restart_at - now)
        return soonest

    def _restart(self, child: Child, now: float) -> None:
        """Start `child` again; a start that fails (no memory, no process
        slot, a file gone) is retried later, never the end of the node."""
        try:
            self._start(child)
        except Exception as error:  # anything: logged, and tried again later
            child.quick_deaths += 1
            delay = min(MOST_DELAY, FIRST_DELAY * 2 ** max(0, child.quick_deaths - 1))
            child.restart_at = now + delay
            log.error(
                "%s could not be started (%s: %s); trying again in %.1f s",
                child.name,
                type(error).__name__,
                error,
                delay,
            )

    def _died(self, child: Child, code: int, now: float) -> None:
        assert child.process is not None
        lived = now - child.started
        child.quick_deaths = 0 if lived >= STEADY else child.quick_deaths + 1
        delay = min(MOST_DELAY, FIRST_DELAY * 2 ** max(0, child.quick_deaths - 1))
        child.restart_at = now + delay
        child.group_left = bool(group_members(child.process.pid))
        log.warning(
            "%s (pid %d) %s after %.0f s; restarting in %.1f s",
            child.name,
            child.process.pid,
            describe(code),
            lived,
            delay,
        )

    def stop_all(self) -> None:
        """SIGTERM each child (last started first), then make sure that every
        process of every child's group is gone."""
        running = [c for c in reversed(self.children) if c.running]
        for child in running:
            assert child.process is not None
            child.process.terminate()
        for child in self.children:
            if child.process is None:
                continue
            if child.restart_at is not None and not child.group_left:
                # dead and dealt with: its group's number may be somebody else's by now
                child.pid_file.unlink(missing_ok=True)
                continue
            try:
                child.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.error(
                    "%s did not stop in %.0f s; killing pid %d",
                    child.name,
                    STOP_SECONDS,
                    child.process.pid,
                )
            if not kill_group(child.process.pid):
                log.error("%s: group %d survives SIGKILL", child.name, child.process.pid)
            child.process.poll()
            child.pid_file.unlink(missing_ok=True)


def names(command: bytes, folder: str) -> bool:
    """Does a command line (NUL-separated) name `folder`, or a path in it?"""
    wanted = folder.encode()
    return any(argument == wanted or wanted + b"/" in argument for argument in command.split(b"\0"))


def leftovers(pid_files: list[Path], marker: str) -> None:
    """Stop processes a previous `divert run` on this state folder left running.

    Only a double fault leaves any (see the module's docstring); a process
    counts as ours when its group is in our PID file and its command line
    names `marker` (the state folder, or a path in it), so a PID reused by
    anything else is safe."""
    for pid_file in pid_files:
        try:
            group = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        for pid in group_members(group):  # the leader may be gone, its workers not
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if names(command, marker):
                log.warning(
                    "a previous node's %s (process group %d) still runs: stopping it",
                    pid_file.stem,
                    group,
                )
                kill_group(group)
                break
