"""The decision core, rule by rule of the precedence table in kemi.core.decide."""

from __future__ import annotations

import itertools

import pytest

from divert.kemi.core import (
    DEFAULT_LIMITS,
    PRECEDENCE,
    Call,
    CallState,
    Condition,
    DestKind,
    Endpoint,
    EndpointKind,
    Limits,
    Outcome,
    Relay,
    Reply,
    decide,
    redirect,
)
from tests.builders import rule, table, tables

A, B, C, D = "+390200000001", "+390200000002", "+390200000003", "+390200000004"
MOBILE = "+393330000001"
EXTERNAL = Call("+441234567890", internal=False, now=1_000.0)
INTERNAL = Call("alice", internal=True, now=1_000.0)
FAILURES = list(PRECEDENCE)


def start(store: dict, called: str = A, call: Call = EXTERNAL, limits: Limits = DEFAULT_LIMITS):
    return decide(call, CallState.begin(called), None, store.get, limits)


def step(
    store: dict, relay, outcome: Outcome, call: Call = EXTERNAL, limits: Limits = DEFAULT_LIMITS
):
    assert isinstance(relay, Relay), f"expected a relay, got {relay}"
    return decide(call, relay.state, outcome, store.get, limits)


# -- arrival -----------------------------------------------------------------


def test_arrival_without_rules_rings_the_target_itself():
    store = tables(table(A))
    relay = start(store)
    assert isinstance(relay, Relay)
    assert relay.target == A
    assert relay.endpoint == Endpoint(EndpointKind.TRUNK, f"trunk-of-{A}")
    assert relay.diversions == ()
    assert relay.via is None


def test_unknown_called_number_is_404():
    assert start({}) == Reply(404, "Not Found")


def test_always_forwards_at_once_with_one_unconditional_diversion():
    store = tables(table(A, rule("always", MOBILE)))
    relay = start(store)
    assert isinstance(relay, Relay)
    assert relay.target == MOBILE
    assert relay.endpoint == Endpoint(EndpointKind.EXTERNAL, MOBILE)
    assert [(d.diverted_from, d.condition, d.counter) for d in relay.diversions] == [
        (A, Condition.ALWAYS, 1)
    ]
    assert relay.via is not None and relay.via.condition is Condition.ALWAYS


@pytest.mark.parametrize("condition", [c for c in Condition if c is not Condition.ALWAYS])
def test_arrival_ignores_conditional_rules(condition):
    store = tables(table(A, rule(condition, MOBILE)))
    relay = start(store)
    assert isinstance(relay, Relay) and relay.target == A


def test_always_chains_through_owned_numbers_in_one_step():
    store = tables(table(A, rule("always", B)), table(B, rule("always", C)), table(C))
    relay = start(store)
    assert isinstance(relay, Relay)
    assert relay.target == C
    assert [(d.diverted_from, d.counter) for d in relay.diversions] == [(A, 1), (B, 2)]


# -- failures ----------------------------------------------------------------


@pytest.mark.parametrize("outcome", FAILURES)
def test_each_failure_takes_the_rule_of_its_condition(outcome):
    condition = PRECEDENCE[outcome][0]
    store = tables(table(A, rule(condition, MOBILE)))
    relay = step(store, start(store), outcome)
    assert isinstance(relay, Relay)
    assert relay.target == MOBILE
    assert relay.diversions[0].condition is condition


@pytest.mark.parametrize("outcome", FAILURES)
def test_each_failure_without_its_rule_gives_its_reply(outcome):
    condition, reply = PRECEDENCE[outcome]
    others = [rule(c, MOBILE) for c in Condition if c not in (condition, Condition.ALWAYS)]
    store = tables(table(A, *others))
    assert step(store, start(store), outcome) == reply


def test_failure_replies_are_the_documented_ones():
    assert {o: r.code for o, (_, r) in PRECEDENCE.items()} == {
        Outcome.BUSY: 486,
        Outcome.NO_ANSWER: 480,
        Outcome.NOT_REGISTERED: 480,
        Outcome.TRUNK_DOWN: 503,
    }


