"""Applying portal changes to the store: full sync and incremental batches.

Incremental: each journal row names a portal row; `affected()` turns a batch
into the store keys it can change, and each key is recompiled from the
portal as it is now (so applying twice is harmless).  Frequent changes
(forwards, numbers) touch single keys; rare ones that can change many keys
at once (a tenant's domain, operator or voicemail server; a subscriber's
extension; a trunk's emergency number) recompile the tenant or the trunk's
numbers; a change of the destination policy recompiles everything.

Bad rows: a key whose rows fail validation keeps its last good version in
the store, and each bad row is recorded in ``rejected`` with its reason; a key
with no good version yet is written without the bad rows.  Loops of
unconditional forwards (possible when rows are written with plain SQL) count
as bad rows of the forwards that close them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from divert.kemi.core.keys import subscriber_key, voicemail_key
from divert.kemi.core.model import Condition, ForwardTable
from divert.kemi.store.format import (
    META_FULL_SYNC_AT,
    META_POLICY,
    META_POSITION,
    META_SYNCED_AT,
    encode_policy,
)
from divert.kemi.store.writer import StoreWriter
from divert.loops import find_loop
from divert.numbering import number_plan
from divert.portal.compile import Compiled, Problem
from divert.portal.reader import (
    KeyReader,
    mailbox_keys,
    owned_numbers,
    snapshot,
    subscriber_record,
    trunk_record,
)
from divert.portal.subscribers import caller_id
from divert.schema.tables import forwards, numbers, schedules, subscribers, tenants, trunks
from divert.sync.journal import Change, current_position


@dataclass
class Plan:
    """What a batch of journal rows can have changed in the store."""

    keys: set[str] = field(default_factory=set)
    tenants: set[int] = field(default_factory=set)
    dropped_tenants: set[str] = field(default_factory=set)
    trunks: set[int] = field(default_factory=set)
    dropped_trunks: set[int] = field(default_factory=set)
    subscribers: set[int] = field(default_factory=set)
    everything: bool = False


@dataclass(frozen=True, slots=True)
class Applied:
    changes: int
    keys: int
    rejected: int
    seconds: float


def full_sync(connection: Connection, writer: StoreWriter) -> Applied:
    """Rewrite the whole store from a snapshot of the portal (one transaction
    on each side: the portal snapshot and the store batch)."""
    started = time.perf_counter()
    position = current_position(connection)
    data = snapshot(connection)
    written = 0
    with writer.transaction():
        writer.reset()
        always: dict[str, Compiled] = {}

        def rows() -> Iterable[tuple[str, str, str | None, bytes]]:
            nonlocal written
            for compiled in data.tables:
                written += 1
                for rule in compiled.rules:
                    if rule[0] == "always":
                        always[compiled.key] = compiled
                        break
                yield compiled.row()

        writer.put_tables(rows())
        writer.index_tables()
        for compiled in _break_loops(always, data.problems):
            writer.put_tables([compiled.row()])
        for tenant in data.tenants:
            writer.put_tenant(tenant, log=False)
        for record in data.subscribers:
            writer.put_subscriber(record, log=False)
        writer.clear_all_rejected()  # before the trunks: they record taken addresses
        for trunk, addresses in sorted(data.trunks, key=lambda item: item[0].id):
            writer.put_trunk(trunk, addresses, log=False)
        for problem in data.problems:
            writer.reject(problem.source, problem.reason, "")
        policy = data.policy
        plan = number_plan()  # every country: a call elsewhere is told why it may not go
        writer.set_meta(
            META_POLICY, encode_policy(policy.allowed_countries, policy.denied_prefixes, plan)
        )
        _record_position(writer, position)
        writer.set_meta(META_FULL_SYNC_AT, _now())
    return Applied(0, written, len(data.problems), time.perf_counter() - started)


def apply_batch(
    connection: Connection, writer: StoreWriter, changes: Sequence[Change], position: str
) -> Applied:
    """Apply one journal batch and move the position, in one store transaction."""
    started = time.perf_counter()
    plan = affected(connection, changes)
    if plan.everything:
        result = full_sync(connection, writer)
        return Applied(len(changes), result.keys, result.rejected, time.perf_counter() - started)
    reader = KeyReader(connection)
    rejected = 0
    with writer.transaction():
        keys = set(plan.keys)
        for name in plan.dropped_tenants:
            keys.update(writer.table_keys(name))
            writer.delete_tenant(name)
            writer.delete_subscribers(name)
            for trunk_id in writer.trunk_ids(name):
                writer.delete_trunk(trunk_id)
        for trunk_id in plan.dropped_trunks:
            writer.delete_trunk(trunk_id)
        for tenant_id in plan.tenants:
            keys.update(_tenant_keys(connection, writer, reader, tenant_id))
            problems: list[Problem] = []
            record = reader.tenant_record(tenant_id, problems)
            if record is not None:
                writer.put_tenant(record)
                writer.clear_rejected(f"tenant:{record.name}")
                for problem in problems:
                    writer.reject(problem.source, problem.reason, f"tenant:{record.name}")
                rejected += len(problems)
        for trunk_id in plan.trunks:
            _refresh_trunk(connection, writer, reader, trunk_id)
        for subscriber_id in plan.subscribers:
            keys.update(_refresh_subscriber(connection, writer, reader, subscriber_id))
        for key in sorted(keys):
            rejected += _apply_key(writer, reader, key)
        _record_position(writer, position)
    return Applied(len(changes), len(keys), rejected, time.perf_counter() - started)


def affected(connection: Connection, changes: Sequence[Change]) -> Plan:
    """The store keys and records a batch of journal rows can have changed."""
    plan = Plan()
    ids: dict[str, set[int]] = defaultdict(set)
    for change in changes:
        ids[change.table].add(change.row_id)
        old = change.old_row or {}
        if change.table == "settings":
            plan.everything = True
        elif change.table == "tenants":
            plan.tenants.add(change.row_id)
            if old.get("name"):
                plan.dropped_tenants.add(str(old["name"]))
        elif change.table == "schedules":
            if old.get("tenant_id"):
                plan.tenants.add(int(old["tenant_id"]))
        elif change.table == "trunks":
            plan.trunks.add(change.row_id)
            if change.op == "D":
                plan.dropped_trunks.add(change.row_id)
            # an address it gave up may go to a trunk that was refused it
            plan.trunks.update(_sharing(connection, str(old.get("addresses") or "")))
        elif change.table == "subscribers":
            plan.subscribers.add(change.row_id)
            if change.op != "U" or _moved(old, connection, change.row_id):
                plan.tenants.add(
                    int(old.get("tenant_id") or 0) or _tenant_of(connection, change.row_id)
                )
        elif change.table == "numbers":
            if old.get("e164"):
                plan.keys.add(str(old["e164"]))
                plan.keys.add(voicemail_key(str(old["e164"])))
            if old.get("subscriber_id"):
                plan.subscribers.add(int(old["subscriber_id"]))
        elif change.table == "forwards":
            if old.get("number_id"):
                ids["numbers"].add(int(old["number_id"]))
            if old.get("subscriber_id"):
                plan.subscribers.add(int(old["subscriber_id"]))
    if plan.everything:
        return plan
    plan.tenants.update(
        connection.scalars(
            select(schedules.c.tenant_id).where(schedules.c.id.in_(ids["schedules"]))
        )
    )
    plan.tenants.discard(0)
    _forward_owners(connection, ids["forwards"], ids["numbers"], plan)
    for row in connection.execute(
        select(numbers.c.e164, numbers.c.subscriber_id).where(numbers.c.id.in_(ids["numbers"]))
    ):
        plan.keys.add(row.e164)
        if row.subscriber_id is not None:
            plan.subscribers.add(row.subscriber_id)
    for row in connection.execute(
        select(numbers.c.e164).where(numbers.c.trunk_id.in_(plan.trunks))
    ):
        plan.keys.add(row.e164)
    return plan


def _forward_owners(
    connection: Connection, forward_ids: set[int], number_ids: set[int], plan: Plan
) -> None:
    for row in connection.execute(
        select(forwards.c.number_id, forwards.c.subscriber_id).where(forwards.c.id.in_(forward_ids))
    ):
        if row.number_id is not None:
            number_ids.add(row.number_id)
        if row.subscriber_id is not None:
            plan.subscribers.add(row.subscriber_id)


def _moved(old: dict[str, object], connection: Connection, subscriber_id: int) -> bool:
    """Did a subscriber's username, extension or tenant change (keys move)?"""
    row = connection.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
    if row is None:
        return True
    return (old.get("username"), old.get("extension"), old.get("tenant_id")) != (
        row.username,
        row.extension,
        row.tenant_id,
    )


