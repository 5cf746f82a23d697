"""Native plans: the core's decisions for a number, compiled ahead of the call.

Entering Python costs a call more than the whole SIP work of a hand-written
kamailio.cfg (issue 16's floor experiment).  So for the commonest calls,
the core decides before the call comes: for a number called by a carrier
or a customer trunk, with no diversions announced, `compile_plan` runs
`decide()` for its arrival and for its target's busy and no-answer outcomes,
and writes each step as one line that kamailio.cfg carries out with a few
native functions (route[PLAN], failure_route[ksr_failure_forward]).  The
decisions stay the core's; the configuration only executes them.

A number gets no plan (its calls take the Python routes, as before) when
its decision could depend on anything but the store: rules with time modes
or an expiry in any table the decision read, a tenant with a schedule or a
mode override, headers other than Diversion, a subscriber or voicemail
endpoint, a 503 (whose log line is Python's).  Each step line is::

    R~<code>~<reason>                  a final reply
    <T|E>~<set>~<alg>~<Request-URI>~<ring ms>~<forward stat>~<emergency 0|1>~<headers>~<leg>

T a customer trunk, E the carriers (dispatcher set and algorithm), the
counter of the forward taken ('' for none), the headers each branch adds
(Diversion, CRLF-terminated; '' for none) and the call state a failure
route needs (`state_codec.encode_leg` without its caller, which the
configuration appends).  Fields never hold ``~`` (checked).

A number's arrival line, when it relays, ends in six more fields, the
code and reason of its busy step, of its no-answer step, then of its
down step (its trunk, or every carrier, unreachable: no destination up,
or a branch that timed out unanswered or failed 5xx): a reply there (most
numbers end a busy or unanswered forward with 486 or 480, and a down
target with 503), ``+`` when the step is a relay kept in the entry
``<number>>b`` (``>n``, ``>d``), '' when the step is Python's.  One entry
a number, most of the time: the table's shared memory is what a plan
costs.  The down step matters under overload most: a node behind on its
work sees branches time out unanswered, and a plan that sent them to
Python would spend more per call exactly when it has least to spend.

A 503 is Python's (its log line) except as the down step, whose log line
kamailio.cfg writes itself (route[SAID_503]).

`dependencies` names, as the store's changes log does, every record the
plan read but the number's own table and tenant: a change to any of them
is a change to the plan (`divert.kemi.plan_sync`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from divert.kemi import metrics
from divert.kemi.core.decide import DEFAULT_RING_SECONDS, Limits, decide
from divert.kemi.core.model import (
    Call,
    CallState,
    Decision,
    DiversionStyle,
    EndpointKind,
    ForwardTable,
    Outcome,
    Relay,
    Reply,
)
from divert.kemi.core.state_codec import encode_leg
from divert.kemi.signalling import (
    ALG_PRIORITY,
    ALG_ROUND_ROBIN,
    CARRIER_SET,
    diversion_headers,
    trunk_set,
)
from divert.kemi.store.format import NS_TABLE, NS_TRUNK, TenantRecord, TrunkRecord

SEPARATOR = "~"
REPLY = "R"
IN_ENTRY = "+"  # a failure step too long for the arrival's line: in <number>>b or >n
BUSY_SUFFIX = ">b"  # the htable key of a number's busy step: <number>>b
NO_ANSWER_SUFFIX = ">n"
DOWN_SUFFIX = ">d"
FAILURE_STEPS = (
    (Outcome.BUSY, BUSY_SUFFIX),
    (Outcome.NO_ANSWER, NO_ANSWER_SUFFIX),
    (Outcome.TRUNK_DOWN, DOWN_SUFFIX),
)
_NOBODY = Call("", False, 0.0, None)  # decide() never reads the caller; `now`: no expiring rule


class NotPlannable(Exception):
    """The decision depends on something a plan cannot hold."""


@dataclass(frozen=True, slots=True)
class PlanConfig:
    """The node's settings a decision depends on (AdapterConfig's)."""

    domain: str
    max_diversions: int
    carrier_style: str


@dataclass(slots=True)
class Compiled:
    """A number's plan: htable key -> step line (empty when the number has
    none), and the records it read besides its own table and tenant."""

    steps: dict[str, str] = field(default_factory=dict)
    dependencies: set[str] = field(default_factory=set)


class Source:
    """What a plan reads: the store, through the caller's lookups."""

    def __init__(
        self,
        table: Callable[[str], ForwardTable | None],
        tenant: Callable[[str], TenantRecord | None],
        trunk: Callable[[int], TrunkRecord | None],
    ) -> None:
        self.table, self.tenant, self.trunk = table, tenant, trunk


