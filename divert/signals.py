"""Stopping a long-running process cleanly on SIGTERM or Ctrl-C.

`stop_on_signals()` gives the loop a `stopping()` test and a file descriptor
that becomes readable when a signal arrives, so a loop blocked in
``select()`` wakes at once instead of at its next timeout.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals() -> Iterator[tuple[Callable[[], bool], int]]:
    stopped = False
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopped
        stopped = True

    previous_fd = signal.set_wakeup_fd(write_end)
    handlers = {s: signal.signal(s, request_stop) for s in STOP_SIGNALS}
    try:
        yield (lambda: stopped), read_end
    finally:
        signal.set_wakeup_fd(previous_fd)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        os.close(read_end)
        os.close(write_end)


def drain(fd: int) -> None:
    """Empty the wakeup pipe after `select()` said it is readable."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
