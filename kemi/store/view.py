"""Plain reads of the store, for everything but the SIP path.

The SIP workers read through `divert.kemi.store.reader` (cached, epoch and
sequence checked, key by key).  The node's dispatcher list, `divert sync
status`, feature codes checked on the node while the portal is down, and
the writer's own look-ups read through this view instead: no cache, over a
connection the caller owns (the writer's, or a read-only one of `open`).
With the reader and the writer, it is all the SQL there is on the store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from divert.kemi.core.model import ForwardTable
from divert.kemi.store.format import (
    META_POLICY,
    SELECT_TENANT,
    STORE_FILE,
    PolicyRecord,
    TenantRecord,
    TrunkRecord,
    decode_policy,
    decode_table,
    decode_tenant,
)

COUNTED = ("forward_tables", "subscribers", "trunks")


class StoreView:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    @classmethod
    def open(cls, state_dir: Path) -> StoreView:
        """A read-only view of the current store (sqlite3.Error if it cannot
        be opened)."""
        path = state_dir / STORE_FILE
        return cls(sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None))

    def close(self) -> None:
        self.db.close()

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT name, value FROM meta").fetchall())

    def counts(self) -> dict[str, int]:
        """Rows of the tables `divert sync status` shows."""
        return {
            table: int(self.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in COUNTED
        }

    def rejected(self) -> list[tuple[str, str, str, str]]:
        """(source, reason, key, seen_at) of each portal row the store refused."""
        rows = self.db.execute("SELECT source, reason, key, seen_at FROM rejected ORDER BY source")
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    def trunk_addresses(self) -> list[tuple[int, str]]:
        rows = self.db.execute(
            "SELECT trunk_id, address FROM trunk_addresses ORDER BY trunk_id, address"
        )
        return [(int(trunk_id), str(address)) for trunk_id, address in rows]

    def subscriber(self, aor: str) -> tuple[str, str, str] | None:
        """(tenant, username, domain) of the subscriber `aor`."""
        row = self.db.execute(
            "SELECT tenant, username, domain FROM subscribers WHERE aor = ?", (aor,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]), str(row[2]))

    def extension_user(self, domain: str, extension: str) -> str | None:
        """The username of `extension` in the tenant of `domain`."""
        row = self.db.execute(
            "SELECT username FROM subscribers WHERE domain = ? AND extension = ?",
            (domain, extension),
        ).fetchone()
        return None if row is None else str(row[0])

    def policy(self) -> PolicyRecord | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (META_POLICY,)).fetchone()
        return None if row is None else decode_policy(row[0])

    def tenant(self, name: str) -> TenantRecord | None:
        row = self.db.execute(SELECT_TENANT, (name,)).fetchone()
        return None if row is None else decode_tenant(*row)

    def meta_value(self, name: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def trunk(self, trunk_id: int) -> TrunkRecord | None:
        row = self.db.execute(
            "SELECT id, tenant, name, diversion_style FROM trunks WHERE id = ?", (trunk_id,)
        ).fetchone()
        return None if row is None else TrunkRecord(row)

    def changes_range(self) -> tuple[int, int]:
        """(newest, oldest) sequence in the changes log, 0 when it is empty."""
        newest, oldest = self.db.execute(
            "SELECT coalesce(max(seq), 0), coalesce(min(seq), 0) FROM changes"
        ).fetchone()
        return int(newest), int(oldest)

    def changed_since(self, seq: int) -> list[str]:
        """The keys the changes log lists after `seq`."""
        rows = self.db.execute("SELECT key FROM changes WHERE seq > ?", (seq,))
        return [str(row[0]) for row in rows]

    def number_keys(self) -> Iterator[str]:
        """Every E.164 key with a forward table."""
        for (key,) in self.db.execute("SELECT key FROM forward_tables WHERE key LIKE '+%'"):
            yield str(key)

    def table_keys(self, tenant: str) -> list[str]:
        """The keys of a tenant's forward tables."""
        rows = self.db.execute("SELECT key FROM forward_tables WHERE tenant = ?", (tenant,))
        return [str(row[0]) for row in rows]

    def table_data(self, key: str) -> bytes | None:
        """A forward table as stored (encoded)."""
        row = self.db.execute("SELECT data FROM forward_tables WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def table(self, key: str) -> ForwardTable | None:
        data = self.table_data(key)
        return None if data is None else decode_table(data)

    def owned_tables(self, owner: str) -> list[tuple[str, str, bytes]]:
        """(key, tenant, data) of the tables a subscriber owns, by key."""
        rows = self.db.execute(
            "SELECT key, tenant, data FROM forward_tables WHERE owner = ? ORDER BY key", (owner,)
        )
        return [(str(key), str(tenant), bytes(data)) for key, tenant, data in rows]
