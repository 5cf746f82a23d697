"""The store's format, defined once for the sync worker and the KEMI reader.

The store is one SQLite file in WAL mode: many reading processes, one
writer, atomic transactions, and it survives restarts of either side.
``<state-dir>/store.sqlite`` is a symbolic link to the current generation,
``store.<n>.sqlite``: a store that is deleted or damaged is rebuilt into the
next generation and the link swapped atomically (SQLite resolves the link,
so each generation has its own -wal and -shm files).  Beside it,
``store.seq`` holds two little-endian 64-bit integers, (epoch, change
sequence), written by the worker after each commit and mapped into memory
by readers, so that a cached lookup can tell in a fraction of a microsecond
whether anything changed.  A new epoch tells readers to drop their cache
and open the store and ``store.seq`` again (a full sync, a new generation,
a re-made ``store.seq``).

Tables:

- ``forward_tables(key, tenant, owner, data)``: compiled `ForwardTable`s by
  key; `owner` is the subscriber (user@domain) whose forwards the table
  carries, so a feature code can find all of a subscriber's keys.
- ``subscribers(aor, tenant, username, domain, ha1, extension, display_name,
  caller_id)``: `caller_id` is the E.164 number its calls to the carriers
  assert (P-Asserted-Identity), NULL when it owns none.
- ``trunks(id, tenant, name, diversion_style)`` and
  ``trunk_addresses(address, trunk_id)`` (``ip:port``).
- ``changes(seq, key)``: the keys each commit changed, namespaced by the
  `NS_*` prefixes below; readers evict exactly those from their cache.
- ``meta(name, value)``: journal position, epoch, last error, timings, the
  destination policy with the number plan's patterns (`encode_policy`).
- ``rejected(source, reason, key, seen_at)``: portal rows skipped and why.
- ``tenants(name, timezone, schedule, voicemail_uri, override, override_until,
  region, code_profile)``: time modes, the override set from phones, the
  voicemail server, and what feature codes need.

A forward table is stored as `marshal` of plain tuples (`encode_table`),
decoded into the decision core's dataclasses by `decode_table`.
"""

from __future__ import annotations

import json
import marshal
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from divert.kemi.core.model import (
    Condition,
    Destination,
    DestKind,
    Endpoint,
    EndpointKind,
    ForwardTable,
    Rule,
    Scope,
)
from divert.kemi.core.policy import DestinationPolicy, NumberClass, classify_by
from divert.kemi.core.schedule import ScheduleEntry

FORMAT = 1
MARSHAL_VERSION = 4

STORE_FILE = "store.sqlite"  # the link to the current generation
GENERATION = re.compile(r"store\.(\d+)\.sqlite")  # a generation's file name
SEQ_FILE = "store.seq"
SEQ_SIZE = 16  # epoch, sequence
WAKE_SOCKET = "run/sync.wake"  # the worker's wake-up socket (sync.wake); readers ask it to check
CHECK_REQUEST = b"check"  # a reader's datagram: the store failed a read, check it

NS_TABLE = "t|"
NS_SUBSCRIBER = "s|"
NS_TRUNK = "k|"
NS_ADDRESS = "a|"
NS_EXTENSION = "e|"  # e|<domain>|<extension>
NS_TENANT = "n|"

TENANT_INDEX = "CREATE INDEX IF NOT EXISTS forward_tables_tenant ON forward_tables (tenant)"
OWNER_INDEX = (
    "CREATE INDEX IF NOT EXISTS forward_tables_owner ON forward_tables (owner) "
    "WHERE owner IS NOT NULL"
)
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS forward_tables "
    "(key TEXT PRIMARY KEY, tenant TEXT NOT NULL, owner TEXT, data BLOB NOT NULL) WITHOUT ROWID",
    TENANT_INDEX,
    OWNER_INDEX,
    "CREATE TABLE IF NOT EXISTS subscribers (aor TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
    "username TEXT NOT NULL, domain TEXT NOT NULL, ha1 TEXT NOT NULL, extension TEXT, "
    "display_name TEXT NOT NULL, caller_id TEXT) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS subscribers_tenant ON subscribers (tenant)",
    "CREATE INDEX IF NOT EXISTS subscribers_extension ON subscribers (domain, extension)",
    "CREATE TABLE IF NOT EXISTS trunks (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, "
    "name TEXT NOT NULL, diversion_style TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS trunk_addresses "
    "(address TEXT PRIMARY KEY, trunk_id INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY, key TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY, timezone TEXT NOT NULL, "
    "schedule BLOB NOT NULL, voicemail_uri TEXT NOT NULL, override TEXT, "
    "override_until REAL, region TEXT NOT NULL, code_profile TEXT NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rejected (source TEXT PRIMARY KEY, reason TEXT NOT NULL, "
    "key TEXT NOT NULL, seen_at TEXT NOT NULL) WITHOUT ROWID",
)