def compile_plan(key: str, source: Source, config: PlanConfig) -> Compiled:
    """The native steps of calls to `key` from carriers and customer trunks."""
    compiled = Compiled()
    try:
        compiled.steps = _steps(key, source, config, compiled.dependencies)
    except NotPlannable:
        compiled.steps = {}
    return compiled


def _steps(key: str, source: Source, config: PlanConfig, read: set[str]) -> dict[str, str]:
    def lookup(wanted: str) -> ForwardTable | None:
        if wanted != key:
            read.add(NS_TABLE + wanted)
        table = source.table(wanted)
        if table is not None and any(r.modes or r.expires_at is not None for r in table.rules):
            raise NotPlannable  # applies at some times only
        return table

    own = lookup(key)
    if own is None:
        return {}  # not a number of divert's: Python answers it
    tenant = source.tenant(own.tenant)
    if tenant is not None and (tenant.schedule or tenant.override is not None):
        raise NotPlannable  # the call's time mode changes with the clock
    limits = Limits(max_diversions=config.max_diversions)
    arrival = decide(_NOBODY, CallState.begin(key), None, lookup, limits)
    line = _line(arrival, source, config, read)
    if not isinstance(arrival, Relay):
        return {key: line}
    steps: dict[str, str] = {}
    failures: list[str] = []
    for outcome, suffix in FAILURE_STEPS:
        try:
            after = _line(
                decide(_NOBODY, arrival.state, outcome, lookup, limits),
                source,
                config,
                read,
                may_end_503=outcome is Outcome.TRUNK_DOWN,
            )
        except NotPlannable:
            failures += ["", ""]  # that outcome's step is Python's
            continue
        if after.startswith(REPLY + SEPARATOR):  # short: in the arrival's line
            failures += after.split(SEPARATOR)[1:]
        else:
            failures += [IN_ENTRY, ""]
            steps[key + suffix] = after
    steps[key] = SEPARATOR.join((line, *failures))
    return steps


def _line(
    decision: Decision,
    source: Source,
    config: PlanConfig,
    read: set[str],
    may_end_503: bool = False,
) -> str:
    if isinstance(decision, Reply):
        if decision.code == 503 and not may_end_503:
            raise NotPlannable  # the adapter says why calls end 503
        return _joined(REPLY, str(decision.code), decision.reason)
    return _relay_line(decision, source, config, read)


def _relay_line(relay: Relay, source: Source, config: PlanConfig, read: set[str]) -> str:
    kind = relay.endpoint.kind
    if kind is EndpointKind.TRUNK:
        code, dispatcher_set, algorithm = "T", trunk_set(relay.endpoint.ref), ALG_ROUND_ROBIN
    elif kind is EndpointKind.EXTERNAL:
        code, dispatcher_set, algorithm = "E", CARRIER_SET, ALG_PRIORITY
    else:
        raise NotPlannable  # a registration lookup, NAT handling: Python's
    headers = forward_stat = ""
    emergency = "0"
    if relay.diversions:
        style = config.carrier_style
        if kind is EndpointKind.TRUNK:
            read.add(NS_TRUNK + relay.endpoint.ref)
            trunk = source.trunk(int(relay.endpoint.ref))
            if trunk is not None:
                style = trunk.diversion_style
        if style != DiversionStyle.DIVERSION:
            raise NotPlannable  # History-Info names the caller's Request-URI
        headers = "".join(
            f"{name}: {value}\r\n"
            for name, value in diversion_headers(relay, config.domain, style, "")
        )
        forward_stat = metrics.FORWARD_STATS[relay.diversions[-1].condition]
        if relay.via is not None and relay.via.origin.endswith(" emergency"):
            emergency = "1"
    ring_ms = (relay.ring_timeout or DEFAULT_RING_SECONDS) * 1000
    return _joined(
        code,
        str(dispatcher_set),
        str(algorithm),
        f"sip:{relay.target}@{config.domain}",
        str(ring_ms),
        forward_stat,
        emergency,
        headers,
        encode_leg(kind, _NOBODY, relay.state),  # ends in "\n": the caller follows
    )


def _joined(*fields: str) -> str:
    if any(SEPARATOR in part for part in fields):
        raise NotPlannable
    return SEPARATOR.join(fields)
