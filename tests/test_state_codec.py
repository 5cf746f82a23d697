"""Carrying the call state on the transaction as one string."""

import pytest

from divert.kemi.core.model import Call, CallState, Condition, EndpointKind, Hop
from divert.kemi.core.state_codec import StateFormatError, decode, decode_leg, encode, encode_leg


def test_round_trip_of_a_state_with_hops():
    state = CallState(
        current="vm:alice@acme",
        path=(
            Hop("+390200000001", "+390200000001", Condition.BUSY, 0, "sub:alice@acme"),
            Hop("sub:alice@acme", "201", Condition.NO_ANSWER, 2, "vm:alice@acme"),
        ),
        visited=frozenset({"+390200000001", "sub:alice@acme", "vm:alice@acme"}),
        prior=1,
    )
    text = encode(state)
    assert text.startswith("v1|1|vm:alice@acme|")
    assert decode(text) == state


def test_round_trip_of_a_new_call():
    state = CallState.begin("+390200000001")
    assert decode(encode(state)) == state


@pytest.mark.parametrize(
    "text",
    ["", "v2|0|+39|+39|", "v1|x|+39|+39|", "v1|0|+39|+39|a;b;sideways;0;c", "v1|0|+39"],
)
def test_malformed_state_is_a_clear_error(text):
    with pytest.raises(StateFormatError):
        decode(text)


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (Call("+441234567890", False, 1.0, None), EndpointKind.EXTERNAL),
        (Call("alice", True, 1.0, "night"), EndpointKind.SUBSCRIBER),
        (Call("odd user\nwith|bars;and/slashes", False, 1.0, "day-2"), EndpointKind.TRUNK),
    ],
)
def test_a_leg_carries_the_kind_the_call_and_the_state(call, kind):
    state = CallState.begin("+390200000001", 2)
    assert decode_leg(encode_leg(kind, call, state), 1.0) == (kind, call, state)


def test_a_leg_is_read_at_the_time_given():
    text = encode_leg(EndpointKind.TRUNK, Call("bob", False, 1.0), CallState.begin("+39"))
    assert decode_leg(text, 99.0)[1].now == 99.0


@pytest.mark.parametrize(
    "text", ["", "trunk", "sideways\n0\n\nv1|0|+39||\nbob", "trunk\n0\n\nv2|0|+39||\nbob"]
)
def test_a_malformed_leg_is_a_clear_error(text):
    with pytest.raises(StateFormatError):
        decode_leg(text, 1.0)
