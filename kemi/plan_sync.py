"""Keeping Kamailio's table of native plans equal to the store.

One Kamailio process (a timer, kamailio.cfg's route[PLANS]) runs `tick`
within a tenth of a second of the sync worker's gate moving, and once a
second in any case.  Each tick reads the store in one read transaction:
its epoch and sequence, the keys its changes log lists since the last tick,
and what the affected numbers' plans read (`divert.kemi.plans`); it writes
their steps to the shared table ``plans``, then names what the table holds
in ``$shv(divert_plans)`` as ``<epoch>:<seq>``.

When is a plan used?  Only while ``$shv(divert_plans)`` equals
``$shv(divert_store)``, which the sync worker alone sets: ``busy`` before
each commit, the new ``<epoch>:<seq>`` after it (`divert.sync.gate`).  So
from the moment a change is committed until this process has put it into
the table, every call takes the Python routes, which read the store as
always: a change is seen on the next call, and no call sees half a batch.
A tick marks the table ``filling`` before it changes anything, so even a
gate that failed never lets a half-written table be used.

A new epoch (a full sync, a rebuilt store), a log pruned past the last
tick, or this process's first tick: the table is filled again from scratch.
The plans' dependencies (`Compiled.dependencies`) are kept in a scratch
SQLite file, rebuilt with the table: a change to a record names the plans
that read it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from divert.kemi.plans import FAILURE_STEPS, Compiled, PlanConfig, Source, compile_plan
from divert.kemi.store.format import META_EPOCH, NS_TABLE, NS_TENANT, SEQ_FILE
from divert.kemi.store.view import StoreView

FILLING = "filling"
DEPS_FILE = "plan-deps.sqlite"
FULL_RETRY_S = 600.0  # a table that did not fit is tried again after this, or a new epoch


class TableFull(Exception):
    """Kamailio's shared memory cannot hold the plans."""


class Sink(Protocol):
    """Where plans go: Kamailio's htable and shared variable (the adapter's)."""

    def put(self, key: str, line: str) -> bool:
        """False: no room (Kamailio's shared memory must keep its reserve
        for transactions); the table is then emptied and left unused."""

    def drop(self, key: str) -> None: ...

    def reset(self) -> None: ...

    def mark(self, generation: str) -> None: ...


