"""The node's queue of feature codes the portal could not take yet.

One SQLite file, ``<state-dir>/feature-queue.sqlite``: the feature server
appends and deletes (it delivers to the portal, oldest first); the sync
worker reads it to keep the codes' effect in the store until delivery.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import NamedTuple

QUEUE_FILE = "feature-queue.sqlite"


class Queued(NamedTuple):
    id: int
    subscriber: str
    dialled: str
    received_at: float
    chosen: str | None  # the manual mode a *11 picked on the node ('' : automatic)


class FeatureQueue:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(state_dir / QUEUE_FILE, isolation_level=None, timeout=5.0)
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS queued (id INTEGER PRIMARY KEY, subscriber TEXT NOT NULL, "
            "dialled TEXT NOT NULL, received_at REAL NOT NULL)"
        )
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(queued)")}
        if "chosen" not in columns:  # a queue written before *11 was carried out locally
            self.db.execute("ALTER TABLE queued ADD COLUMN chosen TEXT")

    def add(self, subscriber: str, dialled: str, received_at: float, chosen: str | None) -> None:
        self.db.execute(
            "INSERT INTO queued (subscriber, dialled, received_at, chosen) VALUES (?, ?, ?, ?)",
            (subscriber, dialled, received_at, chosen),
        )

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

    def close(self) -> None:
        self.db.close()
