"""Kamailio's log as `divert run` passes it on: noise about malformed
messages limited to one line per source address a minute.

Kamailio logs several lines for every message it cannot parse (its parsers'
errors at ERROR level, then what failed because of them), and those lines
cannot be lowered without silencing every other core error.  One broken
carrier, or a stranger sending junk, would fill the disk.  So `divert run`
reads Kamailio's standard error and sends every line on, except lines about
malformed messages beyond the first of each source address in a minute; the
next line let through for that source counts what was held back, and so
does a summary when a source falls silent.  The lines let through are
marked NOTICE, whatever level the parser gave them: somebody else's junk is
no error of this node, and an operator's alerts on ERROR stay quiet.

Which source a line is about: `kamailio.cfg`'s log prefix starts with the
message's ``source:port``.  The lines the core logs before it has parsed a
message carry no prefix; they belong to the ``core parsing of SIP message
failed (ip:port/proto)`` line the same process logs after them.

Control characters in any line (junk bytes the log prefix may quote) are
shown escaped, so nobody can forge log lines or drive a terminal.
"""

from __future__ import annotations

import os
import re
import select
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

WINDOW_SECONDS = 60.0
MAX_SOURCES = 4096  # sources remembered; the oldest is forgotten first
MAX_LINE = 8192  # bytes of one line kept (a longer one is cut)
UNKNOWN = "an unknown source"
PENDING_SECONDS = 1.0  # unprefixed parser lines wait this long for their source

_PROCESS = re.compile(rb"^\s*\d+\((\d+)\) ")
_SOURCE = re.compile(rb"^\s*\d+\(\d+\) [A-Z]+: \{(\d{1,3}(?:\.\d{1,3}){3}):\d+ ")
_PARSE_FAILED = re.compile(
    rb"core parsing of SIP message failed \((\d{1,3}(?:\.\d{1,3}){3}):\d+/\d+\)"
)
_NOISE = re.compile(  # where Kamailio logs about messages it cannot parse
    rb"\[core/parser/|\[core/receive\.c:|\]: build_res_buf_from_sip_req\(\)|"
    rb"sanity \[|maxfwd \[|divert: malformed request|"
    rb"(?:pv|rr|tm|uac|auth|registrar|siputils|textops) \[\w+\.c:\d+\]: \w+\(\): .*(?i:pars)"
)
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")
_LEVEL = re.compile(rb"^(\s*\d+\(\d+\) )(?:ERROR|WARNING|CRITICAL|ALERT|BUG):")


def _clean(line: bytes) -> bytes:
    """`line` with control characters shown as \\xNN, and cut to MAX_LINE."""
    cut = line[:MAX_LINE]
    return _CONTROL.sub(lambda m: b"\\x%02x" % m.group()[0], cut)


@dataclass
class _Window:
    started: float
    held: int = 0


@dataclass
class _Pending:
    since: float
    lines: list[bytes] = field(default_factory=list)


class LogFilter:
    """Decides, line by line, what to pass on.  Pure apart from `emit`."""

    def __init__(self, emit: Callable[[bytes], None], window: float = WINDOW_SECONDS) -> None:
        self._emit = emit
        self._window = window
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._pending: dict[bytes, _Pending] = {}

    def feed(self, line: bytes, now: float) -> None:
        line = _clean(line.rstrip(b"\r\n"))
        process = _PROCESS.match(line)
        pid = process.group(1) if process else b""
        failed = _PARSE_FAILED.search(line)
        if failed is not None:
            pending = self._pending.pop(pid, None)
            for held in (pending.lines if pending else []) + [line]:
                self._noise(failed.group(1).decode(), held, now)
            return
        source = _SOURCE.match(line)
        if pid in self._pending and (source is not None or not _NOISE.search(line)):
            self._flush(pid, now)  # the process moved on: its lines found no source
        if not _NOISE.search(line):
            self._emit(line)
        elif source is not None:
            self._noise(source.group(1).decode(), line, now)
        else:
            self._pending.setdefault(pid, _Pending(now)).lines.append(line)

    def tick(self, now: float) -> None:
        """Time passes: unclaimed parser lines go to the unknown source, and a
        source silent for a whole window after its last one gets its count
        of held lines (one still sending gets it in its next line)."""
        for pid in [p for p, held in self._pending.items() if now - held.since > PENDING_SECONDS]:
            self._flush(pid, now)
        for source, window in list(self._windows.items()):
            if now - window.started >= 2 * self._window:
                if window.held:
                    self._emit(self._summary(source, window.held))
                del self._windows[source]

    def _flush(self, pid: bytes, now: float) -> None:
        pending = self._pending.pop(pid)
        for line in pending.lines:
            self._noise(UNKNOWN, line, now)

    def _noise(self, source: str, line: bytes, now: float) -> None:
        window = self._windows.get(source)
        if window is not None and now - window.started < self._window:
            window.held += 1
            return
        held = window.held if window is not None else 0
        self._windows[source] = _Window(now)
        self._windows.move_to_end(source)
        while len(self._windows) > MAX_SOURCES:
            self._windows.popitem(last=False)
        note = f" (and {held} more before)" if held else ""
        limit = f" [divert: malformed messages from {source} are logged once a minute{note}]"
        self._emit(_LEVEL.sub(rb"\1NOTICE:", line, count=1) + limit.encode())

    def _summary(self, source: str, held: int) -> bytes:
        return (
            f"divert: {held} more lines about malformed messages from {source} "
            f"in the last {self._window:.0f} s not logged"
        ).encode()


def pump(
    read_fd: int,
    out: BinaryIO,
    clock: Callable[[], float] = time.monotonic,
    window: float = WINDOW_SECONDS,
) -> None:
    """Copy lines from `read_fd` to `out` through a `LogFilter` until EOF."""

    def emit(line: bytes) -> None:
        out.write(line + b"\n")
        out.flush()

    limiter = LogFilter(emit, window)
    buffer = b""
    while True:
        ready, _, _ = select.select([read_fd], [], [], 1.0)
        if ready:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if len(buffer) > MAX_LINE:
                lines.append(buffer)
                buffer = b""
            for line in lines:
                limiter.feed(line, clock())
        limiter.tick(clock())
    if buffer:
        limiter.feed(buffer, clock())
    limiter.tick(float("inf"))
    os.close(read_fd)


def start_pump(read_fd: int, out: BinaryIO) -> threading.Thread:
    thread = threading.Thread(target=pump, args=(read_fd, out), name="kamailio-log", daemon=True)
    thread.start()
    return thread
