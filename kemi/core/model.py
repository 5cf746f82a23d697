"""Plain values the decision core consumes and produces.

Everything here is a frozen, slotted dataclass or an enum: the sync worker
builds `ForwardTable` values, the store keeps them, the KEMI adapter hands them
to `decide()` together with a `Call` and a `CallState`, and gets a `Relay` or a
`Reply` back.  Nothing here knows about SIP messages, databases or clocks.

Keys.  Every place a call can be sent to has a *key*: an E.164 number
(``+390212345678``) for DIDs and external numbers, ``sub:<username>@<domain>``
for a subscriber reached by extension, ``vm:<mailbox>`` for a voicemail box.
The call's history is a set of keys, which is what makes loop refusal exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Condition(StrEnum):
    """When a forward applies (the portal's `forwards.condition`), and
    `REDIRECT`: a diversion the called phone or PBX made itself (a 3xx),
    which no forward of the portal has (see `FORWARD_CONDITIONS`)."""

    ALWAYS = "always"
    NOT_PRESENT = "not-present"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    NOT_REGISTERED = "not-registered"
    TRUNK_DOWN = "trunk-down"
    REDIRECT = "redirect"


FORWARD_CONDITIONS = tuple(c for c in Condition if c is not Condition.REDIRECT)
"""The conditions a forward of the portal may have."""


class Outcome(StrEnum):
    """What happened to the last relayed branch, as the adapter saw it."""

    BUSY = "busy"
    NO_ANSWER = "no-answer"
    NOT_REGISTERED = "not-registered"
    TRUNK_DOWN = "trunk-down"


class Scope(StrEnum):
    """Which callers a forward applies to."""

    ANY = "any"
    INTERNAL = "internal"
    EXTERNAL = "external"


class DestKind(StrEnum):
    """What a forward points at, as the portal user chose it."""

    NUMBER = "number"
    EXTENSION = "extension"
    VOICEMAIL = "voicemail"
    OPERATOR = "operator"
    REJECT = "reject"


class DiversionStyle(StrEnum):
    """How a customer trunk wants a call's diversions announced."""

    DIVERSION = "diversion"  # RFC 5806
    HISTORY_INFO = "history-info"  # RFC 7044
    BOTH = "both"


class EndpointKind(StrEnum):
    """Where a relay physically goes."""

    SUBSCRIBER = "subscriber"  # registered contacts of a hosted subscriber
    TRUNK = "trunk"  # a customer PBX trunk (dispatcher set)
    EXTERNAL = "external"  # any number outside divert, via the carrier group
    VOICEMAIL = "voicemail"  # a mailbox on the tenant's voicemail server


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The physical target of a relay.

    `ref` is what the adapter needs to reach it: the subscriber's AoR, the
    trunk's dispatcher set id, the E.164 number, or the voicemail URI.
    """

    kind: EndpointKind
    ref: str


@dataclass(frozen=True, slots=True)
class Destination:
    """A compiled forward destination.

    For number, extension, operator and voicemail destinations `key` is the
    key of the place the call goes next (its table is looked up there; a key
    with no table is an external number).  For `reject`, `reply_code` is the
    SIP code to answer with and `key` is empty.  `label` is what the portal
    user typed, for explanations.
    """

    kind: DestKind
    key: str
    label: str
    reply_code: int = 0


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled forward.

    `ring_timeout` is meaningful for no-answer rules only: how long the owner
    rings before this rule takes the call.  `modes` empty means every time
    mode; `expires_at` is epoch seconds or None.  `origin` names where the rule
    came from (``forward 12``, ``trunk acme-pbx emergency``) for explanations.
    """

    condition: Condition
    callers: Scope
    destination: Destination
    origin: str
    ring_timeout: int | None = None
    modes: frozenset[str] = frozenset()
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class ForwardTable:
    """Everything the core needs about one key: where it rings and its rules.

    `identity` is what Diversion/History-Info name as the diverting party
    (the E.164 number, or the extension for subscriber-only keys).  `rules`
    are ordered by the portal's order within each condition; `decide()` only
    relies on that relative order.  `away`: the subscriber who answers the
    key is not present (its ``not-present`` rules apply on arrival).
    """

    key: str
    tenant: str
    identity: str
    endpoint: Endpoint
    rules: tuple[Rule, ...] = ()
    ring_timeout: int | None = None
    away: bool = False
    by_condition: dict[tuple[Condition, bool], tuple[Rule, ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # Precompute, per condition and caller kind, the rules in precedence
        # order (scope-specific before `any`, then portal order), so that a
        # decision is a short tuple scan.  Conditions without rules are simply
        # absent (see `candidates`).  Every store miss builds a table, so this
        # is one lean pass: most tables hold a single rule.
        own: dict[tuple[Condition, bool], list[Rule]] = {}
        general: dict[tuple[Condition, bool], list[Rule]] = {}
        for rule in self.rules:
            condition, callers = rule.condition, rule.callers
            if callers is Scope.ANY:
                general.setdefault((condition, True), []).append(rule)
                general.setdefault((condition, False), []).append(rule)
            else:
                key = (condition, callers is Scope.INTERNAL)
                own.setdefault(key, []).append(rule)
        plan = {key: tuple(rules) for key, rules in own.items()}
        for key, rules in general.items():
            plan[key] = plan[key] + tuple(rules) if key in plan else tuple(rules)
        object.__setattr__(self, "by_condition", plan)

    def candidates(self, condition: Condition, internal: bool) -> tuple[Rule, ...]:
        """Rules for `condition` that apply to this kind of caller, best first."""
        return self.by_condition.get((condition, internal), ())


@dataclass(frozen=True, slots=True)
class Call:
    """The facts about a call that do not change along its chain.

    `now` is epoch seconds, handed in (the core never reads a clock); `mode`
    is the tenant time mode in force (``day``, ``night``, ...), or None when
    the tenant has no schedule.
    """

    caller: str
    internal: bool
    now: float
    mode: str | None = None


@dataclass(frozen=True, slots=True)
class Hop:
    """One diversion taken: `owner` (announced as `identity`) diverted with
    rule number `rule_index` of its candidates for `condition` (its position in
    `ForwardTable.candidates`).
    """

    owner: str
    identity: str
    condition: Condition
    rule_index: int
    diverted_to: str


@dataclass(frozen=True, slots=True)
class CallState:
    """What has happened to the call so far; carried on the transaction.

    `current` is the key of the target now being rung; `path` the diversions
    that led to it (its Diversion/History-Info entries); `visited` every key
    this call has been sent to, including abandoned branches; `prior` the
    diversions the call already carried when it reached divert.
    """

    current: str
    path: tuple[Hop, ...] = ()
    visited: frozenset[str] = frozenset()
    prior: int = 0

    @classmethod
    def begin(cls, called: str, prior_diversions: int = 0) -> CallState:
        return cls(current=called, visited=frozenset((called,)), prior=prior_diversions)

    @property
    def diversions(self) -> int:
        """Diversions the current branch carries, counting those it came with."""
        return self.prior + len(self.path)


@dataclass(frozen=True, slots=True)
class DiversionEntry:
    """One diversion to announce on the branch (RFC 5806 / RFC 7044).

    `counter` is the ordinal of this diversion, counting the ones the call
    came in with (the Diversion header itself says counter=1 for each).
    """

    diverted_from: str
    condition: Condition
    counter: int


@dataclass(frozen=True, slots=True)
class Relay:
    """Ring `endpoint` for key `target`, for at most `ring_timeout` seconds
    (None: the server default), adding `diversions` to the branch, then come
    back with the outcome and `state`.  `via` is the rule that sent the call
    here (None when ringing the called key itself).
    """

    target: str
    endpoint: Endpoint
    ring_timeout: int | None
    diversions: tuple[DiversionEntry, ...]
    state: CallState
    via: Rule | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """End the call with this final SIP reply."""

    code: int
    reason: str


Decision = Relay | Reply
