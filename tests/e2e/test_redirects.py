"""Seed 004's two conditions through a real Kamailio: a forward set on the
phone or PBX itself (it answers 302, divert follows it under its own rules)
and "not present" (a subscriber set away from the phone)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    CALLER,
    CARRIER_1,
    NODE,
    PBX_A,
    PBX_B,
    PHONE,
    DivertNode,
    dial,
    mobile,
    numbered,
)
from tests.e2e.net import NET
from tests.e2e.sip import Peer, call, callee, register


def redirecting(workdir: Path, name: str, address: str, *targets: str) -> Peer:
    """A phone or PBX that answers 302 naming `targets`."""
    contact = ", ".join(f"<sip:{target}@pbx.example>" for target in targets)
    return callee(
        workdir, name, address, "reply", code=302, reason="Moved Temporarily", contact=contact
    )


def ended(*peers: Peer, caller: Peer, node: DivertNode) -> None:
    code = caller.wait()
    assert code == 0, f"caller failed ({code}):\n{caller.diagnostics()}\n{node.tail()}"
    time.sleep(0.3)
    for peer in peers:
        peer.stop()


def test_a_pbx_redirect_reaches_the_carrier_with_a_diversion(node: DivertNode, workdir: Path):
    pbx = redirecting(workdir, "pbx", PBX_A, mobile(50))
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(CARRIER_1, active=True)
    node.wait_trunk(PBX_A, active=True)
    caller = call(workdir, "caller", NODE, numbered(10), 200, f"{CALLER}:6200")
    ended(pbx, carrier, caller=caller, node=node)
    (invite,) = carrier.received()
    assert invite.ruri_user == mobile(50)
    (diversion,) = invite.header("Diversion")
    assert diversion.startswith(f"<sip:{numbered(10)}@")
    assert "reason=unconditional" in diversion and "counter=1" in diversion
    assert [status[:11] for status in caller.replies()][-1] == "SIP/2.0 200"
    assert "SIP/2.0 302" not in " ".join(caller.replies())  # never relayed upstream


def test_a_redirect_to_a_premium_number_is_refused_and_nothing_leaves(
    node: DivertNode, workdir: Path
):
    pbx = redirecting(workdir, "pbx", PBX_A, "+39899123456")
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(PBX_A, active=True)
    caller = call(workdir, "caller", NODE, numbered(10), 403, f"{CALLER}:6201")
    ended(pbx, carrier, caller=caller, node=node)
    assert carrier.received() == []
    (refusal,) = [r for r in caller.replies() if r.startswith("SIP/2.0 403")]
    assert refusal.startswith("SIP/2.0 403 Redirect Refused: forwarding to +39899123456")
    assert "premium-rate" in refusal
    assert f"{numbered(10)} answered 302 naming +39899123456: 403 Redirect Refused" in node.tail()


def test_a_redirect_to_a_busy_number_takes_the_owners_busy_forward(node: DivertNode, workdir: Path):
    """numbered(2) (PBX A) has a busy forward to mobile(2); its PBX redirects
    to numbered(7) (PBX B), which is busy: the busy forward takes the call."""
    pbx_a = redirecting(workdir, "pbx-a", PBX_A, numbered(7))
    pbx_b = callee(workdir, "pbx-b", PBX_B, "reply", code=486, reason="Busy Here")
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    for address in (PBX_A, PBX_B, CARRIER_1):
        node.wait_trunk(address, active=True)
    caller = call(workdir, "caller", NODE, numbered(2), 200, f"{CALLER}:6202")
    ended(pbx_a, pbx_b, carrier, caller=caller, node=node)
    (reached_b,) = pbx_b.received()
    assert reached_b.ruri_user == numbered(7)
    (invite,) = carrier.received()
    assert invite.ruri_user == mobile(2)
    assert "reason=user-busy" in invite.header("Diversion")[0]


def test_redirects_between_two_divert_numbers_stop_as_a_loop(node: DivertNode, workdir: Path):
    pbx_a = redirecting(workdir, "pbx-a", PBX_A, numbered(7))
    pbx_b = redirecting(workdir, "pbx-b", PBX_B, numbered(10))
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(PBX_A, active=True)
    node.wait_trunk(PBX_B, active=True)
    caller = call(workdir, "caller", NODE, numbered(10), 482, f"{CALLER}:6203")
    ended(pbx_a, pbx_b, carrier, caller=caller, node=node)
    assert len(pbx_a.received()) == 1 and len(pbx_b.received()) == 1
    assert carrier.received() == []


@pytest.fixture
def alice_registered(node: DivertNode, workdir: Path) -> Iterator[DivertNode]:
    phone = register(workdir, "register", NODE, "alice", "acme", PHONE, 300, "alice-secret")
    assert phone.wait() == 0, phone.diagnostics()
    yield node
    gone = register(workdir, "unregister", NODE, "alice", "acme", PHONE, 0, "alice-secret")
    assert gone.wait() == 0, gone.diagnostics()


def test_a_phone_redirect_is_followed_like_a_pbx_one(alice_registered: DivertNode, workdir: Path):
    node = alice_registered
    phone = redirecting(workdir, "phone", PHONE, f"00{mobile(51)[1:]}")
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(CARRIER_1, active=True)
    caller = call(workdir, "caller", NODE, numbered(8), 200, f"{CALLER}:6204")
    ended(phone, carrier, caller=caller, node=node)
    assert phone.received()[0].request_line.startswith(f"INVITE sip:alice@{NET}.30:5070")
    (invite,) = carrier.received()
    assert invite.ruri_user == mobile(51)
    assert "reason=unconditional" in invite.header("Diversion")[0]


def test_away_takes_the_not_present_forward_and_present_rings_again(
    alice_registered: DivertNode, workdir: Path
):
    node = alice_registered
    node.divert(
        "forward", "add", "--subscriber", "alice", "--tenant", "acme",
        "--when", "not-present", "--to", mobile(52),
    )  # fmt: skip
    try:
        assert dial(node, workdir, "*78", 480, 6210) == "SIP/2.0 480 Away"
        node.wait_store(lambda r: bool(r.table(numbered(8)).away), "alice away")  # type: ignore[union-attr]
        carrier = callee(workdir, "carrier", CARRIER_1, "answer")
        node.wait_trunk(CARRIER_1, active=True)
        caller = call(workdir, "caller", NODE, numbered(8), 200, f"{CALLER}:6211")
        ended(carrier, caller=caller, node=node)
        (invite,) = carrier.received()
        assert invite.ruri_user == mobile(52)
        assert "reason=away" in invite.header("Diversion")[0]

        assert dial(node, workdir, "*79", 480, 6212) == "SIP/2.0 480 Present"
        node.wait_store(lambda r: not r.table(numbered(8)).away, "alice present")  # type: ignore[union-attr]
        phone = callee(workdir, "phone", PHONE, "answer")
        caller = call(workdir, "caller2", NODE, numbered(8), 200, f"{CALLER}:6213")
        ended(phone, caller=caller, node=node)
        assert phone.received()[0].request_line.startswith(f"INVITE sip:alice@{NET}.30:5070")
    finally:
        dial(node, workdir, "*79", 480, 6214)
        dial(node, workdir, "*73", 480, 6215)


MERGED_PBX = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!-- A PBX that answers the first INVITE of a call 486 and the second, on a
     new branch with the same Call-ID, From tag and CSeq, 482 (RFC 3261
     8.2.2.2: a merged request). -->
<scenario name="merged request">
  <recv request="INVITE"/>
  <send>
    <![CDATA[
      SIP/2.0 486 Busy Here
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
  <recv request="INVITE"/>
  <send>
    <![CDATA[
      SIP/2.0 482 Loop Detected
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag02[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
</scenario>
"""


