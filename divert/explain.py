"""`divert explain`: walk a call through the decision core without placing it.

It compiles tables from the portal with the same code the sync worker uses
and calls the same `decide()` the KEMI adapter calls, so what it prints is
what a call would do with that data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, select

from divert.errors import DivertError
from divert.kemi.core.decide import (
    DEFAULT_LIMITS,
    DEFAULT_RING_SECONDS,
    Limits,
    decide,
    redirect,
)
from divert.kemi.core.model import (
    Call,
    CallState,
    Decision,
    EndpointKind,
    ForwardTable,
    Outcome,
    Relay,
    Reply,
)
from divert.kemi.modes import tenant_mode
from divert.numbering import classify, normalise
from divert.portal import find
from divert.portal.policy import load_policy
from divert.portal.reader import KeyReader
from divert.portal.tenants import EXTENSION
from divert.schema.tables import numbers, subscribers, trunks


@dataclass(frozen=True, slots=True)
class Redirect:
    """The rung phone or PBX answers 302 naming `target` (``--after redirect:N``)."""

    target: str

    @property
    def value(self) -> str:
        return f"redirect to {self.target}"


After = Outcome | Redirect


@dataclass(frozen=True, slots=True)
class Explanation:
    called: str
    caller: str
    internal: bool
    at: datetime
    mode: str | None
    steps: tuple[tuple[After | None, Decision], ...]
    away: str | None = None  # the called number's subscriber, when it is away
    zone: str = "UTC"  # the tenant's time zone: times are shown in it
    trunks: dict[str, str] = field(default_factory=dict)  # trunk id -> name


def explain(
    connection: Connection,
    called: str,
    caller: str | None,
    after: list[After],
    at: datetime,
    limits: Limits = DEFAULT_LIMITS,
    seen_by: str | None = None,
) -> Explanation:
    """`seen_by`: explain as tenant `seen_by` may see it (the portal API):
    another tenant's numbers are numbers of the outside world, whose
    forwards it does not learn."""
    number = find.number(connection, called)
    tenant = find.tenant_by_id(connection, number.tenant_id)
    caller_id, internal = _caller(connection, tenant, caller)
    reader = KeyReader(connection)
    record = reader.tenant_record(int(tenant.id), [])
    mode = tenant_mode(record, at.timestamp()) if record else None
    call = Call(caller_id, internal, at.timestamp(), mode)
    lookup = reader.lookup()
    if seen_by is not None:
        everyone = lookup

        def lookup(key: str) -> ForwardTable | None:
            table = everyone(key)
            return table if table is None or table.tenant == seen_by else None

    policy = load_policy(connection)

    def refusal(e164: str) -> str | None:  # as the node words it (the store's policy)
        return policy.why_not(e164, classify(e164))

    decision = decide(call, CallState.begin(str(number.e164)), None, lookup, limits)
    steps: list[tuple[After | None, Decision]] = [(None, decision)]
    for outcome in after:
        if not isinstance(decision, Relay):
            raise DivertError(
                f"the call already ended with {decision.code} {decision.reason} after "
                f"{len(steps)} step(s); drop the extra --after outcomes"
            )
        if isinstance(outcome, Redirect):
            targets = (outcome.target,)
            decision = redirect(call, decision.state, targets, lookup, refusal, limits)
        else:
            decision = decide(call, decision.state, outcome, lookup, limits)
        steps.append((outcome, decision))
    table = lookup(str(number.e164))
    away = None
    if table is not None and table.away and table.endpoint.kind is EndpointKind.SUBSCRIBER:
        away = table.endpoint.ref
    used = {
        decision.endpoint.ref
        for _, decision in steps
        if isinstance(decision, Relay) and decision.endpoint.kind is EndpointKind.TRUNK
    }
    names = {
        str(row.id): str(row.name)
        for row in connection.execute(select(trunks))
        if str(row.id) in used  # the trunks the chain rings, and only those
    }
    return Explanation(
        str(number.e164),
        caller_id,
        internal,
        at,
        mode,
        tuple(steps),
        away,
        str(tenant.timezone),
        names,
    )


def limits(max_diversions: int) -> Limits:
    """The diversion bound to explain with (the node's: --max-diversions)."""
    if max_diversions < 0:
        raise DivertError("--max-diversions must be 0 or more")
    return Limits(max_diversions=max_diversions)


def parse_after(text: str) -> After:
    """An --after item: an outcome, or redirect:NUMBER (international form)."""
    from divert.kemi.signalling import redirect_targets

    kind, colon, number = text.partition(":")
    if kind == "redirect" and colon:
        # as the node reads a Contact: international form only
        read = redirect_targets(f"SIP/2.0 302 Moved\r\nContact: <tel:{number}>\r\n\r\n")
        if not read:
            raise DivertError(
                f"--after {text!r}: the node follows redirects to numbers in international "
                "form only (+39..., 0039...)"
            )
        return Redirect(read[0])
    try:
        return Outcome(text)
    except ValueError:
        choices = ", ".join(o.value for o in Outcome)
        raise DivertError(f"--after {text!r}: give one of {choices}, or redirect:NUMBER") from None


def parse_time(connection: Connection, text: str, called: str) -> datetime:
    """An --at time; without a zone, in the called number's tenant's."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DivertError(f"--at {text!r} is not an ISO 8601 time, e.g. 2026-11-23T09:30") from None
    if moment.tzinfo is None:
        tenant = find.tenant_by_id(connection, find.number(connection, called).tenant_id)
        moment = moment.replace(tzinfo=ZoneInfo(str(tenant.timezone)))
    return moment


def _caller(connection: Connection, tenant: find.AnyRow, caller: str | None) -> tuple[str, bool]:
    """Who calls, and whether that is an internal call for this tenant.

    Internal: a subscriber of the tenant (by username or extension) or one of
    the tenant's subscribers' numbers.
    """
    if caller is None:
        return "anonymous", False
    found = connection.scalar(
        select(subscribers.c.username).where(
            subscribers.c.tenant_id == tenant.id,
            (subscribers.c.username == caller) | (subscribers.c.extension == caller),
        )
    )
    if found is not None:
        return str(found), True
    if EXTENSION.match(caller):
        raise DivertError(f"extension {caller} does not exist in tenant {tenant.name}")
    e164 = normalise(caller, str(tenant.region))
    owner = connection.execute(
        select(numbers.c.subscriber_id).where(
            numbers.c.e164 == e164, numbers.c.tenant_id == tenant.id
        )
    ).first()
    return e164, owner is not None and owner.subscriber_id is not None


def as_text(explanation: Explanation) -> str:
    kind = "internal" if explanation.internal else "external"
    local = explanation.at.astimezone(ZoneInfo(explanation.zone))
    lines = [
        f"call to {explanation.called} from {explanation.caller} ({kind} caller) "
        f"at {local.isoformat(timespec='seconds')} ({explanation.zone})"
        + (f", mode {explanation.mode}" if explanation.mode else "")
    ]
    if explanation.away:
        lines.append(f"{explanation.away} is away: its not-present forwards apply")
    for number, (outcome, decision) in enumerate(explanation.steps, start=1):
        prefix = f"{number}. " + (f"after {outcome.value}: " if outcome else "")
        lines.append(prefix + _describe(decision, explanation.trunks))
        if isinstance(decision, Relay):
            lines.extend(
                f"   diversion {d.counter}: from {d.diverted_from} ({d.condition.value})"
                for d in decision.diversions
            )
    return "\n".join(lines)


def _describe(decision: Decision, trunk_names: dict[str, str]) -> str:
    if isinstance(decision, Reply):
        return f"reply {decision.code} {decision.reason}"
    via = (
        f"{decision.via.origin} ({decision.via.condition.value} -> "
        f"{decision.via.destination.label}): "
        if decision.via
        else ""
    )
    ring = (
        f"{decision.ring_timeout} s"
        if decision.ring_timeout
        else f"{DEFAULT_RING_SECONDS} s, the node's default: no no-answer forward sets it"
    )
    endpoint = decision.endpoint
    where = (
        trunk_names.get(endpoint.ref, endpoint.ref)
        if endpoint.kind is EndpointKind.TRUNK
        else (endpoint.ref)
    )
    return f"{via}ring {decision.target} at {endpoint.kind.value} {where} (ring timer: {ring})"


def as_json(explanation: Explanation) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for outcome, decision in explanation.steps:
        step: dict[str, Any] = {"after": outcome.value if outcome else None}
        if isinstance(decision, Reply):
            step["reply"] = {"code": decision.code, "reason": decision.reason}
        else:
            step["relay"] = {
                "target": decision.target,
                "endpoint": {"kind": decision.endpoint.kind.value, "ref": decision.endpoint.ref},
                "ring_timeout": decision.ring_timeout,
                "via": decision.via.origin if decision.via else None,
                "diversions": [
                    {"from": d.diverted_from, "reason": d.condition.value, "counter": d.counter}
                    for d in decision.diversions
                ],
            }
        steps.append(step)
    return {
        "called": explanation.called,
        "caller": explanation.caller,
        "internal": explanation.internal,
        "at": explanation.at.isoformat(),
        "mode": explanation.mode,
        "away": explanation.away,
        "steps": steps,
    }
