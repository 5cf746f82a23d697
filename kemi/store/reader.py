"""Reading the store from Kamailio's worker processes, through a bounded cache.

Each process makes its own `StoreReader` after the fork (files are opened
lazily on first use).  A lookup costs one dictionary hit when the store has
not changed; when it has, the reader evicts just the keys the store's
``changes`` log lists since the last sequence it saw, so a committed change is
seen on the next lookup with no TTL, and a change to one number leaves the
rest of the cache warm.  Misses read one row from SQLite.

Consistency: a miss reads the row and the store's latest sequence in one
statement and first evicts everything changed up to that sequence, so the
cache never mixes a batch's new rows with another key's pre-batch row.

Absent keys are cached too (as absent): external numbers are looked up on
every forwarded call.

Faults: a new epoch makes the reader open the store and ``store.seq``
again (the worker may have rebuilt the store into a new file); until then
it reads the file it has open, even a deleted one.  A read that fails
(a damaged file) raises `StoreUnavailable`, for a 503, and asks the sync
worker, at most once a second, to check the store and rebuild it.
"""

from __future__ import annotations

import mmap
import os
import socket
import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from divert.kemi.core.model import ForwardTable
from divert.kemi.store.format import (
    CHECK_REQUEST,
    META_POLICY,
    NS_ADDRESS,
    NS_EXTENSION,
    NS_SUBSCRIBER,
    NS_TABLE,
    NS_TENANT,
    NS_TRUNK,
    SELECT_TENANT,
    SEQ_FILE,
    SEQ_SIZE,
    STORE_FILE,
    WAKE_SOCKET,
    PolicyRecord,
    SubscriberRecord,
    TenantRecord,
    TrunkRecord,
    decode_policy,
    decode_table,
    decode_tenant,
)
from divert.kemi.store.lru import Lru

_SEQ = struct.Struct("<QQ")
# Entries each process caches by default (`divert run --cache`).  A number's
# forward table takes about 1.2 KB of Python objects, a number known to have
# none (a forward's external target) about 0.15 KB: at most 60 MB a process.
CACHE_ENTRIES = 50_000
_ABSENT = object()
Found = TypeVar("Found")

_TABLE = "SELECT data FROM forward_tables WHERE key = ?"
_SUBSCRIBER = (
    "SELECT aor, tenant, username, domain, ha1, extension, display_name, caller_id "
    "FROM subscribers WHERE aor = ?"
)
_EXTENSION = (
    "SELECT aor, tenant, username, domain, ha1, extension, display_name, caller_id "
    "FROM subscribers WHERE domain = ? AND extension = ?"
)
_POLICY = f"SELECT value FROM meta WHERE name = '{META_POLICY}'"
_TRUNK_AT = (
    "SELECT t.id, t.tenant, t.name, t.diversion_style FROM trunk_addresses a "
    "JOIN trunks t ON t.id = a.trunk_id WHERE a.address = ?"
)
_TRUNK = "SELECT id, tenant, name, diversion_style FROM trunks WHERE id = ?"


def _table_of(row: tuple[Any, ...]) -> ForwardTable:
    return decode_table(row[0])


def _tenant_of(row: tuple[Any, ...]) -> TenantRecord:
    return decode_tenant(*row)


class StoreUnavailable(Exception):
    """The store file cannot be opened (not synced yet, or unreadable)."""


