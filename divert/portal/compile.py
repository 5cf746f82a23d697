"""Compiling portal rows into forward tables, with validation.

Pure functions: rows in, `Compiled` tables and `Problem`s out.  The same
functions serve the full sync (rows streamed in bulk), the incremental sync
and the portal tools (rows read key by key, see `divert.portal.reader`).

What a key's table holds:

- an E.164 number: its own forwards, then (if a subscriber owns it) the
  subscriber's forwards; its trunk's emergency number as a last
  ``trunk-down`` rule; it rings its trunk or its subscriber.
- ``sub:<user>@<domain>`` (reached by extension): the subscriber's forwards;
  announced by its first number, else its extension.
- ``vm:<mailbox>``: no rules; rings the tenant's voicemail server.

Validation: a forward whose destination is not a valid number, breaks the
destination policy, or no longer resolves (extension deleted, tenant without
operator or voicemail server) is left out of the table and reported as a
`Problem` naming the portal row.  The caller decides what to do with a table
that had problems (the sync worker keeps the key's last good version).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from divert.kemi.core.keys import is_number, subscriber_key, voicemail_key, voicemail_uri
from divert.kemi.core.model import Condition, DestKind, EndpointKind, ForwardTable
from divert.kemi.store.format import RuleTuple, decode_table, encode_parts
from divert.numbering import DestinationPolicy
from divert.schema.tables import CALLER_SCOPES, CONDITIONS, DEST_KINDS, forwards

E164_SHAPE = re.compile(r"\+[1-9][0-9]{2,14}")
KEY_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.@_-:")


@dataclass(frozen=True, slots=True)
class TenantView:
    """What compiling needs of a tenant; `extensions` maps extension -> username."""

    id: int
    name: str
    domain: str
    operator: str | None
    voicemail_uri: str | None
    extensions: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Problem:
    """A portal row that could not be used, and why (`source` is table:id)."""

    source: str
    reason: str


class ForwardRow(NamedTuple):
    """The columns of a forward that compiling reads (see `FORWARD_COLUMNS`)."""

    id: int
    condition: str
    callers: str
    dest_kind: str
    dest_value: str
    ring_timeout: int | None
    modes: str | None
    expires_at: datetime | str | None
    enabled: bool


FORWARD_COLUMNS = tuple(forwards.c[name] for name in ForwardRow._fields)


class Owner(NamedTuple):
    """Who answers a number, compiled once per trunk or subscriber.

    `mailbox` is the voicemail box of the number's own forwards (None: the
    number itself); `shared` are rules every number of the owner gets after
    its own (a subscriber's forwards); `tail` come last (a trunk's emergency
    number); `away`: a subscriber who is not present (seed 004).
    """

    endpoint_kind: str
    endpoint_ref: str
    mailbox: str | None
    shared: tuple[RuleTuple, ...]
    tail: tuple[RuleTuple, ...]
    away: bool = False


def trunk_owner(trunk: Any, policy: DestinationPolicy, problems: list[Problem]) -> Owner:
    tail: tuple[RuleTuple, ...] = ()
    if trunk.emergency:
        reason = policy.refusal(trunk.emergency)
        if reason is None:
            tail = (emergency_rule(trunk.name, trunk.emergency),)
        else:
            problems.append(Problem(f"trunks:{trunk.id}", f"emergency number: {reason}"))
    return Owner(EndpointKind.TRUNK.value, str(trunk.id), None, (), tail)


def subscriber_owner(
    subscriber: Any,
    tenant: TenantView,
    forwards_of_subscriber: Iterable[ForwardRow],
    policy: DestinationPolicy,
    problems: list[Problem],
) -> Owner:
    aor = f"{subscriber.username}@{tenant.domain}"
    shared = forward_rules(forwards_of_subscriber, tenant, aor, policy, problems)
    return Owner(EndpointKind.SUBSCRIBER.value, aor, aor, tuple(shared), (), bool(subscriber.away))


class Compiled(NamedTuple):
    key: str
    tenant: str
    identity: str
    endpoint_kind: str
    endpoint_ref: str
    rules: tuple[RuleTuple, ...]
    away: bool = False

    def encode(self) -> bytes:
        return encode_parts(
            self.key,
            self.tenant,
            self.identity,
            self.endpoint_kind,
            self.endpoint_ref,
            None,
            self.rules,
            self.away,
        )

    def table(self) -> ForwardTable:
        return decode_table(self.encode())

    @property
    def owner(self) -> str | None:
        """The subscriber whose forwards this table carries (see the store's
        ``forward_tables.owner``), or None."""
        return self.endpoint_ref if self.endpoint_kind == EndpointKind.SUBSCRIBER else None

    def row(self) -> tuple[str, str, str | None, bytes]:
        """(key, tenant, owner, data) as `StoreWriter.put_tables` takes it."""
        return self.key, self.tenant, self.owner, self.encode()


def number_table(
    e164: str,
    tenant: TenantView,
    owner: Owner,
    own_forwards: Iterable[ForwardRow],
    policy: DestinationPolicy,
    problems: list[Problem],
) -> Compiled:
    """The table of a DID: its own forwards, then its owner's."""
    rules = forward_rules(own_forwards, tenant, owner.mailbox or e164, policy, problems)
    return Compiled(
        e164,
        tenant.name,
        e164,
        owner.endpoint_kind,
        owner.endpoint_ref,
        (*rules, *owner.shared, *owner.tail),
        owner.away,
    )


def subscriber_table(
    subscriber: Any, first_number: str | None, tenant: TenantView, owner: Owner
) -> Compiled:
    """The table of ``sub:<user>@<domain>``, reached by extension."""
    identity = first_number or subscriber.extension or subscriber.username
    return Compiled(
        subscriber_key(subscriber.username, tenant.domain),
        tenant.name,
        identity,
        owner.endpoint_kind,
        owner.endpoint_ref,
        owner.shared,
        owner.away,
    )


def voicemail_table(mailbox: str, tenant: TenantView) -> Compiled | None:
    """The table of ``vm:<mailbox>``: rings the tenant's voicemail server."""
    if not tenant.voicemail_uri:
        return None
    uri = voicemail_uri(tenant.voicemail_uri, mailbox)
    return Compiled(
        voicemail_key(mailbox), tenant.name, mailbox, EndpointKind.VOICEMAIL.value, uri, ()
    )


def emergency_rule(trunk_name: str, emergency: str) -> RuleTuple:
    """A trunk's emergency number as the last trunk-down rule of its numbers."""
    return (
        Condition.TRUNK_DOWN.value,
        "any",
        DestKind.NUMBER.value,
        emergency,
        emergency,
        0,
        f"trunk {trunk_name} emergency",
        None,
        (),
        None,
    )


def forward_rules(
    rows: Iterable[ForwardRow],
    tenant: TenantView,
    mailbox: str,
    policy: DestinationPolicy,
    problems: list[Problem],
) -> list[RuleTuple]:
    """Rule tuples for enabled forward rows, in order; bad rows become Problems."""
    rules: list[RuleTuple] = []
    for row in rows:
        if not row.enabled:
            continue
        try:
            key, label, code = resolve_destination(row, tenant, mailbox, policy)
        except ValueError as error:
            problems.append(Problem(f"forwards:{row.id}", str(error)))
            continue
        rules.append(
            (
                row.condition,
                row.callers,
                row.dest_kind,
                key,
                label,
                code,
                f"forward {row.id}",
                row.ring_timeout,
                tuple(sorted(row.modes.split(","))) if row.modes else (),
                _epoch(row.expires_at),
            )
        )
    return rules


def resolve_destination(
    row: ForwardRow, tenant: TenantView, mailbox: str, policy: DestinationPolicy
) -> tuple[str, str, int]:
    """(key, label, reply code) of a forward row, or ValueError saying why not."""
    if row.condition not in CONDITIONS or row.callers not in CALLER_SCOPES:
        raise ValueError(f"unknown condition {row.condition!r} or callers {row.callers!r}")
    kind, value = row.dest_kind, row.dest_value
    if kind not in DEST_KINDS:
        raise ValueError(f"unknown destination kind {kind!r}")
    if kind == DestKind.NUMBER:
        reason = policy.refusal(value)
        if reason is not None:
            raise ValueError(reason)
        return value, value, 0
    if kind == DestKind.EXTENSION:
        return _extension_key(tenant, value), f"ext {value}", 0
    if kind == DestKind.VOICEMAIL:
        if not tenant.voicemail_uri:
            raise ValueError(f"tenant {tenant.name} has no voicemail server")
        return voicemail_key(mailbox), "voicemail", 0
    if kind == DestKind.OPERATOR:
        operator = tenant.operator
        if not operator:
            raise ValueError(f"tenant {tenant.name} has no operator destination")
        if is_number(operator):
            reason = policy.refusal(operator)
            if reason is not None:
                raise ValueError(f"operator: {reason}")
            return operator, f"operator ({operator})", 0
        return _extension_key(tenant, operator), f"operator ({operator})", 0
    if not value.isdigit() or not 400 <= int(value) <= 699:
        raise ValueError(f"reject code {value!r} is not a SIP failure code 400-699")
    return "", f"reject {value}", int(value)


def key_problem(source: str, key: str) -> Problem | None:
    """A key whose characters would break the store or the call-state encoding.

    DIDs are checked for E.164 shape only: the portal validated them in full
    when they were saved, and a malformed one can never be called anyway.
    """
    if key.startswith("+"):
        if not E164_SHAPE.fullmatch(key):
            return Problem(source, f"{key!r} is not an E.164 number")
        return None
    if not key or not set(key) <= KEY_ALPHABET:
        return Problem(source, f"{key!r} contains characters a routing key cannot hold")
    return None


def _extension_key(tenant: TenantView, extension: str) -> str:
    username = tenant.extensions.get(extension)
    if username is None:
        raise ValueError(f"extension {extension} does not exist in tenant {tenant.name}")
    return subscriber_key(username, tenant.domain)


def _epoch(moment: datetime | str | None) -> float | None:
    if moment is None:
        return None
    if isinstance(moment, str):  # SQLite through the raw driver
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