class PlanSync:
    def __init__(self, state_dir: Path, run_dir: Path, config: PlanConfig, sink: Sink) -> None:
        self.state_dir = state_dir
        self.deps_path = run_dir / DEPS_FILE
        self.config = config
        self.sink = sink
        self._view: StoreView | None = None
        self._identity: tuple[int, int] | None = None
        self._deps: sqlite3.Connection | None = None
        self.generation: str | None = None  # what the table holds
        self._seen: bytes | None = None  # store.seq when the table was last found current
        self.full: tuple[str, float] | None = None  # (epoch, when to retry): did not fit

    def close(self) -> None:
        for db in (self._view.db if self._view else None, self._deps):
            if db is not None:
                db.close()
        self._view = self._deps = None

    def tick(self) -> bool:
        """Bring the table up to the store; False if the store cannot be read
        (the table is then marked unusable and filled again when it can)."""
        try:
            self._tick()
            return True
        except TableFull:
            self.sink.reset()  # the memory back to transactions at once
            self.generation = FILLING
            self._seen = None  # looked at again at the next tick: still waiting
            return True
        except (sqlite3.Error, OSError, ValueError):
            if self.generation != FILLING:
                self.sink.mark(FILLING)
                self.generation = FILLING  # filled again from scratch
            self._seen = None
            self.close()
            return False

    def _tick(self) -> None:
        # the store's published position first: a 16-byte read, where the
        # rest is a read transaction (most ticks find nothing new)
        published = self._published()
        if published is not None and published == self._seen:
            return
        view = self._open()
        db = view.db
        db.execute("BEGIN")
        try:
            epoch = str(view.meta_value(META_EPOCH) or "1")
            seq, oldest = view.changes_range()
            now = f"{epoch}:{seq}"
            if now == self.generation:
                self._seen = published
                return
            if self._waiting(epoch):
                self._seen = published
                return
            last = self._last_seq(epoch)
            self.sink.mark(FILLING)
            self.generation = FILLING
            try:
                if last is None or (oldest > last + 1):
                    self._fill(view)
                else:
                    self._update(view, view.changed_since(last))
            except TableFull:
                self.full = (epoch, time.monotonic() + FULL_RETRY_S)
                raise
            self.sink.mark(now)
            self.generation = now
            self._seen = published
        finally:
            db.execute("COMMIT")

    def _published(self) -> bytes | None:
        """``store.seq`` as the writer last published it (None: unreadable)."""
        try:
            return (self.state_dir / SEQ_FILE).read_bytes()
        except OSError:
            return None

    def _waiting(self, epoch: str) -> bool:
        """Is a table that did not fit still to be left empty?  Until a new
        epoch, or `FULL_RETRY_S` and then the store's next change."""
        if self.full is None:
            return False
        full_epoch, retry_at = self.full
        if full_epoch == epoch and time.monotonic() < retry_at:
            return True
        self.full = None
        return False

    def _last_seq(self, epoch: str) -> int | None:
        """The sequence the table holds, if of this epoch and file."""
        if self.generation is None or self.generation == FILLING:
            return None
        held_epoch, _, held_seq = self.generation.partition(":")
        return int(held_seq) if held_epoch == epoch else None

    def _open(self) -> StoreView:
        """The store's current file, opened again when it was replaced."""
        stat = os.stat(self.state_dir / "store.sqlite")
        identity = (stat.st_dev, stat.st_ino)
        if self._view is None or identity != self._identity:
            if self._view is not None:
                self._view.close()
            self._view = StoreView.open(self.state_dir)
            self._identity = identity
            self.generation = None  # another file: filled again
        return self._view

    def _deps_db(self, fresh: bool) -> sqlite3.Connection:
        if fresh and self._deps is not None:
            self._deps.close()
            self._deps = None
        if self._deps is None:
            if fresh:
                for suffix in ("", "-journal"):
                    Path(f"{self.deps_path}{suffix}").unlink(missing_ok=True)
            self._deps = sqlite3.connect(self.deps_path, isolation_level=None)
            self._deps.execute("PRAGMA journal_mode = OFF")
            self._deps.execute("PRAGMA synchronous = OFF")
            self._deps.execute(
                "CREATE TABLE IF NOT EXISTS deps (dep TEXT NOT NULL, key TEXT NOT NULL)"
            )
            self._deps.execute("CREATE INDEX IF NOT EXISTS deps_dep ON deps (dep)")
            self._deps.execute("CREATE INDEX IF NOT EXISTS deps_key ON deps (key)")
        return self._deps

    def _fill(self, view: StoreView) -> None:
        self.sink.reset()
        deps = self._deps_db(fresh=True)
        source = Source(view.table, view.tenant, view.trunk)
        deps.execute("BEGIN")
        try:
            for key in view.number_keys():
                self._put(key, compile_plan(key, source, self.config), deps)
        finally:
            deps.execute("COMMIT")

    def _update(self, view: StoreView, changed: Iterable[str]) -> None:
        deps = self._deps_db(fresh=False)
        affected: set[str] = set()
        for name in set(changed):
            if name.startswith(NS_TABLE) and name[len(NS_TABLE) :].startswith("+"):
                affected.add(name[len(NS_TABLE) :])
            if name.startswith(NS_TENANT):
                affected.update(view.table_keys(name[len(NS_TENANT) :]))
            affected.update(
                row[0] for row in deps.execute("SELECT key FROM deps WHERE dep = ?", (name,))
            )
        source = Source(view.table, view.tenant, view.trunk)
        deps.execute("BEGIN")
        try:
            for key in sorted(affected):
                if not key.startswith("+"):
                    continue
                deps.execute("DELETE FROM deps WHERE key = ?", (key,))
                compiled = compile_plan(key, source, self.config)
                for gone in self.sink_keys(key) - compiled.steps.keys():
                    self.sink.drop(gone)
                self._put(key, compiled, deps)
        finally:
            deps.execute("COMMIT")

    @staticmethod
    def sink_keys(key: str) -> set[str]:
        """Every table key a number's plan may use."""
        return {key, *(key + suffix for _, suffix in FAILURE_STEPS)}

    def _put(self, key: str, compiled: Compiled, deps: sqlite3.Connection) -> None:
        if compiled.dependencies:
            deps.executemany(
                "INSERT INTO deps (dep, key) VALUES (?, ?)",
                ((dep, key) for dep in compiled.dependencies),
            )
        for name, line in compiled.steps.items():
            if not self.sink.put(name, line):
                raise TableFull