SELECT_TENANT = (
    "SELECT name, timezone, schedule, voicemail_uri, override, override_until, region, "
    "code_profile FROM tenants WHERE name = ?"
)
"""A tenant's row, in `decode_tenant`'s argument order."""

SCHEMA_VERSION = 6
"""Bumped when tables change: a store written before is rebuilt in full."""
CHANGED_TABLES = ("tenants", "forward_tables", "subscribers")
"""Tables whose columns changed in the newest versions: dropped on upgrade."""

# meta names
META_FORMAT = "format"
META_SCHEMA = "schema_version"
META_EPOCH = "epoch"
META_POSITION = "journal_position"
META_LAST_ID = "journal_last_id"
META_SYNCED_AT = "synced_at"
META_FULL_SYNC_AT = "full_sync_at"
META_LAST_ERROR = "last_error"
META_POLICY = "destination_policy"  # JSON, see `encode_policy`

RuleTuple = tuple[str, str, str, str, str, int, str, int | None, tuple[str, ...], float | None]
TableTuple = tuple[int, str, str, str, str, str, int | None, tuple[RuleTuple, ...]]


def rule_tuple(rule: Rule) -> RuleTuple:
    d = rule.destination
    return (
        rule.condition.value,
        rule.callers.value,
        d.kind.value,
        d.key,
        d.label,
        d.reply_code,
        rule.origin,
        rule.ring_timeout,
        tuple(sorted(rule.modes)),
        rule.expires_at,
    )


def encode_table(table: ForwardTable) -> bytes:
    return encode_parts(
        table.key,
        table.tenant,
        table.identity,
        table.endpoint.kind.value,
        table.endpoint.ref,
        table.ring_timeout,
        tuple(rule_tuple(r) for r in table.rules),
        table.away,
    )


def encode_parts(
    key: str,
    tenant: str,
    identity: str,
    endpoint_kind: str,
    endpoint_ref: str,
    ring_timeout: int | None,
    rules: tuple[RuleTuple, ...],
    away: bool = False,
) -> bytes:
    """Encode a table from plain values (the bulk sync path builds no objects).
    `away` is appended only when set: a present subscriber's table is the
    same bytes as before presence existed."""
    parts: TableTuple = (
        FORMAT,
        key,
        tenant,
        identity,
        endpoint_kind,
        endpoint_ref,
        ring_timeout,
        rules,
    )
    return marshal.dumps((*parts, True) if away else parts, MARSHAL_VERSION)


# Enum members by value, looked up directly: EnumMeta.__call__ costs ~1 us.
_CONDITIONS = cast(dict[str, Condition], Condition._value2member_map_)
_SCOPES = cast(dict[str, Scope], Scope._value2member_map_)
_DEST_KINDS = cast(dict[str, DestKind], DestKind._value2member_map_)
_ENDPOINT_KINDS = cast(dict[str, EndpointKind], EndpointKind._value2member_map_)
_NO_MODES: frozenset[str] = frozenset()


def decode_table(data: bytes) -> ForwardTable:
    parts: Any = marshal.loads(data)
    if parts[0] != FORMAT:
        raise ValueError(f"forward table format {parts[0]} is not {FORMAT}; resync the store")
    _, key, tenant, identity, endpoint_kind, endpoint_ref, ring_timeout, rules, *away = parts
    return ForwardTable(
        key,
        tenant,
        identity,
        Endpoint(_ENDPOINT_KINDS[endpoint_kind], endpoint_ref),
        tuple(
            Rule(
                _CONDITIONS[r[0]],
                _SCOPES[r[1]],
                Destination(_DEST_KINDS[r[2]], r[3], r[4], r[5]),
                r[6],
                r[7],
                frozenset(r[8]) if r[8] else _NO_MODES,
                r[9],
            )
            for r in rules
        ),
        ring_timeout,
        bool(away),
    )


