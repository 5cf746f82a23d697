"""The node's queue of feature codes the portal could not take yet.

One SQLite file, ``<state-dir>/feature-queue.sqlite``: Kamailio's async
workers append (`divert.features.task`); whoever reaches the portal first,
an async worker with the next code or the sync worker after a pass,
delivers it, oldest first, and deletes what it delivered
(`divert.features.delivery`); the sync worker reads it to keep the codes'
effect in the store until delivery.  Delivery holds `delivering()`, so
that no code is delivered twice and none overtakes another.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

QUEUE_FILE = "feature-queue.sqlite"
LOCK_FILE = "feature-queue.lock"


class Queued(NamedTuple):
    id: int
    subscriber: str
    dialled: str
    received_at: float
    chosen: str | None  # the manual mode a *11 picked on the node ('' : automatic)


class FeatureQueue:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        # short waits: an async worker commits a code while tm holds the
        # code's transaction (a CANCEL for it waits that long)
        self.db = sqlite3.connect(state_dir / QUEUE_FILE, isolation_level=None, timeout=2.0)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS queued (id INTEGER PRIMARY KEY, subscriber TEXT NOT NULL, "
            "dialled TEXT NOT NULL, received_at REAL NOT NULL)"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS failed (id INTEGER PRIMARY KEY, subscriber TEXT NOT NULL, "
            "dialled TEXT NOT NULL, received_at REAL NOT NULL, reason TEXT NOT NULL)"
        )
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(queued)")}
        if "chosen" not in columns:  # a queue written before *11 was carried out locally
            self.db.execute("ALTER TABLE queued ADD COLUMN chosen TEXT")

    def add(self, subscriber: str, dialled: str, received_at: float, chosen: str | None) -> None:
        self.hold(subscriber, dialled, received_at, chosen)
        self.commit()

    def hold(self, subscriber: str, dialled: str, received_at: float, chosen: str | None) -> None:
        """Append a code without committing it: `commit()` or `rollback()` next."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT INTO queued (subscriber, dialled, received_at, chosen) VALUES (?, ?, ?, ?)",
                (subscriber, dialled, received_at, chosen),
            )
        except sqlite3.Error:
            self.rollback()
            raise

    def commit(self) -> None:
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error:
            self.rollback()  # never leave the connection inside a transaction
            raise

    def rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def pending(self) -> list[Queued]:
        """Every queued code, oldest first."""
        rows = self.db.execute(
            "SELECT id, subscriber, dialled, received_at, chosen FROM queued ORDER BY id"
        )
        return [Queued._make(row) for row in rows]

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM queued").fetchone()[0])

    def remove(self, row_id: int) -> None:
        self.db.execute("DELETE FROM queued WHERE id = ?", (row_id,))

    def fail(self, row: Queued, reason: str) -> None:
        """Set aside a code the portal fails on every time (not a refusal, an
        error): kept with its reason in `failed`, so that it neither blocks
        the codes behind it nor is lost."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.db.execute(
                "INSERT INTO failed (id, subscriber, dialled, received_at, reason) "
                "VALUES (?, ?, ?, ?, ?)",
                (row.id, row.subscriber, row.dialled, row.received_at, reason),
            )
            self.db.execute("DELETE FROM queued WHERE id = ?", (row.id,))
            self.commit()
        except sqlite3.Error:
            self.rollback()
            raise

    def close(self) -> None:
        self.db.close()


@contextlib.contextmanager
def delivering(state_dir: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the node's delivery lock; yields False (without it) when `wait`
    is off and another process holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock
