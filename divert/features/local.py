"""Carrying out a feature code on this node's store, for when the portal is down.

Kamailio's async workers use it to check a code the portal cannot take now, with
the portal's own rules (a valid number, the destination policy the sync
worker copied into the store, no loop of unconditional forwards), and the
sync worker uses it to write the code's effect into the store, so the next
call routes by it at once.  The code itself waits in the node's queue and
reaches the portal when it is back; the portal's data then replaces the
local effect.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

from divert.errors import DivertError
from divert.feature_codes import Request, parse
from divert.features.apply import (
    ACTIVATED,
    REFUSED,
    UNKNOWN,
    Answer,
    ModeChange,
    mode_change,
    number_missing,
    presence_answer,
)
from divert.features.overlay import with_code
from divert.kemi.core.keys import subscriber_key
from divert.kemi.core.model import Destination, DestKind, ForwardTable
from divert.kemi.store.format import STORE_FILE, TenantRecord, decode_table
from divert.kemi.store.view import StoreView
from divert.loops import find_loop, loop_refusal
from divert.numbering import DestinationPolicy, normalise
from divert.portal.forwards import destination_label
from divert.portal.tenants import EXTENSION


class NotOnNode(Exception):
    """The store lacks what the code needs (no store yet, a subscriber the
    node has not synced): the code can only be queued for the portal."""


@dataclass(frozen=True, slots=True)
class Effect:
    """A code's outcome on this node: the phone's answer and what to write.

    `tables` are the subscriber's tables after the code (owner `aor`);
    `tenant` the tenant after a mode code; `chosen` the manual mode a *11
    picked ('' : automatic), kept with the queued code for its delivery.
    """

    answer: Answer
    aor: str
    tables: tuple[ForwardTable, ...] = ()
    tenant: TenantRecord | None = None
    chosen: str | None = None


class LocalNode:
    """The store as feature codes see it, through `store` (the sync
    worker's writer's view, or a read-only one of an async worker's).

    `carry` makes each accepted effect visible to the next `effect()` call
    without writing it (see `changed_tables` and `changed_tenants`), so
    that a run of codes is worked out in memory and written once.
    """

    def __init__(self, store: StoreView, carry: bool = False) -> None:
        self.store = store
        self.carry = carry
        self.changed_tables: dict[str, tuple[ForwardTable, str]] = {}  # key -> (table, owner)
        self.changed_tenants: dict[str, TenantRecord] = {}

    @classmethod
    def open(cls, state_dir: Path) -> LocalNode:
        path = state_dir / STORE_FILE
        if not path.exists():
            raise NotOnNode(f"no store at {path}")
        try:
            return cls(StoreView.open(state_dir))
        except sqlite3.Error as error:
            raise NotOnNode(f"store unreadable: {error}") from None

    def close(self) -> None:
        self.store.close()

    def effect(self, aor: str, dialled: str, now: float, chosen: str | None = None) -> Effect:
        """What `dialled` by subscriber `aor` does at `now`; refusals write nothing."""
        try:
            effect = self._effect(aor, dialled, now, chosen)
        except sqlite3.Error as error:
            raise NotOnNode(f"store unreadable: {error}") from None
        if self.carry and effect.answer.code == ACTIVATED:
            for table in effect.tables:
                self.changed_tables[table.key] = (table, aor)
            if effect.tenant is not None:
                self.changed_tenants[effect.tenant.name] = effect.tenant
        return effect

    def _effect(self, aor: str, dialled: str, now: float, chosen: str | None) -> Effect:
        found = self.store.subscriber(aor)
        if found is None:
            return Effect(Answer(REFUSED, "Forwarding Refused: unknown subscriber"), aor)
        tenant_name, username, domain = found
        tenant = self._tenant(tenant_name)
        request = parse(dialled, tenant.code_profile)
        if request is None:
            return Effect(Answer(UNKNOWN, f"Unknown Feature Code {dialled[:20]}"), aor)
        if request.number == "":
            return Effect(number_missing(request.code.code), aor)
        code = request.code
        if code.action in ("next-mode", "toggle-mode"):
            return self._mode(aor, tenant, code.action, now, chosen)
        key = subscriber_key(username, domain)
        mine = self._owned(aor)
        if key not in {table.key for table in mine}:
            raise NotOnNode(f"{aor} has no table {key} in the store")
        if code.action in ("away", "present"):
            away = code.action == "away"
            tables = tuple(replace(table, away=away) for table in mine)
            return Effect(presence_answer(away), aor, tables)
        destination, label = None, ""
        if code.action == "set":
            try:
                destination, label = self._destination(request, tenant, domain)
            except DivertError as error:
                return Effect(Answer(REFUSED, f"Forwarding Refused: {error}"), aor)
        after = tuple(
            with_code(
                mine, key, code.action, code.condition, destination, f"feature code {dialled}"
            )
        )
        if code.action == "cancel-all":
            return Effect(Answer(ACTIVATED, "All Forwarding Cancelled"), aor, after)
        if code.action == "cancel":
            return Effect(Answer(ACTIVATED, f"Forwarding Cancelled ({code.condition})"), aor, after)
        assert destination is not None
        loop = self._loop(after, now)
        if loop is not None:
            return Effect(Answer(REFUSED, f"Forwarding Refused: {loop}"), aor)
        return Effect(
            Answer(ACTIVATED, f"Forwarding Activated ({code.condition}) to {label}"), aor, after
        )

    def _mode(
        self, aor: str, tenant: TenantRecord, action: str, now: float, chosen: str | None
    ) -> Effect:
        manual = tenant.override if tenant.override_until is None else None
        change = mode_change(tenant.schedule, tenant.timezone, manual, action, now, chosen)
        if not isinstance(change, ModeChange):
            return Effect(change, aor)
        after = replace(tenant, override=change.override, override_until=change.until)
        picked = (change.override or "") if action == "toggle-mode" else None
        return Effect(Answer(ACTIVATED, change.reason), aor, tenant=after, chosen=picked)

    def _destination(
        self, request: Request, tenant: TenantRecord, domain: str
    ) -> tuple[Destination, str]:
        """The dialled destination and its label as the portal shows it,
        checked as the portal checks it (DivertError)."""
        assert request.number is not None
        text = request.number
        if EXTENSION.match(text):
            username = self.store.extension_user(domain, text)
            if username is None:
                raise DivertError(f"extension {text} does not exist in tenant {tenant.name}")
            key = subscriber_key(username, domain)
            destination = Destination(DestKind.EXTENSION, key, f"ext {text}")
            return destination, destination_label(DestKind.EXTENSION, text)
        e164 = normalise(text, tenant.region)
        self._policy().check(e164)
        return Destination(DestKind.NUMBER, e164, e164), destination_label(DestKind.NUMBER, e164)

    def _loop(self, after: tuple[ForwardTable, ...], now: float) -> str | None:
        changed = {table.key: table for table in after}

        def lookup(key: str) -> ForwardTable | None:
            return changed[key] if key in changed else self._table(key)

        loop = find_loop(lookup, list(changed), now)
        return None if loop is None else loop_refusal(*loop)

    def _changed(self, key: str) -> ForwardTable | None:
        changed = self.changed_tables.get(key)
        return None if changed is None else changed[0]

    def _policy(self) -> DestinationPolicy:
        policy = self.store.policy()
        if policy is None:
            raise NotOnNode("the store has no destination policy yet")
        rules = policy.rules
        return DestinationPolicy(rules.allowed_countries, rules.denied_prefixes)

    def _tenant(self, name: str) -> TenantRecord:
        if name in self.changed_tenants:
            return self.changed_tenants[name]
        tenant = self.store.tenant(name)
        if tenant is None:
            raise NotOnNode(f"tenant {name} is not in the store")
        return tenant

    def _owned(self, aor: str) -> list[ForwardTable]:
        rows = self.store.owned_tables(aor)
        return [self._changed(key) or decode_table(data) for key, _, data in rows]

    def _table(self, key: str) -> ForwardTable | None:
        if key in self.changed_tables:
            return self.changed_tables[key][0]
        return self.store.table(key)
