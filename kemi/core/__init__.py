"""The decision core: forwarding semantics as pure functions over plain values.

No KSR, no I/O, no clock: see `decide` for the precedence table.
"""

from divert.kemi.core.decide import DEFAULT_LIMITS, PRECEDENCE, Limits, Lookup, decide, redirect
from divert.kemi.core.model import (
    Call,
    CallState,
    Condition,
    Decision,
    Destination,
    DestKind,
    DiversionEntry,
    Endpoint,
    EndpointKind,
    ForwardTable,
    Hop,
    Outcome,
    Relay,
    Reply,
    Rule,
    Scope,
)

__all__ = [
    "DEFAULT_LIMITS",
    "PRECEDENCE",
    "Call",
    "CallState",
    "Condition",
    "Decision",
    "DestKind",
    "Destination",
    "DiversionEntry",
    "Endpoint",
    "EndpointKind",
    "ForwardTable",
    "Hop",
    "Limits",
    "Lookup",
    "Outcome",
    "Relay",
    "Reply",
    "Rule",
    "Scope",
    "decide",
    "redirect",
]