def test_trunk_down_goes_to_the_emergency_number():
    emergency = rule("trunk-down", MOBILE, origin="trunk pbx emergency")
    store = tables(table(A, emergency))
    relay = step(store, start(store), Outcome.TRUNK_DOWN)
    assert isinstance(relay, Relay)
    assert relay.target == MOBILE and relay.via == emergency


def test_numbers_own_trunk_down_forward_comes_before_the_trunk_emergency():
    own = rule("trunk-down", B)
    emergency = rule("trunk-down", MOBILE, origin="trunk pbx emergency")
    store = tables(table(A, own, emergency), table(B))
    relay = step(store, start(store), Outcome.TRUNK_DOWN)
    assert isinstance(relay, Relay) and relay.target == B


# -- caller scope ------------------------------------------------------------


@pytest.mark.parametrize(
    ("callers", "call", "forwarded"),
    [
        ("any", EXTERNAL, True),
        ("any", INTERNAL, True),
        ("external", EXTERNAL, True),
        ("external", INTERNAL, False),
        ("internal", INTERNAL, True),
        ("internal", EXTERNAL, False),
    ],
)
def test_scope_decides_who_is_forwarded(callers, call, forwarded):
    store = tables(table(A, rule("always", MOBILE, callers=callers)))
    relay = start(store, call=call)
    assert isinstance(relay, Relay)
    assert (relay.target == MOBILE) is forwarded


@pytest.mark.parametrize(("call", "expected"), [(EXTERNAL, "operator"), (INTERNAL, "internal")])
def test_specific_scope_beats_any_whatever_the_order(call, expected):
    store = tables(
        table(
            A,
            rule("busy", "+390200000009", kind=DestKind.VOICEMAIL),
            rule("busy", B, callers="external"),
            rule("busy", C, callers="internal"),
        ),
        table(B),
        table(C),
    )
    relay = step(store, start(store, call=call), Outcome.BUSY, call=call)
    assert isinstance(relay, Relay)
    assert relay.target == {"operator": B, "internal": C}[expected]


def test_operator_return_applies_to_external_callers_only():
    operator = rule("no-answer", B, callers="external", kind=DestKind.OPERATOR)
    store = tables(table(A, operator), table(B))
    external = step(store, start(store), Outcome.NO_ANSWER)
    assert isinstance(external, Relay) and external.target == B
    internal = step(store, start(store, call=INTERNAL), Outcome.NO_ANSWER, call=INTERNAL)
    assert internal == Reply(480, "No Answer")


# -- ring timer --------------------------------------------------------------


def test_ring_timer_comes_from_the_no_answer_rule():
    store = tables(table(A, rule("no-answer", MOBILE, timeout=12), ring_timeout=60))
    relay = start(store)
    assert isinstance(relay, Relay) and relay.ring_timeout == 12


def test_ring_timer_defaults_to_the_table_then_the_server():
    assert start(tables(table(A, ring_timeout=45))).ring_timeout == 45
    assert start(tables(table(A))).ring_timeout is None
    assert start(tables(table(A, rule("no-answer", MOBILE), ring_timeout=30))).ring_timeout == 30


def test_ring_timer_ignores_no_answer_rules_of_the_other_scope():
    store = tables(table(A, rule("no-answer", MOBILE, callers="internal", timeout=5)))
    assert start(store).ring_timeout is None
    assert start(store, call=INTERNAL).ring_timeout == 5


def test_ring_timer_ignores_a_no_answer_rule_that_could_not_be_followed():
    store = tables(table(A, rule("busy", B)), table(B, rule("no-answer", A, timeout=5)))
    relay = step(store, start(store), Outcome.BUSY)
    assert isinstance(relay, Relay) and relay.target == B and relay.ring_timeout is None


# -- chains ------------------------------------------------------------------


