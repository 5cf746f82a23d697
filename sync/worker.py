"""The sync worker: keeps one node's store in step with the portal.

First start (or a store from another portal): a full snapshot.  Then
journal batches from the stored position, so a restart resumes where it
stopped, with no full resync and no missed change.  On PostgreSQL it sleeps
on LISTEN divert_changes (one notification per portal transaction) and
polls every `poll_interval` seconds as a fallback; on SQLite it polls.

Feature codes dialled while the portal is down wait in the node's queue;
the worker writes their effect into the store at once
(`divert.sync.queued_codes`), delivers them to the portal after the first
pass that reaches it (`divert.features.delivery`), and lets the portal's
data replace their effect.

When the portal is unreachable the store keeps serving the last synced
data; the worker retries with exponential backoff and logs one line when
the portal goes away and one when it is back, not one per retry; the
retries are jittered, so that nodes do not all return to a portal at once.

The store's own faults, each logged once until it is over:
- deleted, replaced, or damaged (a write or a reader's read failed, and
  SQLite's quick check agrees): rebuilt from the portal into a new
  generation (`StoreWriter(fresh=True)`), swapped in atomically; readers
  go on with the file they have open meanwhile.
- not writable (a full disk): the batch rolls back, the last good store
  stays, and the worker retries with backoff until the write succeeds.

SIGTERM or SIGINT stops it between batches (a batch in flight is committed
whole or not at all).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from divert.db import CONNECT_TIMEOUT, KEEPALIVES, open_portal
from divert.features.delivery import deliver
from divert.features.queue import delivering
from divert.kemi.store.format import CHECK_REQUEST, META_LAST_ERROR, META_POSITION, STORE_FILE
from divert.kemi.store.writer import StoreWriter
from divert.schema.journal import NOTIFY_CHANNEL
from divert.signals import stop_on_signals
from divert.sync import wake
from divert.sync.apply import Applied, apply_batch, full_sync
from divert.sync.gate import KamailioGate
from divert.sync.journal import read_batch
from divert.sync.queued_codes import QueuedCodes

log = logging.getLogger("divert.sync")

META_PORTAL = "portal"
PORTAL_ERRORS = (DBAPIError, SQLAlchemyError, psycopg.Error, OSError)
STORE_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
STORE_CANTOPEN = sqlite3.SQLITE_CANTOPEN
STORE_UNUSABLE = {*STORE_DAMAGED, STORE_CANTOPEN}
STORE_MAX_BACKOFF = 10.0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    portal_url: str
    state_dir: Path
    poll_interval: float = 1.0
    max_backoff: float = 30.0


# set by `divert run` for the children it starts after saying that the portal is
# down: they do not say it again (`divert run` logs one line for the node)
PORTAL_DOWN_ENV = "DIVERT_PORTAL_DOWN_SAID"


class StoreFault(Exception):
    """The store's files cannot be changed (an OSError of the store, told
    apart from the portal's, which are OSErrors too)."""


