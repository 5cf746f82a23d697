"""Reading the portal for compilation: key by key, or everything at once.

`KeyReader` compiles one key with a few indexed queries (the incremental
sync, `divert explain`, loop refusal).  `snapshot()` streams the whole
portal for a full sync: numbers and their forwards come from two cursors
ordered by number id and merged, so memory holds one number's rows at a
time, not a million.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from divert.numbering import DestinationPolicy, NumberClass, classify
from divert.portal.policy import load_policy
from kemi.core.decide import Lookup
from kemi.core.keys import SUBSCRIBER_PREFIX, VOICEMAIL_PREFIX, is_number
from kemi.core.model import DestKind, ForwardTable
from kemi.store.format import SubscriberRecord, TrunkRecord
from schema.tables import forwards, numbers, subscribers, tenants, trunks
from sync.compile import (
    Compiled,
    Problem,
    TenantView,
    key_problem,
    number_table,
    subscriber_table,
    voicemail_table,
)


def tenant_view(connection: Connection, row: Any) -> TenantView:
    rows = connection.execute(
        select(subscribers.c.extension, subscribers.c.username).where(
            subscribers.c.tenant_id == row.id, subscribers.c.extension.is_not(None)
        )
    )
    extensions = {extension: username for extension, username in rows.tuples()}
    return TenantView(row.id, row.name, row.domain, row.operator, row.voicemail_uri, extensions)


def subscriber_record(tenant: TenantView, row: Any) -> SubscriberRecord:
    return SubscriberRecord(
        (
            f"{row.username}@{tenant.domain}",
            tenant.name,
            row.username,
            tenant.domain,
            row.ha1,
            row.extension,
            row.display_name,
        )
    )


def trunk_record(tenant: TenantView, row: Any) -> tuple[TrunkRecord, tuple[str, ...]]:
    record = TrunkRecord((row.id, tenant.name, row.name, row.diversion_style))
    return record, tuple(a for a in row.addresses.split(",") if a)


@dataclass
class KeyReader:
    """Compiles single keys from the portal inside the caller's transaction."""

    connection: Connection
    policy: DestinationPolicy | None = None
    _tenants: dict[int, TenantView] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.policy is None:
            self.policy = load_policy(self.connection)

    def tenant(self, tenant_id: int) -> TenantView:
        if tenant_id not in self._tenants:
            row = self.connection.execute(select(tenants).where(tenants.c.id == tenant_id)).one()
            self._tenants[tenant_id] = tenant_view(self.connection, row)
        return self._tenants[tenant_id]

    def compile(self, key: str) -> tuple[Compiled | None, list[Problem]]:
        """The table of `key` as the portal has it now (None: no such key)."""
        problems: list[Problem] = []
        if is_number(key):
            return self._number(key, problems), problems
        if key.startswith(SUBSCRIBER_PREFIX):
            return self._subscriber(key, problems), problems
        if key.startswith(VOICEMAIL_PREFIX):
            return self._voicemail(key), problems
        return None, problems

    def lookup(self) -> Lookup:
        """A decision-core lookup over the portal, memoised."""
        memo: dict[str, ForwardTable | None] = {}

        def lookup(key: str) -> ForwardTable | None:
            if key not in memo:
                compiled, _ = self.compile(key)
                memo[key] = None if compiled is None else compiled.table()
            return memo[key]

        return lookup

    def _number(self, e164: str, problems: list[Problem]) -> Compiled | None:
        number = self.connection.execute(select(numbers).where(numbers.c.e164 == e164)).first()
        if number is None:
            return None
        if classify(e164) is NumberClass.INVALID:
            problems.append(Problem(f"numbers:{number.id}", f"{e164} is not a valid E.164 number"))
            return None
        tenant = self.tenant(number.tenant_id)
        own = self._forwards(forwards.c.number_id == number.id)
        assert self.policy is not None
        if number.subscriber_id is not None:
            subscriber = self.connection.execute(
                select(subscribers).where(subscribers.c.id == number.subscriber_id)
            ).one()
            theirs = self._forwards(forwards.c.subscriber_id == subscriber.id)
            return number_table(e164, tenant, None, subscriber, own, theirs, self.policy, problems)
        trunk = self.connection.execute(select(trunks).where(trunks.c.id == number.trunk_id)).one()
        return number_table(e164, tenant, trunk, None, own, (), self.policy, problems)

    def _subscriber(self, key: str, problems: list[Problem]) -> Compiled | None:
        username, _, domain = key[len(SUBSCRIBER_PREFIX) :].partition("@")
        row = self.connection.execute(
            select(subscribers)
            .join(tenants, tenants.c.id == subscribers.c.tenant_id)
            .where(subscribers.c.username == username, tenants.c.domain == domain)
        ).first()
        if row is None:
            return None
        first_number = self.connection.scalar(
            select(numbers.c.e164).where(numbers.c.subscriber_id == row.id).order_by(numbers.c.id)
        )
        assert self.policy is not None
        own = self._forwards(forwards.c.subscriber_id == row.id)
        return subscriber_table(
            row, first_number, self.tenant(row.tenant_id), own, self.policy, problems
        )

    def _voicemail(self, key: str) -> Compiled | None:
        mailbox = key[len(VOICEMAIL_PREFIX) :]
        if is_number(mailbox):
            tenant_id = self.connection.scalar(
                select(numbers.c.tenant_id).where(numbers.c.e164 == mailbox)
            )
        else:
            tenant_id = self.connection.scalar(
                select(tenants.c.id).where(tenants.c.domain == mailbox.partition("@")[2])
            )
        return None if tenant_id is None else voicemail_table(mailbox, self.tenant(tenant_id))

    def _forwards(self, owner: Any) -> list[Any]:
        query = select(forwards).where(owner).order_by(forwards.c.position, forwards.c.id)
        return list(self.connection.execute(query))


