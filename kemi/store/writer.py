"""Writing the node-local store: the sync worker is its only writer.

Every batch is one SQLite transaction (data, changed-keys log, journal
position together), so a reader never sees half a batch and a worker killed
mid-batch leaves the store as it was before the batch.  After each commit
the (epoch, sequence) pair in ``store.seq`` is updated: readers compare it
on every lookup and evict what the changes log lists.  A full sync starts a
new epoch, which tells readers to drop their whole cache.

A store that was deleted or damaged is rebuilt into a new generation file
(``StoreWriter(dir, fresh=True)``, filled by a full sync, then `install`):
the ``store.sqlite`` link is swapped in one rename and a new epoch makes
readers open the new file; until then they read the one they have open.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
import struct
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from divert.kemi.store.format import (
    CHANGED_TABLES,
    FORMAT,
    GENERATION,
    META_EPOCH,
    META_FORMAT,
    META_POSITION,
    META_SCHEMA,
    NS_ADDRESS,
    NS_EXTENSION,
    NS_SUBSCRIBER,
    NS_TABLE,
    NS_TENANT,
    NS_TRUNK,
    OWNER_INDEX,
    SCHEMA,
    SCHEMA_VERSION,
    SEQ_FILE,
    SEQ_SIZE,
    STORE_FILE,
    TENANT_INDEX,
    SubscriberRecord,
    TenantRecord,
    TrunkRecord,
    encode_schedule,
)
from divert.kemi.store.view import StoreView

_SEQ = struct.Struct("<QQ")
CHANGES_KEPT = 200_000


class Gate(Protocol):
    """Told before and after each transaction (the sync worker's is
    `divert.sync.gate.KamailioGate`: Kamailio's native plans wait)."""

    def closing(self) -> None: ...

    def opened(self, epoch: int, seq: int) -> None: ...

    def refresh(self, epoch: int, seq: int) -> None: ...


class StoreWriter:
    """The store of one node, opened for writing.

    `fresh`: a new generation, invisible to readers until `install`.
    Otherwise the current store; an empty one is made and installed only in
    a folder that never held a store (else a rebuild is due: `installed` is
    False, and a generation left by a failed rebuild goes at the next
    `install`)."""

    def __init__(
        self, state_dir: str | os.PathLike[str], fresh: bool = False, after: Path | None = None
    ) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        current = None if fresh else current_generation(self.dir)
        first = current is None and not fresh and not _traces(self.dir)
        self.file = current or self.dir / f"store.{_next_generation(self.dir, after)}.sqlite"
        self.installed = current is not None
        self.gate: Gate | None = None
        self.db = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
        self.view = StoreView(self.db)  # the writer's look-ups, as every reader but Kamailio's
        stat = os.stat(self.file)
        self._identity = (stat.st_dev, stat.st_ino)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("PRAGMA busy_timeout = 5000")
        self.db.execute("PRAGMA cache_size = -65536")  # 64 MiB for full syncs
        with self.transaction():
            if int(self._meta_if_any(META_SCHEMA) or SCHEMA_VERSION) < SCHEMA_VERSION:
                for table in CHANGED_TABLES:
                    self.db.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in SCHEMA:
                self.db.execute(statement)
            stored = self.meta(META_FORMAT)
            if stored is not None and int(stored) != FORMAT:
                raise RuntimeError(
                    f"store {self.dir / STORE_FILE} has format {stored}, this divert writes "
                    f"{FORMAT}: move it away and let the worker resync"
                )
            self.set_meta(META_FORMAT, str(FORMAT))
            if int(self.meta(META_SCHEMA) or 1) < SCHEMA_VERSION:
                # Tables this version added are empty: the next pass resyncs in full.
                self.db.execute("DELETE FROM meta WHERE name = ?", (META_POSITION,))
                self.set_meta(META_SCHEMA, str(SCHEMA_VERSION))
            if self.meta(META_EPOCH) is None:
                self.set_meta(META_EPOCH, str(_new_epoch(self.dir)))
        self._seq = self._open_seq()
        if first:
            self.install()  # the node's very first store: empty, until the first sync
        elif self.installed:
            self.publish()
        # else: a store was here and is gone or unusable: rebuilt, then installed

    # -- transactions ------------------------------------------------------------

    def transaction(self) -> _Transaction:
        return _Transaction(self)

    def publish(self) -> None:
        """Tell readers the store's current (epoch, sequence)."""
        epoch, seq = self._position()
        _SEQ.pack_into(self._seq, 0, epoch, seq)
        if self.gate is not None:
            self.gate.opened(epoch, seq)

    def refresh_gate(self) -> None:
        """Give a Kamailio started since the last transaction the store's
        position (its native plans wait for it)."""
        if self.gate is not None and self.installed:
            self.gate.refresh(*self._position())

    def _position(self) -> tuple[int, int]:
        epoch = int(self.meta(META_EPOCH) or 1)
        seq = self.db.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0]
        return epoch, int(seq)

    def close(self) -> None:
        self._seq.close()
        self.db.close()

    # -- generations -----------------------------------------------------------------

    def install(self) -> None:
        """Make this generation the store readers open: swap the link in one
        rename, then publish a new epoch (readers reopen), then remove every
        generation but this one and the one it replaced.  OSError (a full
        disk) leaves the old store in place; the caller tries again."""
        link = self.dir / STORE_FILE
        previous = current_generation(self.dir)
        temporary = self.dir / f"{STORE_FILE}.new"
        temporary.unlink(missing_ok=True)
        os.symlink(self.file.name, temporary)
        os.replace(temporary, link)
        _sync_folder(self.dir)
        self.installed = True
        with self.transaction():
            self.set_meta(META_EPOCH, str(_new_epoch(self.dir)))
        self._remove_old_generations(previous)

    def problem(self) -> str | None:
        """What is wrong with the files readers open, if anything: the store
        deleted or replaced under the worker, or ``store.seq`` gone (that one
        is made again here, whatever else is wrong)."""
        if not (self.dir / SEQ_FILE).exists():
            self._remake_seq()
        current = current_generation(self.dir)
        if current is None:
            return "was deleted"
        stat = os.stat(current)
        if (stat.st_dev, stat.st_ino) != self._identity:
            return "was replaced by another file"
        return None

    def quick_check(self) -> str | None:
        """SQLite's own check of the file: None if sound, else what is wrong.
        On a connection of its own: the writer's page cache would hide pages
        damaged on disk."""
        try:
            db = sqlite3.connect(f"file:{self.file}?mode=ro", uri=True)
            try:
                rows = db.execute("PRAGMA quick_check(5)").fetchall()
            finally:
                db.close()
        except sqlite3.DatabaseError as error:
            return str(error)
        found = " ".join(" ".join(str(row[0]) for row in rows).split())
        return None if found == "ok" else found[:300]

    def _remake_seq(self) -> None:
        """``store.seq`` was deleted: make a new one, and bump the epoch in the
        old mapping too, so readers that still map it open the new one."""
        old = self._seq
        self._seq = self._open_seq()
        with self.transaction():
            self.set_meta(META_EPOCH, str(int(self.meta(META_EPOCH) or 1) + 1))
        epoch, seq = _SEQ.unpack_from(self._seq)
        _SEQ.pack_into(old, 0, epoch, seq)
        old.close()

    def _remove_old_generations(self, previous: Path | None) -> None:
        """Keep this generation and `previous`, the one it replaced (readers
        may have it open until their next lookup); delete the others, and the
        -wal and -shm a plain-file store of older versions left by the link."""
        keep = {self.file, previous}
        for path in self.dir.iterdir():
            if GENERATION.fullmatch(path.name) and path not in keep:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):  # a plain-file store's, replaced by the link
            Path(f"{self.dir / STORE_FILE}{suffix}").unlink(missing_ok=True)

    # -- meta --------------------------------------------------------------------

    def _meta_if_any(self, name: str) -> str | None:
        """`meta`, on a store that may not have its tables yet."""
        exists = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        return self.meta(name) if exists else None

    def meta(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, name: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    # -- data (call inside a transaction) ------------------------------------------

    def reset(self) -> None:
        """Empty the store for a full sync and start a new epoch.

        The table indexes are dropped until `index_tables`: building them
        once after a million inserts is far cheaper than maintaining them.
        """
        self.db.execute("DROP INDEX IF EXISTS forward_tables_tenant")
        self.db.execute("DROP INDEX IF EXISTS forward_tables_owner")
        for table in (
            "forward_tables",
            "subscribers",
            "trunks",
            "trunk_addresses",
            "tenants",
            "changes",
        ):
            self.db.execute(f"DELETE FROM {table}")
        self.set_meta(META_EPOCH, str(int(self.meta(META_EPOCH) or 1) + 1))

    def index_tables(self) -> None:
        self.db.execute(TENANT_INDEX)
        self.db.execute(OWNER_INDEX)

    def put_tables(self, rows: Iterable[tuple[str, str, str | None, bytes]]) -> None:
        """Write (key, tenant, owner, data) rows without logging changes (full sync)."""
        self.db.executemany(
            "INSERT OR REPLACE INTO forward_tables (key, tenant, owner, data) VALUES (?, ?, ?, ?)",
            rows,
        )

    def put_table(self, key: str, tenant: str, data: bytes, owner: str | None = None) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO forward_tables (key, tenant, owner, data) VALUES (?, ?, ?, ?)",
            (key, tenant, owner, data),
        )
        self._changed(NS_TABLE + key)

    def owned_tables(self, owner: str) -> list[tuple[str, str, bytes]]:
        """(key, tenant, data) of every table carrying `owner`'s forwards."""
        return self.view.owned_tables(owner)

    def delete_table(self, key: str) -> None:
        self.db.execute("DELETE FROM forward_tables WHERE key = ?", (key,))
        self._changed(NS_TABLE + key)

    def has_table(self, key: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM forward_tables WHERE key = ?", (key,)).fetchone()
            is not None
        )

    def table_keys(self, tenant: str) -> list[str]:
        return self.view.table_keys(tenant)

    def put_subscriber(self, record: SubscriberRecord, log: bool = True) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO subscribers (aor, tenant, username, domain, ha1, extension, "
            "display_name, caller_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            tuple(record),
        )
        if log:
            self._changed(NS_SUBSCRIBER + record.aor)
            if record.extension:
                self._changed(f"{NS_EXTENSION}{record.domain}|{record.extension}")

    def delete_subscribers(self, tenant: str) -> None:
        """Remove a tenant's subscribers (they are rewritten with the tenant)."""
        rows = self.db.execute(
            "SELECT aor, domain, extension FROM subscribers WHERE tenant = ?", (tenant,)
        ).fetchall()
        for aor, domain, extension in rows:
            self._changed(NS_SUBSCRIBER + aor)
            if extension:
                self._changed(f"{NS_EXTENSION}{domain}|{extension}")
        self.db.execute("DELETE FROM subscribers WHERE tenant = ?", (tenant,))

    def put_trunk(self, record: TrunkRecord, addresses: Iterable[str], log: bool = True) -> None:
        """A trunk and its addresses.  An address another trunk already has
        stays that trunk's (one source, one tenant): this trunk's claim is
        recorded in `rejected` for `divert sync status`, never dropped in
        silence."""
        self.delete_trunk(record.id, log)
        self.db.execute(
            "INSERT INTO trunks (id, tenant, name, diversion_style) VALUES (?, ?, ?, ?)",
            tuple(record),
        )
        for address in addresses:
            holder = self.db.execute(
                "SELECT t.id, t.name, t.tenant FROM trunk_addresses a "
                "JOIN trunks t ON t.id = a.trunk_id WHERE a.address = ?",
                (address,),
            ).fetchone()
            if holder is not None and holder[0] != record.id:
                # the older trunk (lower id) keeps it, whichever is placed first
                older = holder[0] < record.id
                keeper = (holder[1], holder[2]) if older else (record.name, record.tenant)
                loser = (record.id, record.name, record.tenant) if older else tuple(holder)
                self.reject(
                    _address_claim(int(loser[0]), address),
                    f"trunk {loser[1]} of tenant {loser[2]}: address {address} is already "
                    f"trunk {keeper[0]} of tenant {keeper[1]}; calls from it are that "
                    "trunk's, and this one is not probed there",
                    "",
                )
                if older:
                    continue
            self.db.execute(
                "DELETE FROM rejected WHERE source = ?", (_address_claim(record.id, address),)
            )
            self.db.execute(
                "INSERT OR REPLACE INTO trunk_addresses (address, trunk_id) VALUES (?, ?)",
                (address, record.id),
            )
            if log:
                self._changed(NS_ADDRESS + address)

    def delete_trunk(self, trunk_id: int, log: bool = True) -> None:
        if log:
            for (address,) in self.db.execute(
                "SELECT address FROM trunk_addresses WHERE trunk_id = ?", (trunk_id,)
            ):
                self._changed(NS_ADDRESS + address)
            self._changed(NS_TRUNK + str(trunk_id))
        self.db.execute("DELETE FROM trunk_addresses WHERE trunk_id = ?", (trunk_id,))
        self.db.execute("DELETE FROM trunks WHERE id = ?", (trunk_id,))
        self.db.execute(
            "DELETE FROM rejected WHERE source LIKE ?", (_address_claim(trunk_id, "%"),)
        )

    def put_tenant(self, record: TenantRecord, log: bool = True) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO tenants (name, timezone, schedule, voicemail_uri, override, "
            "override_until, region, code_profile) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.name,
                record.timezone,
                encode_schedule(record.schedule),
                record.voicemail_uri,
                record.override,
                record.override_until,
                record.region,
                record.code_profile,
            ),
        )
        if log:
            self._changed(NS_TENANT + record.name)

    def delete_tenant(self, name: str) -> None:
        self.db.execute("DELETE FROM tenants WHERE name = ?", (name,))
        self._changed(NS_TENANT + name)

    def trunk_ids(self, tenant: str) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM trunks WHERE tenant = ?", (tenant,))]

    # -- rejected rows ----------------------------------------------------------------

    def reject(self, source: str, reason: str, key: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO rejected (source, reason, key, seen_at) VALUES (?, ?, ?, ?)",
            (source, reason, key, datetime.now(UTC).isoformat(timespec="seconds")),
        )

    def clear_rejected(self, key: str) -> None:
        self.db.execute("DELETE FROM rejected WHERE key = ?", (key,))

    def clear_all_rejected(self) -> None:
        self.db.execute("DELETE FROM rejected")

    # -- internals --------------------------------------------------------------------

    def _changed(self, key: str) -> None:
        self.db.execute("INSERT INTO changes (key) VALUES (?)", (key,))

    def _prune_changes(self) -> None:
        self.db.execute(
            "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?", (CHANGES_KEPT,)
        )

    def _open_seq(self) -> mmap.mmap:
        path = self.dir / SEQ_FILE
        with open(path, "a+b") as handle:
            if os.fstat(handle.fileno()).st_size < SEQ_SIZE:
                # written, not truncated: a hole filled through the mapping on a
                # full disk would be SIGBUS; this is an OSError instead
                handle.write(bytes(SEQ_SIZE))
                handle.flush()
            return mmap.mmap(handle.fileno(), SEQ_SIZE, access=mmap.ACCESS_WRITE)


