"""Reading the portal for compilation: key by key, or everything at once.

`KeyReader` compiles one key with a few indexed queries (the incremental
sync, `divert explain`, loop refusal).  `snapshot()` streams the whole
portal for a full sync: numbers and their forwards come from two cursors
ordered by number id and merged, so memory holds one number's rows at a
time, not a million.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from sqlalchemy import Connection, select

from divert.kemi.core.decide import Lookup
from divert.kemi.core.keys import SUBSCRIBER_PREFIX, VOICEMAIL_PREFIX, is_number
from divert.kemi.core.model import DestKind, ForwardTable
from divert.kemi.core.schedule import ScheduleEntry, parse_days, parse_minute
from divert.kemi.store.format import SubscriberRecord, TenantRecord, TrunkRecord
from divert.numbering import DestinationPolicy
from divert.portal.compile import (
    FORWARD_COLUMNS,
    Compiled,
    ForwardRow,
    Problem,
    TenantView,
    key_problem,
    number_table,
    subscriber_owner,
    subscriber_table,
    trunk_owner,
    voicemail_table,
)
from divert.portal.policy import load_policy
from divert.schema.tables import forwards, numbers, schedules, subscribers, tenants, trunks


def tenant_view(connection: Connection, row: Any) -> TenantView:
    rows = connection.execute(
        select(subscribers.c.extension, subscribers.c.username).where(
            subscribers.c.tenant_id == row.id, subscribers.c.extension.is_not(None)
        )
    )
    extensions = {extension: username for extension, username in rows.tuples()}
    return TenantView(row.id, row.name, row.domain, row.operator, row.voicemail_uri, extensions)


def tenant_record(tenant: Any, rows: Iterable[Any], problems: list[Problem]) -> TenantRecord:
    """A tenant's schedule entries, in portal order; bad entries are skipped."""
    entries = []
    for row in rows:
        try:
            entries.append(
                ScheduleEntry(
                    row.mode,
                    parse_days(row.weekdays),
                    parse_minute(row.starts),
                    parse_minute(row.ends),
                )
            )
        except ValueError as error:
            problems.append(Problem(f"schedules:{row.id}", str(error)))
    until = tenant.mode_override_until
    if until is not None and until.tzinfo is None:  # SQLite hands back naive UTC
        until = until.replace(tzinfo=UTC)
    return TenantRecord(
        tenant.name,
        tenant.timezone,
        tuple(entries),
        tenant.voicemail_uri or "",
        tenant.mode_override,
        until.timestamp() if until is not None else None,
        tenant.region,
        tenant.code_profile,
    )


def subscriber_record(tenant: TenantView, row: Any, caller_id: str | None) -> SubscriberRecord:
    return SubscriberRecord(
        (
            f"{row.username}@{tenant.domain}",
            tenant.name,
            row.username,
            tenant.domain,
            row.ha1,
            row.extension,
            row.display_name,
            caller_id,
        )
    )