def _tenant_of(connection: Connection, subscriber_id: int) -> int:
    return int(
        connection.scalar(select(subscribers.c.tenant_id).where(subscribers.c.id == subscriber_id))
        or 0
    )


def _tenant_keys(
    connection: Connection, writer: StoreWriter, reader: KeyReader, tenant_id: int
) -> set[str]:
    """Every key of a tenant, old and new: it is recompiled as a whole."""
    row = connection.execute(select(tenants).where(tenants.c.id == tenant_id)).first()
    if row is None:
        return set()
    keys = set(writer.table_keys(row.name))
    keys.update(connection.scalars(select(numbers.c.e164).where(numbers.c.tenant_id == tenant_id)))
    writer.delete_subscribers(row.name)
    for subscriber in connection.execute(
        select(subscribers).where(subscribers.c.tenant_id == tenant_id)
    ):
        keys.add(subscriber_key(subscriber.username, row.domain))
        owned = owned_numbers(connection, subscriber.id)
        record = subscriber_record(
            reader.tenant(tenant_id), subscriber, caller_id(subscriber.caller_id, owned)
        )
        writer.put_subscriber(record)
    for trunk_id in connection.scalars(select(trunks.c.id).where(trunks.c.tenant_id == tenant_id)):
        _refresh_trunk(connection, writer, reader, trunk_id)
    return keys


