"""Waking this node's sync worker from another process (an async worker
after a feature code), so the change routes without waiting for the next
poll.

A datagram to a Unix socket in the state folder: harmless when no worker
listens, and unlike a signal it can never kill a process that is still
starting, or a stranger that inherited a stale PID.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from divert.kemi.store.format import WAKE_SOCKET


def listen(state_dir: Path) -> socket.socket:
    """The worker's end: a non-blocking socket to watch with select()."""
    path = state_dir / WAKE_SOCKET
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    return sock


def wake(state_dir: Path) -> None:
    """Ask the worker to sync now; nothing happens if none listens."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"sync", str(state_dir / WAKE_SOCKET))


def close(sock: socket.socket, state_dir: Path) -> None:
    sock.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(state_dir / WAKE_SOCKET)
