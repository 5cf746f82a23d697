"""SIP details of forwarding: failure outcomes and diversion headers."""

import pytest

from divert.kemi.core.model import (
    CallState,
    Condition,
    DiversionEntry,
    Endpoint,
    EndpointKind,
    Outcome,
    Relay,
)
from divert.kemi.signalling import diversion_headers, outcome_of, trunk_set

TRUNK, EXTERNAL, PHONE = EndpointKind.TRUNK, EndpointKind.EXTERNAL, EndpointKind.SUBSCRIBER


@pytest.mark.parametrize(
    ("code", "timed_out", "no_reply", "kind", "outcome"),
    [
        (486, False, False, TRUNK, Outcome.BUSY),
        (600, False, False, PHONE, Outcome.BUSY),
        (603, False, False, EXTERNAL, Outcome.BUSY),
        (408, True, False, PHONE, Outcome.NO_ANSWER),
        (408, True, True, TRUNK, Outcome.TRUNK_DOWN),
        (408, True, True, EXTERNAL, Outcome.TRUNK_DOWN),
        (408, True, True, PHONE, Outcome.NOT_REGISTERED),
        (503, False, False, TRUNK, Outcome.TRUNK_DOWN),
        (500, False, False, EXTERNAL, Outcome.TRUNK_DOWN),
        (477, False, True, TRUNK, Outcome.TRUNK_DOWN),
        (480, False, False, PHONE, Outcome.NOT_REGISTERED),
        (404, False, False, TRUNK, None),
        (403, False, False, EXTERNAL, None),
        (487, False, False, PHONE, None),
    ],
)
def test_failures_map_to_outcomes(code, timed_out, no_reply, kind, outcome):
    assert outcome_of(code, timed_out, no_reply, kind) is outcome


def _relay() -> Relay:
    return Relay(
        "+393351112233",
        Endpoint(EXTERNAL, "+393351112233"),
        None,
        (
            DiversionEntry("+390200000001", Condition.BUSY, 1),
            DiversionEntry("+390200000002", Condition.NO_ANSWER, 2),
        ),
        CallState.begin("+390200000001"),
    )


def test_diversion_lists_the_most_recent_first():
    assert diversion_headers(_relay(), "node.test", "diversion", "") == [
        (
            "Diversion",
            "<sip:+390200000002@node.test>;reason=no-answer;counter=2;privacy=off, "
            "<sip:+390200000001@node.test>;reason=user-busy;counter=1;privacy=off",
        )
    ]


def test_history_info_chains_indexes_with_rfc4458_causes():
    (header,) = diversion_headers(_relay(), "node.test", "history-info", "sip:+390200000001@in")
    assert header == (
        "History-Info",
        "<sip:+390200000001@in>;index=1, "
        "<sip:+390200000002@node.test;cause=486>;index=1.1;mp=1, "
        "<sip:+393351112233@node.test;cause=408>;index=1.1.1;mp=1.1",
    )


def test_both_styles_when_the_trunk_wants_both():
    names = [name for name, _ in diversion_headers(_relay(), "node.test", "both", "")]
    assert names == ["Diversion", "History-Info"]


def test_customer_trunks_have_their_own_dispatcher_sets():
    assert trunk_set("7") == 1007