class StoreReader:
    """Read-only, cached access to one node's store."""

    def __init__(self, state_dir: str | os.PathLike[str], cache_size: int = CACHE_ENTRIES) -> None:
        self._dir = Path(state_dir)
        self._cache: Lru[str, object] = Lru(cache_size)
        self._db: sqlite3.Connection | None = None
        self._seq_map: mmap.mmap | None = None
        self._epoch = -1
        self._seen = -1
        self._policy: PolicyRecord | None = None
        self._policy_epoch = -2  # never an epoch
        self._asked_check = 0.0
        self._seq_inode = -1
        self._next_seq_look = 0.0  # when to check that store.seq is still the file mapped
        self.healthy = True  # False from a failed read until a read succeeds
        self.misses = 0  # rows read from SQLite, for tests and benchmarks

    # -- lookups ---------------------------------------------------------------

    def table(self, key: str) -> ForwardTable | None:
        """The compiled forward table of `key`, or None if the store has none."""
        return self._get(NS_TABLE + key, _TABLE, (key,), _table_of)

    def subscriber(self, aor: str) -> SubscriberRecord | None:
        """A subscriber by ``username@domain``."""
        return self._get(NS_SUBSCRIBER + aor, _SUBSCRIBER, (aor,), SubscriberRecord)

    def extension(self, domain: str, extension: str) -> SubscriberRecord | None:
        """The subscriber with `extension` in the tenant whose SIP domain is `domain`."""
        return self._get(
            f"{NS_EXTENSION}{domain}|{extension}", _EXTENSION, (domain, extension), SubscriberRecord
        )

    def tenant(self, name: str) -> TenantRecord | None:
        """A tenant's time zone and schedule."""
        return self._get(NS_TENANT + name, SELECT_TENANT, (name,), _tenant_of)

    def trunk_at(self, address: str) -> TrunkRecord | None:
        """The customer trunk sending from ``ip:port``, or None."""
        return self._get(NS_ADDRESS + address, _TRUNK_AT, (address,), TrunkRecord)

    def trunk(self, trunk_id: int) -> TrunkRecord | None:
        return self._get(NS_TRUNK + str(trunk_id), _TRUNK, (trunk_id,), TrunkRecord)

    def policy(self) -> PolicyRecord | None:
        """The destination policy, None if the store has none yet.  Kept apart
        from the LRU (its JSON is 85 KB): read again only in a new epoch, the
        only time a (full) sync changes it."""
        self._refresh()
        if self._policy_epoch != self._epoch:
            row = self._miss(_POLICY, ())
            self._policy = None if row is None else decode_policy(row[0])
            self._policy_epoch = self._epoch
        return self._policy

    def _get(
        self,
        cache_key: str,
        query: str,
        params: tuple[object, ...],
        build: Callable[[tuple[Any, ...]], Found],
    ) -> Found | None:
        self._refresh()
        found = self._cache.get(cache_key, _ABSENT)
        if found is _ABSENT:
            row = self._miss(query, params)
            found = None if row is None else build(row)
            self._cache.put(cache_key, found)
        return cast("Found | None", found)

    def open(self) -> None:
        """Open the store's files now rather than at the first lookup."""
        self._refresh()
        if self._db is None:
            self._connect()

    @property
    def cached(self) -> int:
        """Entries now in this process's cache (bounded by `cache_size`)."""
        return len(self._cache)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._seq_map is not None:
            self._seq_map.close()
            self._seq_map = None

    # -- freshness -------------------------------------------------------------

    def _refresh(self) -> None:
        seq_map = self._seq_map or self._open_seq()
        epoch, seq = _SEQ.unpack_from(seq_map)
        if epoch != self._epoch or self._seq_replaced():
            self._reopen()
        elif seq != self._seen:
            self._catch_up(epoch, seq)

    def _seq_replaced(self) -> bool:
        """Is ``store.seq`` another file than the one mapped?  Looked at once a
        second: a worker that made it again after it was deleted can only
        reach readers that still map the old one this way."""
        now = time.monotonic()
        if now < self._next_seq_look:
            return False
        self._next_seq_look = now + 1.0
        try:
            return os.stat(self._dir / SEQ_FILE).st_ino != self._seq_inode
        except OSError:
            return False  # gone: keep what is mapped until a new one appears

    def _reopen(self) -> None:
        """A new epoch: drop the cache, open the store and its sequence anew."""
        self.close()
        self._cache.clear()
        self._epoch, self._seen = _SEQ.unpack_from(self._open_seq())

    def _catch_up(self, epoch: int, seq: int) -> None:
        """Evict what changed between the last sequence seen and `seq`."""
        if epoch != self._epoch or seq < self._seen:
            self._cache.clear()
        else:
            db = self._db or self._connect()
            try:
                rows = db.execute(
                    "SELECT key, (SELECT min(seq) FROM changes) FROM changes "
                    "WHERE seq > ? AND seq <= ?",
                    (self._seen, seq),
                ).fetchall()
            except sqlite3.DatabaseError as error:
                self.healthy = False
                self._ask_check()
                raise StoreUnavailable(f"cannot read the store: {error}") from None
            if rows and rows[0][1] > self._seen + 1:
                self._cache.clear()  # the log was pruned past what we saw
            else:
                for key, _ in rows:
                    self._cache.discard(key)
        self._epoch, self._seen = epoch, seq

    def _miss(self, query: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
        """Read one row for `query`, and catch up first if the store moved on.

        The row, the latest sequence and the epoch come from one statement,
        hence one snapshot: if a batch committed since our last look, its
        other keys are evicted before this row joins the cache.
        """
        self.misses += 1
        db = self._db or self._connect()
        try:
            row = db.execute(
                "SELECT (SELECT max(seq) FROM changes), "
                "(SELECT value FROM meta WHERE name = 'epoch'), found.* "
                f"FROM (SELECT 1) LEFT JOIN ({query}) AS found",
                params,
            ).fetchone()
        except sqlite3.DatabaseError as error:
            self.healthy = False
            self._ask_check()
            raise StoreUnavailable(f"cannot read the store: {error}") from None
        self.healthy = True
        latest, epoch = row[0], int(row[1])
        if latest is not None and (latest > self._seen or epoch != self._epoch):
            self._catch_up(epoch, latest)
        return None if row[2] is None else tuple(row[2:])

    def _ask_check(self) -> None:
        """Ask the sync worker to check the store (at most once a second)."""
        now = time.monotonic()
        if now - self._asked_check < 1.0:
            return
        self._asked_check = now
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(CHECK_REQUEST, str(self._dir / WAKE_SOCKET))
        except OSError:
            pass  # no worker listening: it checks when it starts

    def _connect(self) -> sqlite3.Connection:
        """Open the store and read from it at once: the first read opens its
        -wal and -shm, which then stay this connection's, whatever happens to
        the names in the folder later."""
        path = self._dir / STORE_FILE
        if not path.is_file():
            self.healthy = False
            raise StoreUnavailable(f"no store at {path}: has the sync worker run?")
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
            db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except sqlite3.Error as error:
            if db is not None:
                db.close()
            self.healthy = False
            if isinstance(error, sqlite3.DatabaseError):
                self._ask_check()
            raise StoreUnavailable(f"cannot open the store at {path}: {error}") from None
        self._db = db
        return db

    def _open_seq(self) -> mmap.mmap:
        path = self._dir / SEQ_FILE
        try:
            with open(path, "rb") as handle:
                self._seq_map = mmap.mmap(handle.fileno(), SEQ_SIZE, access=mmap.ACCESS_READ)
                self._seq_inode = os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            raise StoreUnavailable(f"no store at {self._dir}: has the sync worker run?") from None
        except (OSError, ValueError) as error:
            raise StoreUnavailable(f"cannot map {path}: {error}") from None
        return self._seq_map