def recompile(
    connection: Connection, writer: StoreWriter, keys: set[str], tenant_names: set[str]
) -> None:
    """Rewrite `keys` and the named tenants' records from the portal as it is now."""
    reader = KeyReader(connection)
    with writer.transaction():
        for name in sorted(tenant_names):
            tenant_id = connection.scalar(select(tenants.c.id).where(tenants.c.name == name))
            problems: list[Problem] = []
            record = None if tenant_id is None else reader.tenant_record(tenant_id, problems)
            if record is not None:  # a deleted tenant goes with its journal row
                writer.put_tenant(record)
        for key in sorted(keys):
            _apply_key(writer, reader, key)


def _sharing(connection: Connection, addresses: str) -> set[int]:
    """Trunks that claim one of `addresses` too (taken ones are refused)."""
    wanted = {a for a in addresses.split(",") if a}
    if not wanted:
        return set()
    rows = connection.execute(select(trunks.c.id, trunks.c.addresses))
    return {int(r.id) for r in rows if wanted & set(str(r.addresses).split(","))}


def _refresh_trunk(
    connection: Connection, writer: StoreWriter, reader: KeyReader, trunk_id: int
) -> None:
    row = connection.execute(select(trunks).where(trunks.c.id == trunk_id)).first()
    if row is None:
        writer.delete_trunk(trunk_id)
        return
    record, addresses = trunk_record(reader.tenant(row.tenant_id), row)
    writer.put_trunk(record, addresses)


def _refresh_subscriber(
    connection: Connection, writer: StoreWriter, reader: KeyReader, subscriber_id: int
) -> set[str]:
    """Rewrite a subscriber's record; returns the keys its forwards shape."""
    row = connection.execute(select(subscribers).where(subscribers.c.id == subscriber_id)).first()
    if row is None:
        return set()  # a deleted subscriber goes with its tenant's recompilation
    tenant = reader.tenant(row.tenant_id)
    owned = owned_numbers(connection, row.id)
    writer.put_subscriber(subscriber_record(tenant, row, caller_id(row.caller_id, owned)))
    return {subscriber_key(row.username, tenant.domain), *owned}


def _apply_key(writer: StoreWriter, reader: KeyReader, key: str) -> int:
    """Recompile one key; returns how many bad rows it had."""
    compiled, problems = reader.compile(key)
    if compiled is None:
        if writer.has_table(key):
            writer.delete_table(key)
        writer.clear_rejected(key)
        return 0
    compiled = _without_loops(compiled, reader, problems)
    writer.clear_rejected(key)
    for problem in problems:
        writer.reject(problem.source, problem.reason, key)
    if problems and writer.has_table(key):
        return len(problems)  # the last good version stays
    writer.put_table(key, compiled.tenant, compiled.encode(), compiled.owner)
    for mailbox in mailbox_keys(compiled):
        mailbox_table, _ = reader.compile(mailbox)
        if mailbox_table is not None:
            writer.put_table(mailbox, mailbox_table.tenant, mailbox_table.encode())
    return len(problems)


def _without_loops(compiled: Compiled, reader: KeyReader, problems: list[Problem]) -> Compiled:
    """Drop the unconditional forwards of `compiled` that close a loop."""
    if not any(rule[0] == Condition.ALWAYS for rule in compiled.rules):
        return compiled
    loop = find_loop(reader.lookup(), [compiled.key], time.time())
    if loop is None:
        return compiled
    path, _ = loop
    return _blame(compiled, path, problems)


def _blame(compiled: Compiled, path: tuple[str, ...], problems: list[Problem]) -> Compiled:
    onward = path[1]
    kept = []
    for rule in compiled.rules:
        if rule[0] == Condition.ALWAYS and rule[3] == onward:
            source = "forwards:" + rule[6].removeprefix("forward ")
            problems.append(Problem(source, f"closes a loop: {' -> '.join(path)}"))
        else:
            kept.append(rule)
    return compiled._replace(rules=tuple(kept))


def _break_loops(always: dict[str, Compiled], problems: list[Problem]) -> list[Compiled]:
    """Full sync: find loops among the keys with unconditional forwards and
    return those keys' tables without the forwards that close them."""
    tables: dict[str, ForwardTable] = {}

    def lookup(key: str) -> ForwardTable | None:
        if key not in always:
            return None
        if key not in tables:
            tables[key] = always[key].table()
        return tables[key]

    fixed: dict[str, Compiled] = {}
    now = time.time()
    for key in sorted(always):
        loop = find_loop(lookup, [key], now)
        if loop is None:
            continue
        fixed[key] = _blame(fixed.get(key, always[key]), loop[0], problems)
        always[key] = fixed[key]
        tables.pop(key, None)
    return list(fixed.values())


def _record_position(writer: StoreWriter, position: str) -> None:
    writer.set_meta(META_POSITION, position)
    writer.set_meta(META_SYNCED_AT, _now())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
