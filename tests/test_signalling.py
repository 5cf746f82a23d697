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
        (482, False, False, TRUNK, Outcome.BUSY),  # a merged request, at the same PBX again
        (482, False, False, PHONE, Outcome.BUSY),
        (482, False, False, EXTERNAL, None),
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
            "<sip:+390200000002@node.test>;reason=no-answer;counter=1;privacy=off, "
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


def test_redirect_targets_are_international_numbers_best_q_first():
    from divert.kemi.signalling import redirect_targets

    reply = (
        "SIP/2.0 302 Moved Temporarily\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
        'Contact: "Mobile, mine" <sip:+393351000001@pbx;user=phone>;q=0.5, '
        "<sip:00393351000002@pbx>;q=0.9\r\n"
        "m: <tel:+39-335-100-0003>\r\n"
        "Contact: <sip:3351000004@pbx>, <sip:alice@pbx>, *\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
        "Contact: <sip:+393351000009@body>\r\n"
    )
    assert redirect_targets(reply) == ("+393351000003", "+393351000002", "+393351000001")


def test_a_redirect_names_at_most_three_numbers_once_each():
    from divert.kemi.signalling import redirect_targets

    contacts = ", ".join(f"<sip:+3933510000{i:02d}@pbx>" for i in range(6))
    reply = f"SIP/2.0 302 Moved\r\nContact: {contacts}\r\nContact: <sip:+393351000000@x>\r\n\r\n"
    assert redirect_targets(reply) == ("+393351000000", "+393351000001", "+393351000002")
    assert redirect_targets("SIP/2.0 302 Moved\r\n\r\n") == ()
    assert redirect_targets("junk") == ()


def test_diversions_announced_add_up_the_counters():
    from divert.kemi.signalling import diversions_announced

    two_entries = '<sip:+390200000002@a>;reason=no-answer;counter=1, "x, y" <sip:b@c>;counter=1'
    assert diversions_announced(two_entries) == 2
    assert diversions_announced("<sip:a@b>;reason=user-busy;counter=3, <sip:c@d>") == 4
    assert diversions_announced("<sip:a@b;counter=9>") == 1  # a URI parameter is no counter
    assert diversions_announced("") == 0
