"""CallState to and from one short string, to carry it on the transaction.

Kamailio keeps per-transaction values as AVPs of string type; the failure
route of each step reads the state back.  The format is plain text so that it
shows readably in logs:

    v1|<prior>|<current>|<visited,...>|<owner;identity;condition;index;to>/...

Keys and identities never contain ``| , ; /`` (the sync worker only emits
E.164 numbers, ``sub:<user>@<domain>`` and ``vm:<mailbox>`` keys whose parts
are checked against that alphabet).
"""

from __future__ import annotations

from kemi.core.model import CallState, Condition, Hop

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


def _hop(part: str) -> Hop:
    owner, identity, condition, index, diverted_to = part.split(";")
    return Hop(owner, identity, Condition(condition), int(index), diverted_to)
