"""Save-time loop detection over compiled tables (pure)."""

from divert.kemi.core import DestKind
from divert.loops import find_loop
from tests.builders import rule, table, tables

A, B, C = "+390200000001", "+390200000002", "+390200000003"


def test_two_number_loop_is_found_from_either_end():
    store = tables(table(A, rule("always", B)), table(B, rule("always", A)))
    assert find_loop(store.get, [A], now=0.0) == ((A, B, A), False)
    assert find_loop(store.get, [B], now=0.0) == ((B, A, B), False)


def test_three_number_loop_through_an_alternative_is_found():
    store = tables(
        table(A, rule("always", "+447700900000"), rule("always", B)),
        table(B, rule("always", C)),
        table(C, rule("always", A)),
    )
    assert find_loop(store.get, [A], now=0.0) == ((A, B, C, A), False)


def test_conditional_forwards_never_form_a_loop():
    store = tables(table(A, rule("busy", B), rule("no-answer", B)), table(B, rule("busy", A)))
    assert find_loop(store.get, [A, B], now=0.0) is None


def test_rules_in_disjoint_modes_do_not_loop():
    store = tables(
        table(A, rule("always", B, modes=("day",))), table(B, rule("always", A, modes=("night",)))
    )
    assert find_loop(store.get, [A], now=0.0) is None
    store[B] = table(B, rule("always", A, modes=("night", "day")))
    assert find_loop(store.get, [A], now=0.0) is not None


def test_modes_must_overlap_along_the_whole_loop():
    store = tables(
        table(A, rule("always", B, modes=("day", "night"))),
        table(B, rule("always", C, modes=("day",))),
        table(C, rule("always", A, modes=("night",))),
    )
    assert find_loop(store.get, [A], now=0.0) is None


def test_expired_forward_does_not_close_a_loop():
    store = tables(table(A, rule("always", B)), table(B, rule("always", A, expires_at=10.0)))
    assert find_loop(store.get, [A], now=5.0) is not None
    assert find_loop(store.get, [A], now=10.0) is None


def test_reject_and_scope_are_taken_into_account():
    store = tables(
        table(A, rule("always", code=603), rule("always", B, callers="internal")),
        table(B, rule("always", A, kind=DestKind.NUMBER)),
    )
    assert find_loop(store.get, [A], now=0.0) == ((A, B, A), True)


def test_a_not_present_forward_closes_a_loop_whether_or_not_its_owner_is_away():
    store = tables(table(A, rule("not-present", B)), table(B, rule("always", A)))
    assert find_loop(store.get, [A], 0.0) == ((A, B, A), False)
