"""The forwarding decision: given a call and what happened to it, what next.

Theory of operation
-------------------
A call walks a chain of *targets* (keys, see `model`).  Arriving at a target,
its unconditional forwards are considered; if none takes the call, the target
is rung.  The KEMI adapter reports how ringing ended (an `Outcome`) and calls
`decide()` again with the state it got back; the core then looks for a rule
of the matching condition.  Each call of `decide()` is one step of
Kamailio's failure-route loop, so all state lives in `CallState`, which the
adapter carries on the transaction.

Precedence (the data below is this table; tests walk every row):

=====================  ==================  ==============================
event at the target    rules considered    when no rule applies
=====================  ==================  ==============================
arrival (new call or   ``always``, then    ring the target's endpoint,
forwarded to it)       ``not-present``     ring timer from its first
                       while the key's     usable ``no-answer`` rule
                       subscriber is away
redirect (3xx from     the redirect's      403 Redirect Refused (the
the phone or PBX:      Contacts, in q      destination policy), 482 (all
seed 004's "from the   order: the first    in the history), 480 (bound),
phone")                usable one          else 480 Redirect Without A
                                           Usable Contact
busy (486/600/603)     ``busy``            back up, else 486 Busy Here
no answer (ring timer) ``no-answer``       back up, else 480 No Answer
not registered /       ``not-registered``  back up, else 480 Temporarily
unreachable                                Unavailable
trunk down (probing,   ``trunk-down``,     back up, else 503 Service
no reply, 5xx)         then the trunk's    Unavailable
                       emergency number
=====================  ==================  ==============================

Within one condition, rules for the caller's own scope (``internal`` or
``external``) come before rules for ``any`` callers; ties keep the portal's
order.  A rule *applies* when it is not expired and its time modes include
the mode in force.  An applicable rule is *usable* unless following it would
exceed the diversion bound or send the call to a key already in its history;
the first usable rule wins.  A ``reject`` rule ends the call with its code.

*Back up*: when the target reached by a forward fails and has no rule of its
own for the outcome, the forward's owner tries its next rule of the same
condition (its ordered alternatives), and so on up the chain.  A target the
phone redirected to that is busy or does not answer counts as the phone's
own: its owner's rules for that outcome apply (a 302 to a busy number takes
the owner's busy forward); one that is unreachable (trunk down, not
registered) does not, since the owner's phone has just answered.

A redirect is the phone's own forward: it needs no rule, and it wins over
every rule of the owner but the ``always`` and ``not-present`` ones already
passed on arrival.  Its Contacts are checked like forwards (the history,
the bound) and, because the phone chose them, against the destination
policy too (`refusal`), since nobody checked them when they were saved.

If ``always`` rules applied on arrival but none was usable, the call ends
with 482 Loop Detected (history) or 480 Too Many Diversions (bound): that is
a configuration problem worth naming.  After a failure, rules stopped by the
history or the bound end the call with the outcome's own reply (486, 480,
503): colleagues who cover each other when busy are not a misconfiguration,
and the caller learns the real state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from divert.kemi.core.model import (
    Call,
    CallState,
    Condition,
    Decision,
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
)

Lookup = Callable[[str], ForwardTable | None]
"""Returns the compiled table of a key, or None when divert does not own it."""

PRECEDENCE: dict[Outcome, tuple[Condition, Reply]] = {
    Outcome.BUSY: (Condition.BUSY, Reply(486, "Busy Here")),
    Outcome.NO_ANSWER: (Condition.NO_ANSWER, Reply(480, "No Answer")),
    Outcome.NOT_REGISTERED: (Condition.NOT_REGISTERED, Reply(480, "Temporarily Unavailable")),
    Outcome.TRUNK_DOWN: (Condition.TRUNK_DOWN, Reply(503, "Service Unavailable")),
}
"""Failure outcome -> (condition whose rules apply, reply when none does)."""

DEFAULT_RING_SECONDS = 120
"""How long a target rings when no usable no-answer forward sets its timer."""

ARRIVAL_CONDITION = Condition.ALWAYS
ARRIVAL_CONDITIONS = (Condition.ALWAYS, Condition.NOT_PRESENT)
REDIRECT_FAILURES = frozenset((Condition.BUSY, Condition.NO_ANSWER))
"""Failures of a redirect's target that the redirecting owner's rules take:
a busy or unanswered target is like the owner being busy or away from the
phone; a target that is unreachable says nothing about the owner, whose
phone or PBX has just answered (no trunk-down emergency forward for it)."""
"""On arrival at a key whose subscriber is away; at others `always` only."""

REASON_PHRASES: dict[int, str] = {
    403: "Forbidden",
    404: "Not Found",
    410: "Gone",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    600: "Busy Everywhere",
    603: "Decline",
}


LOOP_REPLY = Reply(482, "Loop Detected")
BOUND_REPLY = Reply(480, "Too Many Diversions")
UNKNOWN_REPLY = Reply(404, "Not Found")


@dataclass(frozen=True, slots=True)
class Limits:
    """Operator-set bounds on forwarding."""

    max_diversions: int = 5
    loop_reply: Reply = LOOP_REPLY
    bound_reply: Reply = BOUND_REPLY
    unknown_reply: Reply = UNKNOWN_REPLY


DEFAULT_LIMITS = Limits()

_LOOP = "loop"
_BOUND = "bound"
NO_CONTACT_REPLY = Reply(480, "Redirect Without A Usable Contact")


def decide(
    call: Call,
    state: CallState,
    outcome: Outcome | None,
    lookup: Lookup,
    limits: Limits = DEFAULT_LIMITS,
) -> Decision:
    """Next step for the call: a `Relay` to ring, or a final `Reply`.

    `outcome` is None for a new call to `state.current`, otherwise how ringing
    `state.current` ended.
    """
    if outcome is None:
        table = lookup(state.current)
        if table is None:
            return limits.unknown_reply
        return _arrive(table, state.current, call, state, lookup, limits, None)
    return _after_failure(call, state, outcome, lookup, limits)


def redirect(
    call: Call,
    state: CallState,
    targets: tuple[str, ...],
    lookup: Lookup,
    refusal: Callable[[str], str | None],
    limits: Limits = DEFAULT_LIMITS,
) -> Decision:
    """The endpoint of `state.current` answered 3xx naming `targets` (keys, in
    q order): follow the first that may be followed.  `refusal(number)` says
    why the destination policy refuses a number divert does not own (None:
    allowed)."""
    table = lookup(state.current)
    identity = table.identity if table is not None else state.current
    refused: Reply | None = None
    looped = False
    for target in targets:
        if state.prior + len(state.path) >= limits.max_diversions:
            return limits.bound_reply
        if target in state.visited:
            looped = True
            continue
        found = lookup(target)
        if found is None:
            why = refusal(target)
            if why is not None:
                refused = refused or Reply(
                    403, f"Redirect Refused: forwarding to {target} is not allowed: {why}"
                )
                continue
        hop = Hop(state.current, identity, Condition.REDIRECT, 0, target)
        onward = CallState(target, (*state.path, hop), state.visited | {target}, state.prior)
        return _arrive(found, target, call, onward, lookup, limits, None)
    if refused is not None:
        return refused
    return limits.loop_reply if looped else NO_CONTACT_REPLY


def reply_for_code(code: int) -> Reply:
    """The final reply of a `reject` destination."""
    return Reply(code, REASON_PHRASES.get(code, "Rejected"))


def _applies(rule: Rule, call: Call) -> bool:
    if rule.expires_at is not None and call.now >= rule.expires_at:
        return False
    return not rule.modes or call.mode in rule.modes


def _arrive(
    table: ForwardTable | None,
    key: str,
    call: Call,
    state: CallState,
    lookup: Lookup,
    limits: Limits,
    via: Rule | None,
) -> Decision:
    """The call reaches `key` (sent by rule `via`): follow its unconditional
    forward, or ring it."""
    if table is None:
        return _relay(key, Endpoint(EndpointKind.EXTERNAL, key), None, state, via)
    for condition in ARRIVAL_CONDITIONS if table.away else (ARRIVAL_CONDITION,):
        decision, blocked = _follow(table, condition, 0, call, state, lookup, limits)
        if decision is not None:
            return decision
        if blocked is not None:
            return _blocked_reply(blocked, limits)
    return _relay(key, table.endpoint, _ring_timeout(table, call, state, limits), state, via)


def _after_failure(
    call: Call, state: CallState, outcome: Outcome, lookup: Lookup, limits: Limits
) -> Decision:
    """Ringing `state.current` ended in `outcome`: its own rules, then back up."""
    condition, no_rule_reply = PRECEDENCE[outcome]
    table = lookup(state.current)
    if table is not None:
        decision, _ = _follow(table, condition, 0, call, state, lookup, limits)
        if decision is not None:
            return decision
    path = state.path
    while path:
        hop = path[-1]
        path = path[:-1]
        owner = lookup(hop.owner)
        if owner is None:
            continue
        back = CallState(hop.owner, path, state.visited, state.prior)
        if hop.condition is Condition.REDIRECT:  # the phone's own forward failed
            if condition not in REDIRECT_FAILURES:
                continue  # the phone answered: its trunk is neither down nor unregistered
            decision, _ = _follow(owner, condition, 0, call, back, lookup, limits)
        else:
            decision, _ = _follow(
                owner, hop.condition, hop.rule_index + 1, call, back, lookup, limits
            )
        if decision is not None:
            return decision
    return no_rule_reply


def _follow(
    table: ForwardTable,
    condition: Condition,
    start: int,
    call: Call,
    state: CallState,
    lookup: Lookup,
    limits: Limits,
) -> tuple[Decision | None, str | None]:
    """The first usable rule of `table` for `condition` from index `start`.

    Returns (decision, None) when a rule took the call, (None, reason) when
    rules applied but none was usable, and (None, None) when none applied.
    """
    rules = table.candidates(condition, call.internal)
    blocked: str | None = None
    for index in range(start, len(rules)):
        rule = rules[index]
        if not _applies(rule, call):
            continue
        destination = rule.destination
        if destination.kind is DestKind.REJECT:
            return reply_for_code(destination.reply_code), None
        if state.prior + len(state.path) >= limits.max_diversions:
            return None, _BOUND
        if destination.key in state.visited:
            blocked = _LOOP
            continue
        hop = Hop(table.key, table.identity, condition, index, destination.key)
        onward = CallState(
            destination.key,
            (*state.path, hop),
            state.visited | {destination.key},
            state.prior,
        )
        target = lookup(destination.key)
        return _arrive(target, destination.key, call, onward, lookup, limits, rule), None
    return None, blocked


def _ring_timeout(table: ForwardTable, call: Call, state: CallState, limits: Limits) -> int | None:
    """Ring time of the target: its first usable no-answer rule's, else default."""
    if state.prior + len(state.path) < limits.max_diversions:
        for rule in table.candidates(Condition.NO_ANSWER, call.internal):
            if _applies(rule, call) and rule.destination.key not in state.visited:
                return rule.ring_timeout if rule.ring_timeout is not None else table.ring_timeout
    return table.ring_timeout


def _relay(
    key: str, endpoint: Endpoint, ring_timeout: int | None, state: CallState, via: Rule | None
) -> Relay:
    entries = tuple(
        DiversionEntry(hop.identity, hop.condition, state.prior + number)
        for number, hop in enumerate(state.path, start=1)
    )
    return Relay(key, endpoint, ring_timeout, entries, state, via)


def _blocked_reply(reason: str, limits: Limits) -> Reply:
    return limits.loop_reply if reason == _LOOP else limits.bound_reply