def test_chain_of_three_busy_then_no_answer_then_voicemail():
    voicemail = "vm:+390200000002"
    store = tables(
        table(A, rule("busy", B)),
        table(B, rule("no-answer", voicemail, kind=DestKind.VOICEMAIL, timeout=20)),
        table(voicemail, endpoint=Endpoint(EndpointKind.VOICEMAIL, "sip:b@vm")),
    )
    first = start(store)
    second = step(store, first, Outcome.BUSY)
    assert isinstance(second, Relay) and second.target == B and second.ring_timeout == 20
    third = step(store, second, Outcome.NO_ANSWER)
    assert isinstance(third, Relay)
    assert third.endpoint == Endpoint(EndpointKind.VOICEMAIL, "sip:b@vm")
    assert [(d.diverted_from, d.condition, d.counter) for d in third.diversions] == [
        (A, Condition.BUSY, 1),
        (B, Condition.NO_ANSWER, 2),
    ]
    assert step(store, third, Outcome.BUSY) == Reply(486, "Busy Here")


def test_failed_forward_falls_back_to_the_owners_next_alternative():
    store = tables(table(A, rule("busy", MOBILE), rule("busy", B)), table(B))
    mobile = step(store, start(store), Outcome.BUSY)
    alternative = step(store, mobile, Outcome.NO_ANSWER)
    assert isinstance(alternative, Relay)
    assert alternative.target == B
    assert [(d.diverted_from, d.counter) for d in alternative.diversions] == [(A, 1)]
    assert alternative.state.visited == {A, MOBILE, B}


def test_targets_own_rule_comes_before_the_owners_alternative():
    store = tables(
        table(A, rule("busy", B), rule("busy", C)), table(B, rule("busy", D)), table(C), table(D)
    )
    relay = step(store, step(store, start(store), Outcome.BUSY), Outcome.BUSY)
    assert isinstance(relay, Relay) and relay.target == D


def test_back_up_climbs_more_than_one_level():
    store = tables(
        table(A, rule("busy", B), rule("busy", D)),
        table(B, rule("no-answer", C)),
        table(C),
        table(D),
    )
    at_c = step(store, step(store, start(store), Outcome.BUSY), Outcome.NO_ANSWER)
    assert isinstance(at_c, Relay) and at_c.target == C
    relay = step(store, at_c, Outcome.BUSY)
    assert isinstance(relay, Relay) and relay.target == D
    assert [d.diverted_from for d in relay.diversions] == [A]


def test_back_up_survives_an_owner_removed_from_the_store_mid_call():
    store = tables(table(A, rule("busy", B)), table(B, rule("busy", MOBILE)))
    at_mobile = step(store, step(store, start(store), Outcome.BUSY), Outcome.BUSY)
    del store[A]
    assert step(store, at_mobile, Outcome.BUSY) == Reply(486, "Busy Here")


# -- bound and history ---------------------------------------------------------


def test_diversion_bound_stops_an_unconditional_chain():
    keys = [f"+3902000001{i:02d}" for i in range(8)]
    store = tables(*[table(k, rule("always", n)) for k, n in itertools.pairwise(keys)])
    assert start(store, keys[0], limits=Limits(max_diversions=3)) == Reply(
        480, "Too Many Diversions"
    )
    store[keys[3]] = table(keys[3])
    relay = start(store, keys[0], limits=Limits(max_diversions=3))
    assert isinstance(relay, Relay) and relay.target == keys[3] and len(relay.diversions) == 3


def test_bound_counts_the_diversions_the_call_came_with():
    store = tables(table(A, rule("always", MOBILE)))
    state = CallState.begin(A, prior_diversions=5)
    assert decide(EXTERNAL, state, None, store.get) == Reply(480, "Too Many Diversions")
    relay = decide(EXTERNAL, CallState.begin(A, prior_diversions=2), None, store.get)
    assert isinstance(relay, Relay) and relay.diversions[0].counter == 3


def test_bound_after_a_failure_gives_the_outcomes_reply():
    store = tables(table(A, rule("busy", MOBILE)))
    first = start(store, limits=Limits(max_diversions=0))
    assert step(store, first, Outcome.BUSY, limits=Limits(max_diversions=0)) == Reply(
        486, "Busy Here"
    )