def _address_claim(trunk_id: int, address: str) -> str:
    """The `rejected` source of a trunk's claim to an address another has."""
    return f"trunks:{trunk_id}:address:{address}"


def current_generation(folder: Path) -> Path | None:
    """The file ``store.sqlite`` names: a ``store.<n>.sqlite`` of this folder
    that exists, or a plain ``store.sqlite`` (older versions).  None for a
    missing link, a dangling one, a loop, or one that points anywhere else."""
    link = folder / STORE_FILE
    if link.is_symlink():
        try:
            target = os.readlink(link)
        except OSError:
            return None
        found = folder / target
        return found if GENERATION.fullmatch(target) and found.is_file() else None
    return link if link.is_file() else None


def _traces(folder: Path) -> bool:
    """Did this folder ever hold a store?  Then an empty one must not be
    installed in its place: readers would route from nothing."""
    return (
        (folder / SEQ_FILE).exists()
        or (folder / STORE_FILE).is_symlink()
        or any(GENERATION.fullmatch(path.name) for path in folder.iterdir())
    )


def _next_generation(folder: Path, after: Path | None) -> int:
    """A number no generation of this folder used, as far as anyone can tell:
    readers may still hold a deleted one open, and must never find another
    file under its name."""
    names = [path.name for path in folder.iterdir()] + ([after.name] if after else [])
    numbers = [int(found.group(1)) for name in names if (found := GENERATION.fullmatch(name))]
    return max(numbers, default=0) + 1


