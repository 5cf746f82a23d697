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
no error of this node, and an operator's alerts on ERROR stay quiet.  Past
`MAX_NOISE_LINES` such lines a minute, from however many (spoofed) sources,
the rest is only counted.

Kamailio's standard error is one end of a SOCK_SEQPACKET socket pair, not a
pipe: every write arrives as one record with the writer's PID (the kernel's
SCM_CREDENTIALS), so a line is exactly what one log call wrote.  glibc
writes a long line in chunks of 8,192 bytes; a record of exactly that size
is joined with the same process's next one.  Within a line, every control
character (newlines included) is shown as ``\\xNN``: bytes a peer sent that
Kamailio quotes can never make a line of their own.

Which source a line is about: `kamailio.cfg`'s log prefix starts with the
message's ``source:port``.  The lines the core logs before it has parsed a
message carry no prefix; they belong to the ``core parsing of SIP message
failed (ip:port/proto)`` line the same process logs after them, or, when it
moves on without one, to "an unknown source".  The rest of the prefix
(CSeq, Call-ID) is the sender's text, so a sender can make lines about its
own messages look like noise, and no more than that.
"""

from __future__ import annotations

import re
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

WINDOW_SECONDS = 60.0
MAX_SOURCES = 4096  # sources remembered; the oldest is forgotten first
MAX_NOISE_LINES = 60  # noise lines let through a window, all sources together
MAX_LINE = 16384  # bytes of one line kept (a longer one is cut)
CHUNK = 8192  # glibc's BUFSIZ: a longer fprintf to stderr arrives in such records
UNKNOWN = "an unknown source"
PENDING_SECONDS = 1.0  # unprefixed parser lines wait this long for their source
_UCRED = struct.Struct("iII")  # pid, uid, gid

_IP = rb"\d{1,3}(?:\.\d{1,3}){3}"
_SOURCE = re.compile(rb"^\s*\d+\(\d+\) [A-Z]+: \{(" + _IP + rb"):\d+ ")
_PARSE_FAILED = re.compile(
    rb"^\s*\d+\(\d+\) [A-Z]+: <core> \[core/receive\.c:\d+\]: receive_msg\(\): "
    rb"core parsing of SIP message failed \((" + _IP + rb"):\d+/\d+\)$"
)
_LOCATION = re.compile(  # level, prefix (optional), module, file, function, message
    rb"^\s*\d+\(\d+\) [A-Z]+: (?:\{.*?\} )?(<core>|\w+) \[([\w/.]+):\d+\]: (\w+)\(\): (.*)$"
)
_RECEIVE_FAILURES = (
    b"core parsing of SIP message failed",
    b"no via found in request",
    b"required headers not found in request",
    b"parsing relevant headers failed",
)
_PARSING_MODULES = frozenset(
    (b"pv", b"rr", b"tm", b"uac", b"auth", b"registrar", b"siputils", b"textops", b"nathelper")
)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|\xc2[\x80-\x9f]")  # C0, DEL, C1
_LEVEL = re.compile(rb"^(\s*\d+\(\d+\) )(?:ERROR|WARNING|CRITICAL|ALERT|BUG):")


def _clean(record: bytes) -> bytes:
    """One line of UTF-8: control characters (newlines too) and bytes that are
    not UTF-8 shown as \\xNN, cut to MAX_LINE."""
    text = record[:-1] if record.endswith(b"\n") else record
    text = text[:MAX_LINE].decode("utf-8", "backslashreplace").encode()
    return _CONTROL.sub(lambda m: b"".join(b"\\x%02x" % byte for byte in m.group()), text)


def is_noise(line: bytes) -> bool:
    """Is `line` (cleaned) Kamailio's word about a message it could not parse?"""
    found = _LOCATION.match(line)
    if found is None:
        return False
    module, path, function, message = found.groups()
    if module == b"<core>":
        return (
            path.startswith(b"core/parser/")
            or (path == b"core/receive.c" and message.startswith(_RECEIVE_FAILURES))
            or function == b"build_res_buf_from_sip_req"
            or (path == b"core/kemi.c" and message.startswith(b"divert: malformed request"))
        )
    if module in (b"sanity", b"maxfwd"):
        return True
    return module in _PARSING_MODULES and b"pars" in message.lower()


@dataclass
class _Window:
    started: float
    held: int = 0


@dataclass
class _Pending:
    since: float
    lines: list[bytes] = field(default_factory=list)