def test_zero_bound_means_no_forwarding_at_all():
    store = tables(table(A, rule("always", MOBILE)))
    assert start(store, limits=Limits(max_diversions=0)) == Reply(480, "Too Many Diversions")


def test_unconditional_loop_is_refused_with_482():
    store = tables(table(A, rule("always", B)), table(B, rule("always", A)))
    assert start(store) == Reply(482, "Loop Detected")


def test_forward_back_to_a_number_already_tried_is_not_followed():
    store = tables(table(A, rule("busy", B)), table(B, rule("busy", A)))
    at_b = step(store, start(store), Outcome.BUSY)
    assert isinstance(at_b, Relay) and at_b.target == B
    assert step(store, at_b, Outcome.BUSY) == Reply(486, "Busy Here")


def test_history_skips_to_the_next_usable_rule():
    store = tables(table(A, rule("busy", B)), table(B, rule("busy", A), rule("busy", C)), table(C))
    relay = step(store, step(store, start(store), Outcome.BUSY), Outcome.BUSY)
    assert isinstance(relay, Relay) and relay.target == C


# -- reject, expiry, modes -----------------------------------------------------------


def test_reject_destination_gives_its_code():
    store = tables(table(A, rule("always", code=603)))
    assert start(store) == Reply(603, "Decline")
    store = tables(table(A, rule("busy", code=486)))
    assert step(store, start(store), Outcome.BUSY) == Reply(486, "Busy Here")
    store = tables(table(A, rule("always", code=499)))
    assert start(store) == Reply(499, "Rejected")


def test_reject_is_not_a_diversion_so_the_bound_does_not_stop_it():
    store = tables(table(A, rule("always", code=603)))
    assert start(store, limits=Limits(max_diversions=0)) == Reply(603, "Decline")


def test_expired_rule_no_longer_applies():
    store = tables(table(A, rule("always", MOBILE, expires_at=1_000.0)))
    assert start(store, call=Call("x", False, now=999.0)).target == MOBILE
    assert start(store, call=Call("x", False, now=1_000.0)).target == A


def test_rule_with_modes_applies_only_in_those_modes():
    store = tables(table(A, rule("always", MOBILE, modes=("night", "holiday"))))
    assert start(store, call=Call("x", False, 0.0, mode="night")).target == MOBILE
    assert start(store, call=Call("x", False, 0.0, mode="day")).target == A
    assert start(store, call=Call("x", False, 0.0, mode=None)).target == A


def test_external_target_failing_without_a_path_gives_the_outcome_reply():
    relay = decide(EXTERNAL, CallState.begin(MOBILE), Outcome.TRUNK_DOWN, {}.get)
    assert relay == Reply(503, "Service Unavailable")


# -- not present (seed 004) ------------------------------------------------------


def test_an_away_subscriber_takes_its_not_present_forward_before_ringing():
    store = tables(table(A, rule(Condition.NOT_PRESENT, MOBILE), away=True))
    relay = start(store)
    assert isinstance(relay, Relay)
    assert relay.target == MOBILE
    assert [d.condition for d in relay.diversions] == [Condition.NOT_PRESENT]


def test_a_present_subscriber_rings_whatever_its_not_present_forwards():
    store = tables(table(A, rule(Condition.NOT_PRESENT, MOBILE)))
    relay = start(store)
    assert isinstance(relay, Relay) and relay.target == A


def test_an_away_subscriber_without_not_present_forwards_rings_as_usual():
    store = tables(table(A, rule(Condition.BUSY, MOBILE), away=True))
    relay = start(store)
    assert isinstance(relay, Relay) and relay.target == A


def test_always_comes_before_not_present():
    store = tables(
        table(A, rule(Condition.NOT_PRESENT, MOBILE), rule(Condition.ALWAYS, B), away=True),
        table(B),
    )
    relay = start(store)
    assert isinstance(relay, Relay) and relay.target == B


def test_a_failed_not_present_target_backs_up_to_the_next_not_present_rule():
    store = tables(
        table(A, rule(Condition.NOT_PRESENT, B), rule(Condition.NOT_PRESENT, C), away=True),
        table(B),
        table(C),
    )
    relay = step(store, start(store), Outcome.BUSY)
    assert isinstance(relay, Relay) and relay.target == C


