"""Carrying the call state on the transaction as one string."""

import pytest

from kemi.core.model import CallState, Condition, Hop
from kemi.core.state_codec import StateFormatError, decode, encode


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
