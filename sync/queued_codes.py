"""Keeping the effect of queued feature codes in the store until the portal
has them.

A code dialled while the portal is down waits in the node's queue
(`divert.features.queue`); this node must route by it at once all the same.  After every pass
(and on every wake-up while the portal is down) the worker replays the
queued codes, oldest first, on the store (`divert.features.local`), writing
only tables and tenants that differ.  Replaying is idempotent: a forward
code sets or clears conditions, a *20 is fixed by the time it was dialled,
and a *11 by the mode the node picked when it was dialled.

Once a subscriber's (or tenant's) codes have all left the queue (delivered,
or refused by the portal), their keys are recompiled from the portal, so
the portal's data replaces the local effect, and a refused code's effect
goes away.  Between a journal batch that rewrites a key and the replay
right after it, readers can see the portal's version for a moment.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Connection

from divert.features.local import LocalNode, NotOnNode
from divert.features.queue import QUEUE_FILE, FeatureQueue
from divert.kemi.core.keys import subscriber_key
from divert.kemi.store.format import encode_table
from divert.kemi.store.writer import StoreWriter
from divert.sync.apply import recompile

log = logging.getLogger("divert.sync")


class QueuedCodes:
    def __init__(self, state_dir: Path, writer: StoreWriter) -> None:
        self.state_dir = state_dir
        self.writer = writer
        self._queue: FeatureQueue | None = None
        self._aors: set[str] = set()  # subscribers whose tables carry a local effect
        self._tenants: set[str] = set()  # tenants whose mode carries one
        self._settled_aors: set[str] = set()  # effects whose codes left the queue
        self._settled_tenants: set[str] = set()

    @property
    def queue(self) -> FeatureQueue | None:
        """The node's queue, once a code has been queued on this node."""
        return self._open_queue()

    def replay(self) -> int:
        """Write the queued codes' effect into the store; returns how many
        tables and tenants changed."""
        queue = self._open_queue()
        pending = queue.pending() if queue is not None else []
        if not pending and not self._aors and not self._tenants:
            return 0
        node = LocalNode(self.writer.view, carry=True)
        for row in pending:
            try:
                node.effect(row.subscriber, row.dialled, row.received_at, row.chosen)
            except NotOnNode as error:
                log.warning("queued code %s of %s: %s", row.dialled, row.subscriber, error)
            # a code refused now (the node's data changed since): the portal decides
        written = 0
        with self.writer.transaction():
            for key, (table, owner) in node.changed_tables.items():
                written += self._put_table(key, table.tenant, encode_table(table), owner)
            for name, tenant in node.changed_tenants.items():
                if self.writer.view.tenant(name) != tenant:
                    self.writer.put_tenant(tenant)
                    written += 1
        aors = {owner for _, owner in node.changed_tables.values()}
        tenants = set(node.changed_tenants)
        self._settled_aors |= self._aors - aors
        self._settled_tenants |= self._tenants - tenants
        self._aors, self._tenants = aors, tenants
        if written:
            log.info("queued feature codes: %d table(s)/tenant(s) changed on this node", written)
        return written

    @property
    def unsettled(self) -> bool:
        """Whether codes have left the queue whose local effect is still in the store."""
        return bool(self._settled_aors or self._settled_tenants)

    def settle(self, connection: Connection) -> None:
        """Recompile from the portal what carried the effect of codes that
        have left the queue."""
        keys: set[str] = set()
        for aor in self._settled_aors:
            username, _, domain = aor.partition("@")
            keys.add(subscriber_key(username, domain))
            keys.update(key for key, _, _ in self.writer.owned_tables(aor))
        recompile(connection, self.writer, keys, self._settled_tenants)
        self._settled_aors.clear()
        self._settled_tenants.clear()

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()

    def _put_table(self, key: str, tenant: str, data: bytes, owner: str) -> int:
        if self.writer.view.table_data(key) == data:
            return 0
        self.writer.put_table(key, tenant, data, owner)
        return 1

    def _open_queue(self) -> FeatureQueue | None:
        if self._queue is None and (self.state_dir / QUEUE_FILE).exists():
            self._queue = FeatureQueue(self.state_dir)
        return self._queue