# -- redirects: the phone's own forward (seed 004's "from the phone") -------------------


def allow_all(number: str) -> str | None:
    return None


def redirected(store: dict, relay, targets: tuple[str, ...], refusal=allow_all, limits=None):
    assert isinstance(relay, Relay)
    return redirect(EXTERNAL, relay.state, targets, store.get, refusal, limits or DEFAULT_LIMITS)


def test_a_redirect_is_followed_to_its_first_contact_and_announced():
    store = tables(table(A, rule(Condition.BUSY, B)), table(B))
    relay = redirected(store, start(store), (MOBILE, C))
    assert isinstance(relay, Relay)
    assert relay.target == MOBILE and relay.endpoint.kind is EndpointKind.EXTERNAL
    (entry,) = relay.diversions
    assert (entry.diverted_from, entry.condition, entry.counter) == (A, Condition.REDIRECT, 1)


def test_a_redirect_to_a_refused_number_ends_the_call_with_the_reason():
    store = tables(table(A))

    def refusal(number: str) -> str | None:
        return "it is a premium-rate number" if number.startswith("+39899") else None

    reply = redirected(store, start(store), ("+39899123456",), refusal)
    assert reply == Reply(
        403,
        "Redirect Refused: forwarding to +39899123456 is not allowed: it is a premium-rate number",
    )
    # a refused Contact is skipped when a later one may be followed
    relay = redirected(store, start(store), ("+39899123456", MOBILE), refusal)
    assert isinstance(relay, Relay) and relay.target == MOBILE


def test_divert_numbers_need_no_policy_check_and_take_their_own_rules():
    store = tables(table(A), table(B, rule(Condition.ALWAYS, C)), table(C))

    def refuse_all(number: str) -> str | None:
        return "no"

    relay = redirected(store, start(store), (B,), refuse_all)
    assert isinstance(relay, Relay) and relay.target == C
    assert [d.condition for d in relay.diversions] == [Condition.REDIRECT, Condition.ALWAYS]


def test_a_redirect_target_that_is_busy_takes_the_owners_busy_forward():
    store = tables(table(A, rule(Condition.BUSY, C)), table(B), table(C))
    to_b = redirected(store, start(store), (B,))
    relay = step(store, to_b, Outcome.BUSY)
    assert isinstance(relay, Relay) and relay.target == C


def test_a_redirect_back_into_the_history_is_a_loop():
    store = tables(table(A), table(B))
    to_b = redirected(store, start(store), (B,))
    assert redirected(store, to_b, (A,)) == Reply(482, "Loop Detected")


def test_redirects_stop_at_the_diversion_bound():
    numbers = [f"+3902000001{i:02d}" for i in range(10)]
    store = tables(*(table(n) for n in numbers))
    limits = Limits(max_diversions=3)
    relay = decide(EXTERNAL, CallState.begin(numbers[0]), None, store.get, limits)
    for number in numbers[1:4]:
        relay = redirected(store, relay, (number,), limits=limits)
        assert isinstance(relay, Relay)
    assert redirected(store, relay, (numbers[5],), limits=limits) == Reply(
        480, "Too Many Diversions"
    )


def test_a_redirect_without_contacts_ends_the_call():
    store = tables(table(A))
    assert redirected(store, start(store), ()) == Reply(480, "Redirect Without A Usable Contact")


def test_an_unreachable_redirect_target_does_not_take_the_owners_emergency_forward():
    store = tables(table(A, rule(Condition.TRUNK_DOWN, C), rule(Condition.BUSY, D)), table(C))
    to_mobile = redirected(store, start(store), (MOBILE,))
    assert step(store, to_mobile, Outcome.TRUNK_DOWN) == Reply(503, "Service Unavailable")
    assert step(store, to_mobile, Outcome.NOT_REGISTERED) == Reply(480, "Temporarily Unavailable")
    relay = step(store, to_mobile, Outcome.BUSY)
    assert isinstance(relay, Relay) and relay.target == D