def _new_epoch(folder: Path) -> int:
    """An epoch no reader has seen: past the published one, and past the
    clock in milliseconds, in case ``store.seq`` was lost with its count."""
    return max(_published_epoch(folder) + 1, time.time_ns() // 1_000_000)


def _published_epoch(folder: Path) -> int:
    """The epoch readers last saw (0 when there is no ``store.seq``)."""
    try:
        data = (folder / SEQ_FILE).read_bytes()
    except OSError:
        return 0
    return _SEQ.unpack_from(data)[0] if len(data) >= SEQ_SIZE else 0


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Transaction:
    """``with writer.transaction():`` commits and publishes, or rolls back."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def __enter__(self) -> StoreWriter:
        if self.writer.gate is not None and self.writer.installed:
            self.writer.gate.closing()
        self.writer.db.execute("BEGIN IMMEDIATE")
        return self.writer

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        db = self.writer.db
        if kind is not None:
            if db.in_transaction:  # SQLite ends it by itself on some errors (a full disk)
                db.execute("ROLLBACK")
            if hasattr(self.writer, "_seq") and self.writer.installed:
                with contextlib.suppress(sqlite3.Error, OSError):
                    self.writer.publish()  # nothing changed: the gate opens again
            return
        self.writer._prune_changes()
        db.execute("COMMIT")
        if hasattr(self.writer, "_seq") and self.writer.installed:
            self.writer.publish()