class SubscriberRecord(tuple[str, str, str, str, str, str | None, str, str | None]):
    """A subscriber as the store holds it: (aor, tenant, username, domain,
    ha1, extension, display_name, caller_id); a plain tuple so rows map onto
    it free."""

    __slots__ = ()

    @property
    def aor(self) -> str:
        return self[0]

    @property
    def tenant(self) -> str:
        return self[1]

    @property
    def username(self) -> str:
        return self[2]

    @property
    def domain(self) -> str:
        return self[3]

    @property
    def ha1(self) -> str:
        return self[4]

    @property
    def extension(self) -> str | None:
        return self[5]

    @property
    def display_name(self) -> str:
        return self[6]

    @property
    def caller_id(self) -> str | None:
        """The E.164 number its calls to the carriers assert; None: it owns none."""
        return self[7]


class TrunkRecord(tuple[int, str, str, str]):
    """A customer trunk: (id, tenant, name, diversion_style)."""

    __slots__ = ()

    @property
    def id(self) -> int:
        return self[0]

    @property
    def tenant(self) -> str:
        return self[1]

    @property
    def name(self) -> str:
        return self[2]

    @property
    def diversion_style(self) -> str:
        return self[3]


@dataclass(frozen=True, slots=True)
class TenantRecord:
    """A tenant as routing needs it: time zone, time-mode schedule, the
    voicemail URI template ('' when it has no voicemail server) and a mode
    override from *20 or *11."""

    name: str
    timezone: str
    schedule: tuple[ScheduleEntry, ...]
    voicemail_uri: str
    override: str | None = None  # a mode set from a phone ('' : no mode)
    override_until: float | None = None  # epoch; None: until changed again
    region: str = "ZZ"  # for numbers dialled after a feature code
    code_profile: str = "both"


def encode_schedule(entries: tuple[ScheduleEntry, ...]) -> bytes:
    return marshal.dumps(
        tuple((e.mode, tuple(sorted(e.days)), e.start, e.end) for e in entries), MARSHAL_VERSION
    )


def decode_tenant(
    name: str,
    timezone: str,
    schedule: bytes,
    voicemail_uri: str,
    override: str | None,
    override_until: float | None,
    region: str,
    code_profile: str,
) -> TenantRecord:
    entries: Any = marshal.loads(schedule)
    schedule_entries = tuple(
        ScheduleEntry(mode, frozenset(days), start, end) for mode, days, start, end in entries
    )
    return TenantRecord(
        name,
        timezone,
        schedule_entries,
        voicemail_uri,
        override,
        override_until,
        region,
        code_profile,
    )


def encode_policy(
    allowed_countries: Iterable[int],
    denied_prefixes: Iterable[str],
    number_plan: Mapping[int, Sequence[str]],
) -> str:
    """The portal's destination policy as the store's meta holds it (JSON):
    the operator's settings and each country's patterns that tell
    premium-rate and shared-cost numbers from others
    (`divert.kemi.core.policy.GROUPS`), so Kamailio's workers need no phonenumbers."""
    return json.dumps(
        {
            "allowed_countries": sorted(allowed_countries),
            "denied_prefixes": list(denied_prefixes),
            "number_plan": {str(code): list(sources) for code, sources in number_plan.items()},
        }
    )


class PolicyRecord:
    """The destination policy from the store: the rules, and each country's
    patterns compiled on first use (a few milliseconds each, once a process)."""

    def __init__(self, rules: DestinationPolicy, plan: dict[int, list[str]]) -> None:
        self.rules = rules
        self._sources = plan
        self._compiled: dict[int, tuple[re.Pattern[str], ...] | None] = {}

    def patterns_of(self, country_code: int) -> tuple[re.Pattern[str], ...] | None:
        found = self._compiled.get(country_code, _UNSEEN)
        if found is _UNSEEN:
            sources = self._sources.get(country_code)
            found = None if sources is None else tuple(re.compile(s) for s in sources)
            self._compiled[country_code] = found
        return cast("tuple[re.Pattern[str], ...] | None", found)

    def refusal(self, e164: str) -> str | None:
        """Why a call may not go to `e164`, or None if it may.  A number no
        pattern of its country matches is refused as not valid: in the call
        path there is no phonenumbers to ask."""
        kind = classify_by(e164, self.patterns_of) or NumberClass.INVALID
        return self.rules.why_not(e164, kind)


_UNSEEN = object()


def decode_policy(text: str) -> PolicyRecord:
    data = json.loads(text)
    rules = DestinationPolicy(
        frozenset(int(c) for c in data["allowed_countries"]),
        tuple(str(p) for p in data["denied_prefixes"]),
    )
    plan = {int(code): list(sources) for code, sources in data.get("number_plan", {}).items()}
    return PolicyRecord(rules, plan)