class SyncWorker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self._engine: Engine | None = None
        self._listener: psycopg.Connection[tuple[object, ...]] | None = None
        self._portal_down = os.environ.get(PORTAL_DOWN_ENV) == "1"
        self._store_failure: str | None = None  # why the store cannot be written
        self._damage: str | None = None  # why the store must be rebuilt
        self._check_asked = False
        try:
            self.writer = StoreWriter(config.state_dir)
        except (sqlite3.DatabaseError, OSError) as error:  # unreadable: rebuilt in a new file
            if getattr(error, "sqlite_errorcode", STORE_CANTOPEN) & 0xFF not in STORE_UNUSABLE:
                raise
            self.writer = StoreWriter(config.state_dir, fresh=True)
            self._rebuilding(f"cannot be used ({error})")
        else:
            if not self.writer.installed:
                self._rebuilding("is missing")
        self.writer.gate = self._gate = KamailioGate(config.state_dir / "run")
        self.codes = QueuedCodes(config.state_dir, self.writer)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = open_portal(self.config.portal_url, create=False)
        return self._engine

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._engine is not None:
            self._engine.dispose()
        self.codes.close()
        self.writer.close()

    # -- one pass ---------------------------------------------------------------------

    def sync_once(self) -> list[Applied]:
        """Bring the store up to date with the portal, then return."""
        try:
            self._mend_store()
        except OSError as error:  # the store's files, not the portal: told apart
            raise StoreFault(f"cannot check or start rebuilding the store: {error}") from None
        done: list[Applied] = []
        identity = make_url(self.engine.url).render_as_string(hide_password=True)
        position = self.writer.meta(META_POSITION)
        if position is None or self.writer.meta(META_PORTAL) != identity:
            done.append(self._full(identity))
            position = self.writer.meta(META_POSITION)
        assert position is not None
        while True:
            with self.engine.connect() as connection, connection.begin():
                changes, onward, more = read_batch(connection, position)
                if changes or onward != position:
                    applied = apply_batch(connection, self.writer, changes, onward)
                    if changes:
                        done.append(applied)
                        log.info(
                            "applied %d change(s): %d key(s), %d rejected row(s), %.1f ms",
                            applied.changes,
                            applied.keys,
                            applied.rejected,
                            applied.seconds * 1000,
                        )
            position = onward
            if not more:
                if not self.writer.installed:  # rebuilt, but the swap failed last time
                    self._install()
                return done

    def _full(self, identity: str) -> Applied:
        log.info("full sync from %s", identity)
        with self._snapshot_connection() as connection, connection.begin():
            applied = full_sync(connection, self.writer)
        with self.writer.transaction():
            self.writer.set_meta(META_PORTAL, identity)
        log.info(
            "full sync done: %d key(s), %d rejected row(s) in %.2f s",
            applied.keys,
            applied.rejected,
            applied.seconds,
        )
        if not self.writer.installed:
            self._install()
        return applied

    # -- the store's own faults -----------------------------------------------------------

    def _mend_store(self) -> None:
        """Before a pass: start a rebuild if the store is deleted, replaced or
        damaged.  The rebuild itself is the full sync that follows."""
        if not self.writer.installed:
            return  # a rebuild is under way
        if self._check_asked:
            self._check_asked = False
            found = self.writer.quick_check()
            if found is not None:
                self._damage = f"is damaged ({found})"
        problem = self._damage or self.writer.problem()
        if problem is None:
            return
        fresh = StoreWriter(self.config.state_dir, fresh=True, after=self.writer.file)
        fresh.gate = self._gate
        old, self.writer = self.writer, fresh
        self.codes.writer = fresh
        old.close()
        self._damage = None
        self._rebuilding(problem)

    def _install(self) -> None:
        """Swap a rebuilt generation in.  Tried after every pass until it
        succeeds: a failed swap (a full disk) must not leave the portal's
        changes going into a file no reader opens."""
        try:
            self.writer.install()
        except OSError as error:
            raise StoreFault(f"cannot swap the rebuilt store in: {error}") from None
        log.warning("store rebuilt as %s; readers switch to it", self.writer.file.name)

    def _rebuilding(self, problem: str) -> None:
        log.warning(
            "store %s %s; rebuilding it from the portal, readers keep the file they have open",
            self.config.state_dir / STORE_FILE,
            problem,
        )

    def _store_failed(self, error: sqlite3.Error | StoreFault) -> None:
        """A store write or read failed: keep the last good store and retry
        with backoff.  An error that says "damaged" has the store checked
        before the next pass: it may come from another file (the feature
        queue), and only a store that fails SQLite's check is rebuilt."""
        code = getattr(error, "sqlite_errorcode", 0) & 0xFF
        if code in STORE_DAMAGED:
            self._check_asked = True
        if self._store_failure is None:
            log.warning(
                "store write failed (%s); routing goes on from the last good store, "
                "retrying with backoff up to %.0f s",
                error,
                STORE_MAX_BACKOFF,
            )
        self._store_failure = str(error)

    def _store_recovered(self) -> None:
        if self._store_failure is not None:
            self._store_failure = None
            log.warning("the store is writable again; in step with the portal")

    def _snapshot_connection(self) -> Connection:
        connection = self.engine.connect()
        if connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        return connection

    # -- running until stopped -----------------------------------------------------------

    def run(self, stopping: Callable[[], bool], wake_fds: tuple[int, ...] = ()) -> None:
        """Sync, wait for changes, repeat, until `stopping()` is true."""
        backoff = 0.0
        while not stopping():
            try:
                # LISTEN first: a change committed while this pass reads is
                # notified, not left for the next poll
                self._listen()
                self.sync_once()
                self._deliver_codes()
                self.codes.replay()
                if self.codes.unsettled:
                    with self.engine.connect() as connection:
                        self.codes.settle(connection)
                if self._portal_down:
                    self._came_back()
                self._store_recovered()
                self.writer.refresh_gate()
                backoff = 0.0
                self._wait_for_changes(stopping, wake_fds)
            except (sqlite3.Error, StoreFault) as error:  # the store's (the portal's are wrapped)
                backoff = min(STORE_MAX_BACKOFF, max(1.0, backoff * 2))
                self._store_failed(error)
                self._sleep(jittered(backoff), stopping, wake_fds)
            except PORTAL_ERRORS as error:
                backoff = min(self.config.max_backoff, max(1.0, backoff * 2))
                self._went_down(error)
                self._replay_codes()
                self._sleep(jittered(backoff), stopping, wake_fds)

    def _deliver_codes(self) -> None:
        """Queued codes to the portal, unless an async worker is delivering
        them now (then the next pass looks again)."""
        queue = self.codes.queue
        if queue is None or queue.count() == 0:
            return
        with delivering(self.config.state_dir, wait=False) as held:
            if held:
                deliver(queue, self.engine)

    def _replay_codes(self) -> None:
        """Queued codes into the store while the portal is down; a store that
        cannot take them now gets them at the next replay."""
        try:
            self.codes.replay()
        except sqlite3.Error as error:
            self._store_failed(error)

    def _came_back(self) -> None:
        self._portal_down = False
        log.warning("portal reachable again; store in step")
        self._note_error("")

    def _note_error(self, text: str) -> None:
        """The last portal error, for `divert sync status`; lost if the store
        cannot take it (a full disk is logged by itself)."""
        try:
            with self.writer.transaction():
                self.writer.set_meta(META_LAST_ERROR, text)
        except sqlite3.Error as error:
            self._store_failed(error)

    def _went_down(self, error: BaseException) -> None:
        reason = _one_line(error)
        if not self._portal_down:
            self._portal_down = True
            log.warning(
                "portal unreachable (%s); routing goes on from the store, retrying with "
                "backoff up to %.0f s",
                reason,
                self.config.max_backoff,
            )
        self._dispose_connections()
        self._note_error(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {reason}")

    def _dispose_connections(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            finally:
                self._listener = None
        if self._engine is not None:
            self._engine.dispose()

    def _wait_for_changes(self, stopping: Callable[[], bool], wake_fds: tuple[int, ...]) -> None:
        listener = self._listen()
        listening = listener.fileno() if listener is not None else None
        watched = [*wake_fds, *([listening] if listening is not None else [])]
        if stopping():
            return
        ready, _, _ = select.select(watched, [], [], self.config.poll_interval)
        if listener is not None and listening in ready:
            for _ in listener.notifies(timeout=0.0):
                pass
        self._drain_wakes([fd for fd in wake_fds if fd in ready])

    def _drain_wakes(self, ready: list[int]) -> None:
        """Empty the wake-ups; a reader's check request is remembered."""
        for fd in ready:
            try:
                while data := os.read(fd, 512):
                    self._check_asked |= data == CHECK_REQUEST
            except BlockingIOError:
                pass

    def _listen(self) -> psycopg.Connection[tuple[object, ...]] | None:
        if self.engine.dialect.name != "postgresql":
            return None
        if self._listener is None or self._listener.closed:
            url = make_url(self.engine.url).set(drivername="postgresql")
            defaults = {"connect_timeout": CONNECT_TIMEOUT, **KEEPALIVES}
            options = {k: v for k, v in defaults.items() if k not in url.query}
            conninfo = make_conninfo(url.render_as_string(hide_password=False), **options)
            self._listener = psycopg.connect(conninfo, autocommit=True)
            self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return self._listener

    def _sleep(
        self, seconds: float, stopping: Callable[[], bool], wake_fds: tuple[int, ...]
    ) -> None:
        """Wait out the backoff; a wake-up (a feature code queued) replays the
        queued codes into the store without trying the portal sooner."""
        deadline = time.monotonic() + seconds
        while not stopping() and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(wake_fds), [], [], min(left, 1.0))
            self._drain_wakes(ready)
            with contextlib.suppress(sqlite3.Error):
                self.writer.refresh_gate()
            if ready and not stopping():
                self._replay_codes()


def run_until_signalled(config: WorkerConfig) -> int:
    """`divert sync`: run until SIGTERM/SIGINT; returns the exit code."""
    with stop_on_signals() as (stopping, wakeup_fd):
        worker = SyncWorker(config)
        woken = wake.listen(config.state_dir)
        log.info("sync worker started: store %s", config.state_dir)
        try:
            worker.run(stopping, (wakeup_fd, woken.fileno()))
        finally:
            wake.close(woken, config.state_dir)
            worker.close()
    log.info("sync worker stopped")
    return 0


def jittered(seconds: float) -> float:
    """Between half and all of `seconds`: nodes that lost the portal together
    do not all come back to it in the same instant."""
    return seconds * random.uniform(0.5, 1.0)


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else 'no detail'}"