def owned_numbers(connection: Connection, subscriber_id: int) -> list[str]:
    """A subscriber's numbers, in the order they were added."""
    return list(
        connection.scalars(
            select(numbers.c.e164)
            .where(numbers.c.subscriber_id == subscriber_id)
            .order_by(numbers.c.id)
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

    def tenant_record(self, tenant_id: int, problems: list[Problem]) -> TenantRecord | None:
        row = self.connection.execute(select(tenants).where(tenants.c.id == tenant_id)).first()
        if row is None:
            return None
        entries = self.connection.execute(
            select(schedules).where(schedules.c.tenant_id == tenant_id).order_by(schedules.c.id)
        )
        return tenant_record(row, entries, problems)

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
        bad = key_problem(f"numbers:{number.id}", e164)
        if bad is not None:
            problems.append(bad)
            return None
        tenant = self.tenant(number.tenant_id)
        assert self.policy is not None
        if number.subscriber_id is not None:
            subscriber = self.connection.execute(
                select(subscribers).where(subscribers.c.id == number.subscriber_id)
            ).one()
            theirs = self._forwards(forwards.c.subscriber_id == subscriber.id)
            owner = subscriber_owner(subscriber, tenant, theirs, self.policy, problems)
        else:
            trunk = self.connection.execute(
                select(trunks).where(trunks.c.id == number.trunk_id)
            ).one()
            owner = trunk_owner(trunk, self.policy, problems)
        own = self._forwards(forwards.c.number_id == number.id)
        return number_table(e164, tenant, owner, own, self.policy, problems)

    def _subscriber(self, key: str, problems: list[Problem]) -> Compiled | None:
        username, _, domain = key[len(SUBSCRIBER_PREFIX) :].partition("@")
        row = self.connection.execute(
            select(subscribers)
            .join(tenants, tenants.c.id == subscribers.c.tenant_id)
            .where(subscribers.c.username == username, tenants.c.domain == domain)
        ).first()
        if row is None:
            return None
        owned = owned_numbers(self.connection, row.id)
        first_number = owned[0] if owned else None
        assert self.policy is not None
        tenant = self.tenant(row.tenant_id)
        own = self._forwards(forwards.c.subscriber_id == row.id)
        owner = subscriber_owner(row, tenant, own, self.policy, problems)
        return subscriber_table(row, first_number, tenant, owner)

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

    def _forwards(self, owner: Any) -> list[ForwardRow]:
        query = select(*FORWARD_COLUMNS).where(owner).order_by(forwards.c.position, forwards.c.id)
        return [ForwardRow._make(row) for row in self.connection.execute(query)]


@dataclass
class Snapshot:
    """Everything a full sync writes, produced as it streams."""

    tables: Iterator[Compiled]
    tenants: list[TenantRecord]
    subscribers: list[SubscriberRecord]
    trunks: list[tuple[TrunkRecord, tuple[str, ...]]]
    problems: list[Problem]
    policy: DestinationPolicy


def snapshot(connection: Connection, batch: int = 5_000) -> Snapshot:
    """Stream the whole portal as compiled tables (call inside one transaction).

    Owners (trunks, subscribers) are compiled once; numbers and their own
    forwards are merged from two cursors ordered by number id.
    """
    policy = load_policy(connection)
    problems: list[Problem] = []
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
    by_subscriber: dict[int, list[ForwardRow]] = defaultdict(list)
    for row in connection.execute(
        select(forwards.c.subscriber_id, *FORWARD_COLUMNS)
        .where(forwards.c.subscriber_id.is_not(None))
        .order_by(forwards.c.subscriber_id, forwards.c.position, forwards.c.id)
    ):
        by_subscriber[row[0]].append(ForwardRow._make(row[1:]))
    first_numbers: dict[int, str] = {}
    for sid, e164 in connection.execute(
        select(numbers.c.subscriber_id, numbers.c.e164)
        .where(numbers.c.subscriber_id.is_not(None))
        .order_by(numbers.c.id.desc())
    ).tuples():
        first_numbers[sid] = e164
    chosen_owned = set(
        connection.scalars(
            select(subscribers.c.id).join(
                numbers,
                (numbers.c.e164 == subscribers.c.caller_id)
                & (numbers.c.subscriber_id == subscribers.c.id),
            )
        )
    )
    trunk_owners = {tid: trunk_owner(row, policy, problems) for tid, row in trunk_rows.items()}
    subscriber_owners = {}
    subscriber_records = []
    for sid, row in subscriber_rows.items():
        tenant = views[row.tenant_id]
        bad = key_problem(f"subscribers:{sid}", f"{row.username}@{tenant.domain}")
        if bad is not None:
            problems.append(bad)
            continue
        subscriber_owners[sid] = subscriber_owner(
            row, tenant, by_subscriber.get(sid, ()), policy, problems
        )
        # `caller_id`'s rule, from two queries instead of one per subscriber
        asserted = row.caller_id if sid in chosen_owned else first_numbers.get(sid)
        subscriber_records.append(subscriber_record(tenant, row, asserted))

    def tables() -> Iterator[Compiled]:
        mailboxes: dict[str, TenantView] = {}
        number_rows = _stream(
            connection,
            "SELECT id, e164, tenant_id, trunk_id, subscriber_id FROM numbers ORDER BY id",
            batch,
        )
        forward_rows = _stream(
            connection,
            f"SELECT number_id, {', '.join(ForwardRow._fields)} FROM forwards "
            "WHERE number_id IS NOT NULL ORDER BY number_id, position, id",
            batch,
        )
        pending = next(forward_rows, None)
        for number_id, e164, tenant_id, trunk_id, subscriber_id in number_rows:
            own = []
            while pending is not None and pending[0] <= number_id:
                if pending[0] == number_id:
                    own.append(ForwardRow._make(pending[1:]))
                pending = next(forward_rows, None)
            bad = key_problem(f"numbers:{number_id}", e164)
            owner = trunk_owners.get(trunk_id) or subscriber_owners.get(subscriber_id)
            if bad is not None or owner is None:
                problems.append(bad or Problem(f"numbers:{number_id}", "its owner was rejected"))
                continue
            tenant = views[tenant_id]
            compiled = number_table(e164, tenant, owner, own, policy, problems)
            _note_mailboxes(compiled, tenant, mailboxes)
            yield compiled
        for sid, owner in subscriber_owners.items():
            row = subscriber_rows[sid]
            tenant = views[row.tenant_id]
            compiled = subscriber_table(row, first_numbers.get(sid), tenant, owner)
            _note_mailboxes(compiled, tenant, mailboxes)
            yield compiled
        for key, tenant in mailboxes.items():
            mailbox_table = voicemail_table(key[len(VOICEMAIL_PREFIX) :], tenant)
            if mailbox_table is not None:
                yield mailbox_table

    trunk_records = [trunk_record(views[row.tenant_id], row) for row in trunk_rows.values()]
    by_tenant: dict[int, list[Any]] = defaultdict(list)
    for row in connection.execute(select(schedules).order_by(schedules.c.id)):
        by_tenant[row.tenant_id].append(row)
    tenant_records = [
        tenant_record(row, by_tenant[tid], problems) for tid, row in tenant_rows.items()
    ]
    return Snapshot(tables(), tenant_records, subscriber_records, trunk_records, problems, policy)


def _stream(connection: Connection, sql: str, batch: int) -> Iterator[tuple[Any, ...]]:
    """Rows of `sql` straight from the driver, in the caller's transaction.

    A million rows through SQLAlchemy's result objects cost seconds; the
    driver's own cursor (server-side on PostgreSQL) streams them in batches.
    """
    driver: Any = connection.connection.dbapi_connection
    if connection.dialect.name == "postgresql":
        cursor = driver.cursor(name=f"divert_stream_{id(sql)}")
        cursor.itersize = batch
    else:
        cursor = driver.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(batch):
            yield from rows
    finally:
        cursor.close()


def _note_mailboxes(
    compiled: Compiled, tenant: TenantView, mailboxes: dict[str, TenantView]
) -> None:
    for key in mailbox_keys(compiled):
        mailboxes[key] = tenant


def mailbox_keys(compiled: Compiled) -> list[str]:
    """The voicemail keys a table's rules point at (their tables go with it)."""
    return [rule[3] for rule in compiled.rules if rule[2] == DestKind.VOICEMAIL]
