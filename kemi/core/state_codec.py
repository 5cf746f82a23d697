"""CallState to and from one short string, to carry it on the transaction.

Kamailio keeps per-transaction values as AVPs of string type; the failure
route of each step reads the state back.  The format is plain text so that it
shows readably in logs:

    v1|<prior>|<current>|<visited,...>|<owner;identity;condition;index;to>/...

Keys and identities never contain ``| , ; /`` (the sync worker only emits
E.164 numbers, ``sub:<user>@<domain>`` and ``vm:<mailbox>`` keys whose parts
are checked against that alphabet).

A relay carries the state with the rest of what its failure route needs, in
one string (one AVP: each one written costs Kamailio a shared-memory
allocation), line by line::

    <endpoint kind>\n<internal 0|1>\n<mode>\n<state>\n<caller>

The caller (a From user, which no SIP parser lets hold a line break) comes
last; mode names are ``[a-z0-9_-]``.
"""

from __future__ import annotations

from divert.kemi.core.model import Call, CallState, Condition, EndpointKind, Hop

VERSION = "v1"


class StateFormatError(ValueError):
    """The carried state is not one this version wrote."""


def encode(state: CallState) -> str:
    hops = "/".join(
        f"{h.owner};{h.identity};{h.condition.value};{h.rule_index};{h.diverted_to}"
        for h in state.path
    )
    visited = ",".join(sorted(state.visited))
    return f"{VERSION}|{state.prior}|{state.current}|{visited}|{hops}"


def decode(text: str) -> CallState:
    try:
        version, prior, current, visited, hops = text.split("|")
        if version != VERSION:
            raise StateFormatError(f"call state version {version!r} is not {VERSION!r}")
        path = tuple(_hop(part) for part in hops.split("/")) if hops else ()
        return CallState(
            current=current,
            path=path,
            visited=frozenset(visited.split(",")) if visited else frozenset(),
            prior=int(prior),
        )
    except StateFormatError:
        raise
    except ValueError as error:
        raise StateFormatError(f"malformed call state {text!r}: {error}") from None


def encode_leg(kind: EndpointKind, call: Call, state: CallState) -> str:
    """What the failure route of a relay to a `kind` endpoint needs."""
    return f"{kind.value}\n{int(call.internal)}\n{call.mode or ''}\n{encode(state)}\n{call.caller}"


def decode_leg(text: str, now: float) -> tuple[EndpointKind, Call, CallState]:
    """The endpoint kind, the call (at `now`) and the state `encode_leg` wrote."""
    try:
        kind, internal, mode, state, caller = text.split("\n", 4)
        return EndpointKind(kind), Call(caller, internal == "1", now, mode or None), decode(state)
    except StateFormatError:
        raise
    except ValueError as error:
        raise StateFormatError(f"malformed call leg {text!r}: {error}") from None


def _hop(part: str) -> Hop:
    owner, identity, condition, index, diverted_to = part.split(";")
    return Hop(owner, identity, Condition(condition), int(index), diverted_to)