def test_a_pbx_answering_482_to_a_second_visit_lets_the_chain_go_on(
    node: DivertNode, workdir: Path
):
    """numbered(10) busy -> numbered(3), both on PBX A, then -> mobile(60):
    the PBX takes the second INVITE for a merged request (482); that step
    fails as busy, the chain's next busy forward takes the call, and the
    trunk stays up."""
    node.divert("forward", "add", numbered(10), "--when", "busy", "--to", numbered(3))
    node.divert("forward", "add", numbered(10), "--when", "busy", "--to", mobile(60))
    try:
        node.wait_store(lambda r: len(r.table(numbered(10)).rules) == 2, "the busy forwards")  # type: ignore[union-attr]
        host, port = PBX_A.split(":")
        pbx = Peer(
            workdir, "pbx", ["-i", host, "-p", port, "-m", "100", "-timeout", "30s"], MERGED_PBX
        )
        carrier = callee(workdir, "carrier", CARRIER_1, "answer")
        node.wait_trunk(PBX_A, active=True)
        node.wait_trunk(CARRIER_1, active=True)
        caller = call(workdir, "caller", NODE, numbered(10), 200, f"{CALLER}:6220")
        ended(pbx, carrier, caller=caller, node=node)
        assert [r.ruri_user for r in pbx.received()] == [numbered(10), numbered(3)]
        (invite,) = carrier.received()
        assert invite.ruri_user == mobile(60)
        node.wait_trunk(PBX_A, active=True, timeout=0.5)  # not marked down by the 482
    finally:
        for forward_id in busy_forwards_of(node, numbered(10)):
            node.divert("forward", "delete", str(forward_id))


def busy_forwards_of(node: DivertNode, number: str) -> list[int]:
    from sqlalchemy import text

    from divert.db import open_portal

    engine = open_portal(node.portal)
    with engine.connect() as connection:
        ids = connection.scalars(
            text(
                "SELECT f.id FROM forwards f JOIN numbers n ON n.id = f.number_id "
                "WHERE n.e164 = :number AND f.condition = 'busy'"
            ),
            {"number": number},
        ).all()
    engine.dispose()
    return [int(i) for i in ids]
