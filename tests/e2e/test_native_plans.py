"""Calls routed by native plans (issue 16): tenant gamma has no time modes,
so kamailio.cfg carries out the core's compiled steps without Python.  Each
test asserts what reached the far end, as test_forwarding.py does for the
Python routes, and that the native plan counter moved."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    CALLER,
    CARRIER_1,
    CARRIER_2,
    EMERGENCY_G,
    NODE,
    PBX_G,
    PBX_G_DEAD,
    DivertNode,
    mobile,
    numbered,
)
from tests.e2e.net import NET
from tests.e2e.sip import Peer, call, callee

STRANGER = f"{NET}.63"  # neither a carrier nor a trunk
SMALL_NODE = f"{NET}.8:5160"  # a node of its own, with little shared memory


def native_calls(node: DivertNode) -> float:
    found = re.search(r"^divert_native_plan_calls_total (\S+)$", node.scrape(), re.M)
    assert found, "divert_native_plan_calls_total not on the metrics page"
    return float(found.group(1))


def decision_seconds(node: DivertNode) -> tuple[float, float]:
    """(count, sum) of the decision-time histogram on the metrics page."""
    page = node.scrape()
    found = [
        re.search(rf"^divert_decision_seconds_{part} (\S+)$", page, re.M)
        for part in ("count", "sum")
    ]
    assert found[0] and found[1], "the decision histogram is not on the metrics page"
    return float(found[0].group(1)), float(found[1].group(1))


def plans_ready(node: DivertNode) -> bool:
    """Has the plan timer brought the table up to the store (the two shared
    values equal, kamailio.cfg's route[PLAN])?"""
    plans, store = (
        node.kamcmd("pv.shvGet", name).split("value:")[-1].strip()
        for name in ("divert_plans", "divert_store")
    )
    return plans == store and plans not in ("filling", "none")


def settled(node: DivertNode) -> float:
    """The counter, once the plan table has caught up with the store."""
    deadline = time.monotonic() + 5
    while not plans_ready(node):
        assert time.monotonic() < deadline, "the plan table never caught up with the store"
        time.sleep(0.1)
    time.sleep(1.1)  # the metrics page is served again for a second
    return native_calls(node)


def through_pbx(
    node: DivertNode, workdir: Path, number: str, port: int, behaviour: str, code: int = 486
) -> tuple[Peer, Peer, Peer]:
    """A carrier's call to `number`, answered by the carrier after the PBX
    (`behaviour`, `code`: as `callee`'s); the PBX, the carrier and the caller."""
    pbx_peer = callee(workdir, "pbx", PBX_G, behaviour, code=code)
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(PBX_G, active=True)
    node.wait_trunk(CARRIER_1, active=True)
    caller = call(workdir, "caller", NODE, number, 200, f"{CALLER}:{port}")
    assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    pbx_peer.stop()
    carrier.stop()
    return pbx_peer, carrier, caller


def test_unconditional_forward_from_a_native_plan(node: DivertNode, workdir: Path):
    before = settled(node)
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(CARRIER_1, active=True)
    caller = call(workdir, "caller", NODE, numbered(40), 200, f"{CALLER}:6401")
    assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    carrier.stop()
    (invite,) = carrier.received()
    assert invite.ruri_user == mobile(40)
    assert invite.header("Diversion") == [
        f"<sip:{numbered(40)}@divert.invalid>;reason=unconditional;counter=1;privacy=off"
    ]
    assert "SIP/2.0 181 Call Is Being Forwarded" in caller.replies()
    time.sleep(1.1)
    assert native_calls(node) == before + 1


def test_busy_then_forward_from_a_native_plan(node: DivertNode, workdir: Path):
    before = settled(node)
    timed = decision_seconds(node)
    pbx, carrier, _ = through_pbx(node, workdir, numbered(41), 6402, "reply", code=486)
    (first,) = pbx.received()
    assert first.ruri_user == numbered(41) and first.header("Diversion") == []
    (forwarded,) = carrier.received()
    assert forwarded.ruri_user == mobile(41)
    (diversion,) = forwarded.header("Diversion")
    assert "reason=user-busy" in diversion and numbered(41) in diversion
    time.sleep(1.1)
    assert native_calls(node) == before + 1
    assert decision_seconds(node) == timed  # both steps the plan's: the core never ran


def test_no_answer_from_a_native_plan_waits_for_the_rules_timer(node: DivertNode, workdir: Path):
    _, carrier, caller = through_pbx(node, workdir, numbered(42), 6403, "ring")
    assert caller.lasted() >= 2.0
    (forwarded,) = carrier.received()
    assert forwarded.ruri_user == mobile(42)
    assert "reason=no-answer" in forwarded.header("Diversion")[0]


def test_a_busy_number_without_a_busy_forward_gets_486_from_its_plan(
    node: DivertNode, workdir: Path
):
    before = settled(node)
    timed = decision_seconds(node)
    pbx = callee(workdir, "pbx", PBX_G, "reply", code=486)
    node.wait_trunk(PBX_G, active=True)
    caller = call(workdir, "caller", NODE, numbered(42), 486, f"{CALLER}:6411")
    assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    pbx.stop()
    assert caller.replies()[-1].startswith("SIP/2.0 486 Busy Here")
    assert "SIP/2.0 181 Call Is Being Forwarded" not in caller.replies()
    time.sleep(1.1)
    assert native_calls(node) == before + 1
    # two decisions, both the plan's: the core never ran
    assert decision_seconds(node) == timed


def test_a_redirect_from_a_plans_pbx_is_followed_with_the_plans_call_state(
    node: DivertNode, workdir: Path
):
    """The PBX of a number with a plan answers 302: that is Python's, which
    needs the call state the plan carried (built only now, kamailio.cfg's
    route[PLAN_CALL]): the forward names the number as the one diverted."""
    before = settled(node)
    contact = f"<sip:{mobile(77)}@pbx.example>"
    pbx = callee(workdir, "pbx", PBX_G, "reply", code=302, reason="Moved", contact=contact)
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(PBX_G, active=True)
    node.wait_trunk(CARRIER_1, active=True)
    caller = call(workdir, "caller", NODE, numbered(41), 200, f"{CALLER}:6416")
    assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    pbx.stop()
    carrier.stop()
    (forwarded,) = carrier.received()
    assert forwarded.ruri_user == mobile(77)
    (diversion,) = forwarded.header("Diversion")
    assert diversion.startswith(f"<sip:{numbered(41)}@divert.invalid>;")
    assert "SIP/2.0 302" not in " ".join(caller.replies())  # never relayed upstream
    time.sleep(1.1)
    assert native_calls(node) == before + 1  # the arrival was the plan's


def test_a_reject_rule_from_a_native_plan(node: DivertNode, workdir: Path):
    caller = call(workdir, "caller", NODE, numbered(43), 603, f"{CALLER}:6404")
    assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    assert caller.replies()[-1].startswith("SIP/2.0 603 Decline")


def test_busy_to_a_number_that_forwards_announces_both_diversions(node: DivertNode, workdir: Path):
    _, carrier, _ = through_pbx(node, workdir, numbered(44), 6405, "reply", code=486)
    (forwarded,) = carrier.received()
    assert forwarded.ruri_user == mobile(45)
    (diversion,) = forwarded.header("Diversion")
    assert diversion == (
        f"<sip:{numbered(45)}@divert.invalid>;reason=unconditional;counter=1;privacy=off, "
        f"<sip:{numbered(44)}@divert.invalid>;reason=user-busy;counter=1;privacy=off"
    )


def said_503_natively(node: DivertNode, reason: str) -> bool:
    """Has kamailio.cfg (not Python: its lines are the <script>'s) said that
    calls ended 503 for `reason`?  Once a minute per worker at most: another
    test's call (test_fuzz's, to these numbers) may have said it first."""
    return f"<script>: divert: calls answered 503: {reason}".encode() in node.log.read_bytes()


def test_a_trunk_down_ends_in_503_from_its_plan(node: DivertNode, workdir: Path):
    """No PBX answers the probes: the plan's down step (no trunk-down
    forward: 503) answers without the core, and says why in the log."""
    node.wait_trunk(PBX_G, active=False, timeout=15)
    before = settled(node)
    timed = decision_seconds(node)
    caller = call(workdir, "caller", NODE, numbered(41), 503, f"{CALLER}:6406")
    assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    time.sleep(1.1)
    assert native_calls(node) == before + 1
    assert decision_seconds(node) == timed
    assert said_503_natively(node, "a customer trunk is down"), node.tail()


def test_a_dead_trunk_takes_its_emergency_forward_from_the_plan(node: DivertNode, workdir: Path):
    before = settled(node)
    timed = decision_seconds(node)
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(CARRIER_1, active=True)
    caller = call(workdir, "caller", NODE, numbered(46), 200, f"{CALLER}:6412")
    assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    carrier.stop()
    (forwarded,) = carrier.received()
    assert forwarded.ruri_user == EMERGENCY_G
    assert forwarded.header("Diversion") == [
        f"<sip:{numbered(46)}@divert.invalid>;reason=out-of-service;counter=1;privacy=off"
    ]
    time.sleep(1.1)
    assert native_calls(node) == before + 1
    assert decision_seconds(node) == timed


def test_an_emergency_forward_refused_by_a_carrier_goes_on_to_the_next_carrier(
    node: DivertNode, workdir: Path
):
    """The dead trunk's emergency forward (its plan's down step) gets 503
    from the first carrier: as for any forward to the carriers, the next
    carrier gets the call, once, and the first stays up (its 503 was about
    one call).  Not the arrival's failure again: that would mark the
    carrier down as if it were the customer's dead trunk."""
    node.wait_trunk(PBX_G_DEAD, active=False, timeout=15)  # the plan's step for a trunk known down
    first = callee(workdir, "carrier-1", CARRIER_1, "reply", code=503, reason="Overloaded")
    second = callee(workdir, "carrier-2", CARRIER_2, "answer")
    node.wait_trunk(CARRIER_1, active=True)
    node.wait_trunk(CARRIER_2, active=True)
    caller = call(workdir, "caller", NODE, numbered(46), 200, f"{CALLER}:6415")
    try:
        assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
        (refused,) = first.received()
        assert refused.ruri_user == EMERGENCY_G
        assert (node.trunk_flags(CARRIER_1) or "").startswith("A"), node.kamcmd("dispatcher.list")
    finally:
        first.stop()
        second.stop()
    (relayed,) = second.received()
    assert relayed.ruri_user == EMERGENCY_G
    assert relayed.header("Diversion") == refused.header("Diversion")
    assert caller.replies().count("SIP/2.0 181 Call Is Being Forwarded") == 1


def test_a_carrier_that_never_answers_fails_over_within_the_plan(node: DivertNode, workdir: Path):
    """The first carrier lets the INVITE time out without a word (what an
    overloaded node sees most): the next carrier gets the same call and
    headers, as on the Python routes (test_forwarding's failover)."""
    before = settled(node)
    timed = decision_seconds(node)
    first = callee(workdir, "carrier-1", CARRIER_1, "silent", timeout=15)
    second = callee(workdir, "carrier-2", CARRIER_2, "answer")
    node.wait_trunk(CARRIER_1, active=True)
    node.wait_trunk(CARRIER_2, active=True)
    caller = call(workdir, "caller", NODE, numbered(40), 200, f"{CALLER}:6413")
    try:
        assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    finally:
        first.stop()
        second.stop()
    tried = first.received()
    assert tried and {r.ruri_user for r in tried} == {mobile(40)}
    (relayed,) = second.received()
    assert relayed.ruri_user == mobile(40)
    assert relayed.header("Diversion") == tried[0].header("Diversion")
    assert relayed.header("Via")[0] != tried[0].header("Via")[0]  # a branch of its own
    time.sleep(1.1)
    assert native_calls(node) == before + 1
    assert decision_seconds(node) == timed


def test_every_carrier_failing_ends_in_503_from_the_plan(node: DivertNode, workdir: Path):
    before = settled(node)
    timed = decision_seconds(node)
    first = callee(workdir, "carrier-1", CARRIER_1, "reply", code=503, reason="Overloaded")
    second = callee(workdir, "carrier-2", CARRIER_2, "reply", code=500, reason="Broken")
    node.wait_trunk(CARRIER_1, active=True)
    node.wait_trunk(CARRIER_2, active=True)
    caller = call(workdir, "caller", NODE, numbered(40), 503, f"{CALLER}:6414")
    try:
        assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    finally:
        first.stop()
        second.stop()
    assert len(first.received()) == len(second.received()) == 1
    assert caller.replies()[-1].startswith("SIP/2.0 503 Service Unavailable")
    time.sleep(1.1)
    assert native_calls(node) == before + 1
    assert decision_seconds(node) == timed
    assert said_503_natively(node, "no carrier is up"), node.tail()


def test_a_change_is_seen_by_the_next_call(node: DivertNode, workdir: Path):
    """The store shows a new forward: the very next call takes it, never a
    plan from before it."""
    from tests.e2e.test_forwarding import _last_forward_id

    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(CARRIER_1, active=True)
    node.divert("forward", "add", numbered(42), "--when", "always", "--to", mobile(40))
    try:
        node.wait_store(
            lambda reader: (
                (found := reader.table(numbered(42))) is not None
                and any(rule.condition.value == "always" for rule in found.rules)
            ),
            "the new forward of +390200000042",
        )
        caller = call(workdir, "caller", NODE, numbered(42), 200, f"{CALLER}:6407")
        assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
        carrier.stop()
        assert carrier.received()[0].ruri_user == mobile(40)
    finally:
        node.divert("forward", "delete", str(_last_forward_id(node)))


def test_a_stranger_gets_no_plan(node: DivertNode, workdir: Path):
    """Only carriers and customer trunks (by the dispatcher list) reach the
    plans: anybody else calling a planned number is challenged first."""
    before = settled(node)
    caller = call(workdir, "stranger", NODE, numbered(40), 407, f"{STRANGER}:6408")
    assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    time.sleep(1.1)
    assert native_calls(node) == before


def test_diversions_announced_by_a_carrier_take_the_python_routes(node: DivertNode, workdir: Path):
    """The diversion bound counts what the call came with: a plan, made for
    calls with none, is not used."""
    before = settled(node)
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(CARRIER_1, active=True)
    earlier = "Diversion: <sip:+390299999999@carrier.invalid>;reason=user-busy;counter=1"
    caller = call(
        workdir, "caller", NODE, numbered(40), 200, f"{CALLER}:6409", extra_header=earlier
    )
    assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
    carrier.stop()
    (forwarded,) = carrier.received()
    assert forwarded.ruri_user == mobile(40)
    time.sleep(1.1)
    assert native_calls(node) == before


def test_plans_that_do_not_fit_in_shared_memory_are_not_used(
    tmp_path_factory: pytest.TempPathFactory, workdir: Path
):
    """64 MB of shared memory leaves nothing above the reserve transactions
    keep: the table stays empty, the node says so once, calls route."""
    from tests.e2e.conftest import SEED

    small = DivertNode(tmp_path_factory.mktemp("small-shm"), listen=SMALL_NODE)
    small.options = ("--shm", "64")
    small.divert("db", "upgrade")
    for args in SEED:
        small.divert(*args)
    small.start()
    try:
        deadline = time.monotonic() + 10
        warning = "native plans off: they do not fit in Kamailio's shared memory"
        while warning not in small.log.read_text(errors="replace"):
            assert time.monotonic() < deadline, small.tail()
            time.sleep(0.2)
        carrier = callee(workdir, "carrier", CARRIER_1, "answer")
        small.wait_trunk(CARRIER_1, active=True)
        caller = call(workdir, "caller", SMALL_NODE, numbered(40), 200, f"{CALLER}:6410")
        assert caller.wait() == 0, f"{caller.diagnostics()}\n{small.tail()}"
        carrier.stop()
        assert carrier.received()[0].ruri_user == mobile(40)
        assert "\tall: 0\n" in small.kamcmd("htable.stats")  # the plans table: empty
        assert native_calls(small) == 0
        assert small.log.read_text(errors="replace").count(warning) == 1
    finally:
        small.stop()
