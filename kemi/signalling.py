"""SIP details of forwarding that need no Kamailio: pure and unit-tested.

- how a failed branch maps to an `Outcome` (KAMAILIO-NOTES: busy is
  486/600/603; 408 after a provisional is no answer; 408 with no reply at
  all, 5xx and transport errors mean the trunk is down, or for a phone that
  it is unreachable);
- the Diversion (RFC 5806) and History-Info (RFC 7044, causes of RFC 4458)
  headers announcing a branch's diversions;
- dispatcher set numbers: 1 for the carriers, 1000 + id for customer trunks;
- the numbers a 3xx redirect names (`redirect_targets`).
"""

from __future__ import annotations

import re

from divert.kemi.core.model import Condition, DiversionStyle, EndpointKind, Outcome, Relay
from divert.kemi.core.policy import E164

CARRIER_SET = 1
PEER_SET = 2  # the other nodes of a cluster (divert run --peer)
TRUNK_SET_BASE = 1000
ALG_ROUND_ROBIN = 4  # dispatcher algorithms: a trunk's addresses in turn,
ALG_PRIORITY = 8  # the carriers by priority

DIVERSION_REASONS = {
    Condition.ALWAYS: "unconditional",
    Condition.NOT_PRESENT: "away",
    # a phone's or PBX's 302: RFC 7544 maps History-Info's cause 302 to
    # "unconditional", and a phone answers 302 for the forward set on it
    Condition.REDIRECT: "unconditional",
    Condition.BUSY: "user-busy",
    Condition.NO_ANSWER: "no-answer",
    Condition.NOT_REGISTERED: "unavailable",
    Condition.TRUNK_DOWN: "out-of-service",
}
"""RFC 5806 reasons."""

HISTORY_CAUSES = {
    Condition.ALWAYS: 302,
    Condition.NOT_PRESENT: 404,  # RFC 6044 maps "away" to 404 (unknown/not available)
    Condition.REDIRECT: 302,
    Condition.BUSY: 486,
    Condition.NO_ANSWER: 408,
    Condition.NOT_REGISTERED: 503,
    Condition.TRUNK_DOWN: 404,
}
"""RFC 4458 cause values: unconditional, user busy, no reply, mobile subscriber
not reachable, unknown/not available."""

BUSY_CODES = frozenset((486, 600, 603))
MERGED = 482  # Loop Detected: also a UAS's answer to a merged request
UNREACHABLE_CODES = frozenset((477, 478, 480, 502, 503, 504))


def trunk_set(trunk_id: str | int) -> int:
    return TRUNK_SET_BASE + int(trunk_id)


def outcome_of(code: int, timed_out: bool, no_reply: bool, kind: EndpointKind) -> Outcome | None:
    """What a branch's final failure means for forwarding (None: pass it on).

    482 from a phone or a PBX: a chain that reaches the same PBX twice (A
    busy -> B, both on one trunk) sends a second INVITE with the call's
    Call-ID, From tag and CSeq on a new branch, which RFC 3261 8.2.2.2 lets
    the PBX answer as a merged request.  That step cannot take the call, as
    if busy: the chain's busy forwards continue, and the trunk stays up."""
    if code in BUSY_CODES or (
        code == MERGED and kind in (EndpointKind.TRUNK, EndpointKind.SUBSCRIBER)
    ):
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
        # one entry per diversion, each counter=1: RFC 5806's counter is how
        # many diversions its entry stands for, and receivers add them up
        entries = [
            f"<sip:{d.diverted_from}@{domain}>;reason={DIVERSION_REASONS[d.condition]};"
            "counter=1;privacy=off"
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


MAX_REDIRECT_CONTACTS = 3
"""A redirect's Contacts followed at most: a phone names one, a PBX a few."""
CONTACTS_READ = 16
"""Contact values read at most, in the order the reply lists them."""
_CONTACT_HEADER = re.compile(r"(?im)^(?:contact|m)[ \t]*:[ \t]*(.*)$")
_Q = re.compile(r";\s*q\s*=\s*([0-9.]+)", re.IGNORECASE)
_VISUAL = str.maketrans("", "", "-.() ")


def redirect_targets(message: str) -> tuple[str, ...]:
    """The numbers (E.164 keys) a 3xx reply's Contacts name, best q first
    (ties in the reply's order), at most `MAX_REDIRECT_CONTACTS` of the first
    `CONTACTS_READ` values.  Only
    numbers in international form count: ``sip:+39...@host``,
    ``sip:0039...@host`` or ``tel:+39...``; other Contacts are dropped (a
    national number cannot be read without the tenant's numbering plan)."""
    head = message.split("\r\n\r\n", 1)[0].replace("\r\n ", " ").replace("\r\n\t", " ")
    found: list[tuple[float, int, str]] = []
    seen: set[str] = set()
    read = 0
    for header in _CONTACT_HEADER.findall(head):
        for contact in _split_contacts(header):
            read += 1
            if read > CONTACTS_READ:  # a hostile far end's thousands: not our CPU
                break
            number = _contact_number(contact)
            if number is not None and number not in seen:
                seen.add(number)
                found.append((-_q_of(contact), len(found), number))
    return tuple(number for _, _, number in sorted(found)[:MAX_REDIRECT_CONTACTS])


def _split_contacts(value: str) -> list[str]:
    """A Contact header's comma-separated values (commas inside <> or quotes kept)."""
    parts, depth, quoted, start = [], 0, False, 0
    for index, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and char == ",":
            parts.append(value[start:index])
            start = index + 1
    parts.append(value[start:])
    return [part.strip() for part in parts if part.strip()]


def _q_of(contact: str) -> float:
    params = contact.rsplit(">", 1)[-1] if ">" in contact else contact
    found = _Q.search(params)
    try:
        return float(found.group(1)) if found else 1.0
    except ValueError:
        return 0.0


def _contact_number(contact: str) -> str | None:
    bracketed = "<" in contact
    uri = contact.split("<", 1)[1].split(">", 1)[0] if bracketed else contact.split(";", 1)[0]
    scheme, _, rest = uri.strip().partition(":")
    if scheme.lower() in ("sip", "sips"):
        user = rest.split("@", 1)[0] if "@" in rest else ""
    elif scheme.lower() == "tel":
        user = rest
    else:
        return None
    digits = user.split(";", 1)[0].translate(_VISUAL)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    return digits if E164.fullmatch(digits) else None


_COUNTER = re.compile(r";\s*counter\s*=\s*([0-9]{1,3})", re.IGNORECASE)


def diversions_announced(values: str) -> int:
    """How many diversions a request's Diversion headers (`values`: their
    bodies, comma-joined) announce: the sum of their counters (1 where an
    entry has none), as RFC 5806 reads them."""
    total = 0
    for entry in _split_contacts(values)[: CONTACTS_READ * 4]:
        params = entry.rsplit(">", 1)[-1] if ">" in entry else entry
        found = _COUNTER.search(params)
        total += max(1, int(found.group(1))) if found else 1
    return total
