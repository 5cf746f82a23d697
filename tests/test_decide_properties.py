"""Properties of whole call walks over random forward tables (hypothesis).

Whatever the tables and whatever happens to each branch: no relay carries
more diversions than the bound, no call rings the same key twice, the
diversion counters count up from the ones the call came with, and every
walk ends.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from divert.kemi.core import (
    Call,
    CallState,
    Condition,
    DestKind,
    Limits,
    Outcome,
    Relay,
    Reply,
    decide,
)
from divert.kemi.core.model import ForwardTable
from tests.builders import rule, table

OWNED = [f"+39020000{i:04d}" for i in range(6)]
EXTERNALS = [f"+44200000{i:04d}" for i in range(3)]


@st.composite
def forward_tables(draw: st.DrawFn) -> dict[str, ForwardTable]:
    store = {}
    for key in OWNED:
        rules = []
        for _ in range(draw(st.integers(0, 5))):
            condition = draw(st.sampled_from(list(Condition)))
            callers = draw(st.sampled_from(["any", "internal", "external"]))
            if draw(st.integers(0, 9)) == 0:
                rules.append(
                    rule(condition, code=draw(st.sampled_from([486, 603])), callers=callers)
                )
            else:
                to = draw(st.sampled_from(OWNED + EXTERNALS))
                rules.append(rule(condition, to, callers=callers, kind=DestKind.NUMBER))
        store[key] = table(key, *rules)
    return store


@settings(max_examples=400, deadline=None)
@given(
    store=forward_tables(),
    called=st.sampled_from(OWNED),
    internal=st.booleans(),
    outcomes=st.lists(st.sampled_from(list(Outcome)), max_size=12),
    bound=st.integers(0, 6),
    prior=st.integers(0, 3),
)
def test_walks_respect_bound_and_history(store, called, internal, outcomes, bound, prior):
    limits = Limits(max_diversions=bound)
    call = Call("caller", internal, now=0.0)
    decision = decide(call, CallState.begin(called, prior), None, store.get, limits)
    rung: list[str] = []
    for outcome in [*outcomes, None]:
        if isinstance(decision, Reply):
            break
        assert isinstance(decision, Relay)
        assert decision.target not in rung, f"{decision.target} rung twice: {rung}"
        rung.append(decision.target)
        assert len(decision.diversions) + prior <= max(bound, prior)
        assert [d.counter for d in decision.diversions] == list(
            range(prior + 1, prior + 1 + len(decision.diversions))
        )
        assert decision.state.visited >= set(rung)
        if outcome is None:
            break
        decision = decide(call, decision.state, outcome, store.get, limits)


@settings(max_examples=200, deadline=None)
@given(store=forward_tables(), called=st.sampled_from(OWNED), internal=st.booleans())
def test_state_round_trips_through_the_transaction_encoding(store, called, internal):
    from divert.kemi.core.state_codec import decode, encode

    call = Call("caller", internal, now=0.0)
    decision = decide(call, CallState.begin(called), None, store.get)
    for outcome in Outcome:
        if not isinstance(decision, Relay):
            break
        assert decode(encode(decision.state)) == decision.state
        decision = decide(call, decision.state, outcome, store.get)


@settings(max_examples=300, deadline=None)
@given(store=forward_tables(), internal=st.booleans())
def test_candidates_put_the_callers_own_scope_first_then_any_in_portal_order(store, internal):
    own = "internal" if internal else "external"
    for forwards in store.values():
        for condition in Condition:
            of_condition = [r for r in forwards.rules if r.condition is condition]
            expected = [r for r in of_condition if r.callers == own] + [
                r for r in of_condition if r.callers == "any"
            ]
            assert list(forwards.candidates(condition, internal)) == expected