@dataclass
class Snapshot:
    """Everything a full sync writes, produced as it streams."""

    tables: Iterator[Compiled]
    subscribers: list[SubscriberRecord]
    trunks: list[tuple[TrunkRecord, tuple[str, ...]]]
    problems: list[Problem]


def snapshot(connection: Connection, batch: int = 5_000) -> Snapshot:
    """Stream the whole portal as compiled tables (call inside one transaction)."""
    policy = load_policy(connection)
    tenant_rows = {row.id: row for row in connection.execute(select(tenants))}
    extensions: dict[int, dict[str, str]] = defaultdict(dict)
    subscriber_rows = {}
    for row in connection.execute(select(subscribers)):
        subscriber_rows[row.id] = row
        if row.extension is not None:
            extensions[row.tenant_id][row.extension] = row.username
    views = {
        tid: TenantView(r.id, r.name, r.domain, r.operator, r.voicemail_uri, extensions[tid])
        for tid, r in tenant_rows.items()
    }
    trunk_rows = {row.id: row for row in connection.execute(select(trunks))}
    by_subscriber: dict[int, list[Any]] = defaultdict(list)
    for row in connection.execute(
        select(forwards)
        .where(forwards.c.subscriber_id.is_not(None))
        .order_by(forwards.c.subscriber_id, forwards.c.position, forwards.c.id)
    ):
        by_subscriber[row.subscriber_id].append(row)
    first_numbers: dict[int, str] = {}
    for sid, e164 in connection.execute(
        select(numbers.c.subscriber_id, numbers.c.e164)
        .where(numbers.c.subscriber_id.is_not(None))
        .order_by(numbers.c.id.desc())
    ).tuples():
        first_numbers[sid] = e164
    problems: list[Problem] = []

    def tables() -> Iterator[Compiled]:
        mailboxes: dict[str, TenantView] = {}
        streamed = connection.execution_options(stream_results=True, yield_per=batch)
        number_rows = streamed.execute(select(numbers).order_by(numbers.c.id))
        forward_rows = streamed.execute(
            select(forwards)
            .where(forwards.c.number_id.is_not(None))
            .order_by(forwards.c.number_id, forwards.c.position, forwards.c.id)
        )
        pending = next(forward_rows, None)
        for number in number_rows:
            own = []
            while pending is not None and pending.number_id <= number.id:
                if pending.number_id == number.id:
                    own.append(pending)
                pending = next(forward_rows, None)
            bad = key_problem(f"numbers:{number.id}", number.e164)
            if bad is None and classify(number.e164) is NumberClass.INVALID:
                bad = Problem(f"numbers:{number.id}", f"{number.e164} is not a valid E.164 number")
            if bad is not None:
                problems.append(bad)
                continue
            tenant = views[number.tenant_id]
            subscriber = subscriber_rows.get(number.subscriber_id)
            theirs = by_subscriber.get(number.subscriber_id, ()) if subscriber else ()
            trunk = trunk_rows.get(number.trunk_id)
            compiled = number_table(
                number.e164, tenant, trunk, subscriber, own, theirs, policy, problems
            )
            _note_mailboxes(compiled, tenant, mailboxes)
            yield compiled
        for sid, row in subscriber_rows.items():
            tenant = views[row.tenant_id]
            bad = key_problem(f"subscribers:{sid}", f"{row.username}@{tenant.domain}")
            if bad is not None:
                problems.append(bad)
                continue
            compiled = subscriber_table(
                row, first_numbers.get(sid), tenant, by_subscriber.get(sid, ()), policy, problems
            )
            _note_mailboxes(compiled, tenant, mailboxes)
            yield compiled
        for key, tenant in mailboxes.items():
            mailbox_table = voicemail_table(key[len(VOICEMAIL_PREFIX) :], tenant)
            if mailbox_table is not None:
                yield mailbox_table

    subscriber_records = []
    for sid, row in subscriber_rows.items():
        tenant = views[row.tenant_id]
        if key_problem(f"subscribers:{sid}", f"{row.username}@{tenant.domain}") is None:
            subscriber_records.append(subscriber_record(tenant, row))
    trunk_records = [trunk_record(views[row.tenant_id], row) for row in trunk_rows.values()]
    return Snapshot(tables(), subscriber_records, trunk_records, problems)


def _note_mailboxes(
    compiled: Compiled, tenant: TenantView, mailboxes: dict[str, TenantView]
) -> None:
    for key in mailbox_keys(compiled):
        mailboxes[key] = tenant


def mailbox_keys(compiled: Compiled) -> list[str]:
    """The voicemail keys a table's rules point at (their tables go with it)."""
    return [rule[3] for rule in compiled.rules if rule[2] == DestKind.VOICEMAIL]
