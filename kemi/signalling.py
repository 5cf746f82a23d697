"""SIP details of forwarding that need no Kamailio: pure and unit-tested.

- how a failed branch maps to an `Outcome` (KAMAILIO-NOTES: busy is
  486/600/603; 408 after a provisional is no answer; 408 with no reply at
  all, 5xx and transport errors mean the trunk is down, or for a phone that
  it is unreachable);
- the Diversion (RFC 5806) and History-Info (RFC 7044, causes of RFC 4458)
  headers announcing a branch's diversions;
- dispatcher set numbers: 1 for the carriers, 1000 + id for customer trunks.
"""

from __future__ import annotations

from divert.kemi.core.model import Condition, DiversionStyle, EndpointKind, Outcome, Relay

CARRIER_SET = 1
TRUNK_SET_BASE = 1000

DIVERSION_REASONS = {
    Condition.ALWAYS: "unconditional",
    Condition.BUSY: "user-busy",
    Condition.NO_ANSWER: "no-answer",
    Condition.NOT_REGISTERED: "unavailable",
    Condition.TRUNK_DOWN: "out-of-service",
}
"""RFC 5806 reasons."""

HISTORY_CAUSES = {
    Condition.ALWAYS: 302,
    Condition.BUSY: 486,
    Condition.NO_ANSWER: 408,
    Condition.NOT_REGISTERED: 503,
    Condition.TRUNK_DOWN: 404,
}
"""RFC 4458 cause values: unconditional, user busy, no reply, mobile subscriber
not reachable, unknown/not available."""

BUSY_CODES = frozenset((486, 600, 603))
UNREACHABLE_CODES = frozenset((477, 478, 480, 502, 503, 504))


def trunk_set(trunk_id: str | int) -> int:
    return TRUNK_SET_BASE + int(trunk_id)


def outcome_of(code: int, timed_out: bool, no_reply: bool, kind: EndpointKind) -> Outcome | None:
    """What a branch's final failure means for forwarding (None: pass it on)."""
    if code in BUSY_CODES:
        return Outcome.BUSY
    gone = (
        Outcome.TRUNK_DOWN
        if kind in (EndpointKind.TRUNK, EndpointKind.EXTERNAL)
        else (Outcome.NOT_REGISTERED)
    )
    if code == 408:
        if timed_out and not no_reply:
            return Outcome.NO_ANSWER
        return gone
    if code in UNREACHABLE_CODES or code >= 500:
        return gone
    return None


def diversion_headers(
    relay: Relay, domain: str, style: str, original_uri: str
) -> list[tuple[str, str]]:
    """(name, value) headers announcing `relay`'s diversions in `style`
    (``diversion``, ``history-info`` or ``both``), most recent first for
    Diversion as RFC 5806 orders them."""
    headers: list[tuple[str, str]] = []
    if style in (DiversionStyle.DIVERSION, DiversionStyle.BOTH):
        entries = [
            f"<sip:{d.diverted_from}@{domain}>;reason={DIVERSION_REASONS[d.condition]};"
            f"counter={d.counter};privacy=off"
            for d in reversed(relay.diversions)
        ]
        headers.append(("Diversion", ", ".join(entries)))
    if style in (DiversionStyle.HISTORY_INFO, DiversionStyle.BOTH):
        first = relay.diversions[0].diverted_from if relay.diversions else relay.target
        entries = [f"<{original_uri or f'sip:{first}@{domain}'}>;index=1"]
        index = "1"
        hops = list(relay.diversions)
        for position, hop in enumerate(hops):
            onward = hops[position + 1].diverted_from if position + 1 < len(hops) else relay.target
            parent, index = index, f"{index}.1"
            cause = HISTORY_CAUSES[hop.condition]
            entries.append(f"<sip:{onward}@{domain};cause={cause}>;index={index};mp={parent}")
        headers.append(("History-Info", ", ".join(entries)))
    return headers