class LogFilter:
    """Decides, record by record, what to pass on.  Pure apart from `emit`."""

    def __init__(self, emit: Callable[[bytes], None], window: float = WINDOW_SECONDS) -> None:
        self._emit = emit
        self._window = window
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._pending: dict[int, _Pending] = {}
        self._all = _Window(float("-inf"))  # noise lines let through, all sources
        self._let_through = 0

    def feed(self, record: bytes, now: float, pid: int) -> None:
        """One log record (what one log call wrote) from process `pid`."""
        line = _clean(record)
        failed = _PARSE_FAILED.match(line)
        if failed is not None:
            pending = self._pending.pop(pid, None)
            for held in (pending.lines if pending else []) + [line]:
                self._noise(failed.group(1).decode(), held, now)
            return
        source = _SOURCE.match(line)
        noise = is_noise(line)
        if pid in self._pending and (source is not None or not noise):
            self._flush(pid, now)  # the process moved on: its lines found no source
        if not noise:
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
                    self._emit(self._summary(f"from {source}", window.held))
                del self._windows[source]
        if self._all.held and now - self._all.started >= self._window:
            self._emit(self._summary("from sources beyond the limit", self._all.held))
            self._all.held = 0

    def _flush(self, pid: int, now: float) -> None:
        pending = self._pending.pop(pid)
        for line in pending.lines:
            self._noise(UNKNOWN, line, now)

    def _noise(self, source: str, line: bytes, now: float) -> None:
        window = self._windows.get(source)
        if window is not None and now - window.started < self._window:
            window.held += 1
            return
        if now - self._all.started >= self._window:
            self._all.started, self._let_through = now, 0
        if self._let_through >= MAX_NOISE_LINES:
            self._all.held += 1  # a flood from many sources: counted, not logged
            return
        self._let_through += 1
        held = window.held if window is not None else 0
        self._windows[source] = _Window(now)
        self._windows.move_to_end(source)
        while len(self._windows) > MAX_SOURCES:
            self._windows.popitem(last=False)
        note = f" (and {held} more before)" if held else ""
        limit = f" [divert: malformed messages from {source} are logged once a minute{note}]"
        self._emit(_LEVEL.sub(rb"\1NOTICE:", line, count=1) + limit.encode())

    def _summary(self, whom: str, held: int) -> bytes:
        return (
            f"divert: {held} more lines about malformed messages {whom} "
            f"in the last {self._window:.0f} s not logged"
        ).encode()


def log_socket() -> tuple[socket.socket, int]:
    """(the end `divert run` reads, the file descriptor Kamailio gets as its
    standard error).  Kamailio's end does not block: when `divert run`
    cannot keep up, log lines are lost rather than SIP workers stalled."""
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    for option in (socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", socket.SO_SNDBUF)):
        try:
            writer.setsockopt(socket.SOL_SOCKET, option, 1 << 20)
        except OSError:
            continue  # not root: the system's default room will do
    writer.setblocking(False)
    return reader, writer.detach()


def _sender(ancillary: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return int(_UCRED.unpack_from(data)[0])
    return 0


def pump(
    reader: socket.socket,
    out: BinaryIO,
    clock: Callable[[], float] = time.monotonic,
    window: float = WINDOW_SECONDS,
) -> None:
    """Copy Kamailio's log records from `reader` to `out` through a
    `LogFilter` until every writer is gone.  A failure to write `out` loses
    that line, never the pump: Kamailio's end must keep draining."""

    def emit(line: bytes) -> None:
        try:
            out.write(line + b"\n")
            out.flush()
        except (OSError, ValueError):
            pass

    limiter = LogFilter(emit, window)
    partial: dict[int, bytes] = {}
    try:
        while True:
            ready, _, _ = select.select([reader], [], [], 1.0)
            if ready:
                data, ancillary, _, _ = reader.recvmsg(65536, socket.CMSG_SPACE(_UCRED.size))
                if not data:
                    break
                pid = _sender(ancillary)
                record = partial.pop(pid, b"") + data
                if len(data) == CHUNK and len(record) < MAX_LINE:
                    partial[pid] = record  # more of this line follows
                    continue
                limiter.feed(record, clock(), pid)
            limiter.tick(clock())
        for pid, record in partial.items():
            limiter.feed(record, clock(), pid)
        limiter.tick(float("inf"))
    finally:
        reader.close()


def start_pump(reader: socket.socket, out: BinaryIO) -> threading.Thread:
    thread = threading.Thread(target=pump, args=(reader, out), name="kamailio-log", daemon=True)
    thread.start()
    return thread
