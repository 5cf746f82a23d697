"""Forwarding through a real Kamailio, with sipp as carriers, PBXs and phones.

Each test asserts what reached the far end (Request-URI, Diversion or
History-Info) and the caller's final reply.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.conftest import (
    ALICE_PASSWORD,
    CALLER,
    CAROL_PASSWORD,
    CARRIER_1,
    CARRIER_2,
    EMERGENCY_DEAD,
    EMERGENCY_SILENT,
    NODE,
    OPERATOR,
    PBX_A,
    PBX_B,
    PBX_DEAD,
    PBX_SILENT,
    PHONE,
    VOICEMAIL,
    DivertNode,
    mobile,
    numbered,
)
from tests.e2e.net import NET
from tests.e2e.sip import Peer, call, callee, cancel, register, subscriber_call


def finish(*peers: Peer, caller: Peer, node: DivertNode) -> None:
    """Wait for the caller's call to end, stop the callees; fail with logs."""
    code = caller.wait()
    assert code == 0, f"caller failed ({code}):\n{caller.diagnostics()}\n{node.tail()}"
    time.sleep(0.3)  # the callees' last messages (ACK, BYE's 200) settle
    for peer in peers:
        peer.stop()
        assert peer.aborted() == [], f"{peer.name}:\n{peer.diagnostics()}"


def up(node: DivertNode, *addresses: str) -> None:
    for address in addresses:
        node.wait_trunk(address, active=True)


def test_unconditional_forward_leaves_through_the_carrier(node: DivertNode, workdir: Path):
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, CARRIER_1)
    caller = call(workdir, "caller", NODE, numbered(1), 200, f"{CALLER}:6001")
    finish(carrier, caller=caller, node=node)
    (invite,) = carrier.received()
    assert invite.ruri_user == mobile(1)
    (diversion,) = invite.header("Diversion")
    assert diversion.startswith(f"<sip:{numbered(1)}@")
    assert "reason=unconditional" in diversion and "counter=1" in diversion


def test_busy_then_forward(node: DivertNode, workdir: Path):
    pbx = callee(workdir, "pbx", PBX_A, "reply", code=486, reason="Busy Here")
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, PBX_A, CARRIER_1)
    caller = call(workdir, "caller", NODE, numbered(2), 200, f"{CALLER}:6002")
    finish(pbx, carrier, caller=caller, node=node)
    (first,) = pbx.received()
    assert first.ruri_user == numbered(2)
    assert first.header("Diversion") == []
    (forwarded,) = carrier.received()
    assert forwarded.ruri_user == mobile(2)
    (diversion,) = forwarded.header("Diversion")
    assert "reason=user-busy" in diversion and numbered(2) in diversion
    assert "SIP/2.0 181 Call Is Being Forwarded" in caller.replies()
    assert caller.replies()[-1].startswith("SIP/2.0 200")


def test_no_answer_forwards_after_the_rules_timeout(node: DivertNode, workdir: Path):
    pbx = callee(workdir, "pbx", PBX_A, "ring")
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, PBX_A, CARRIER_1)
    caller = call(workdir, "caller", NODE, numbered(3), 200, f"{CALLER}:6003")
    finish(pbx, carrier, caller=caller, node=node)
    assert caller.lasted() >= 2.0  # the rule's 2 s ring timer ran out first
    (forwarded,) = carrier.received()
    assert forwarded.ruri_user == mobile(3)
    assert "reason=no-answer" in forwarded.header("Diversion")[0]


def test_trunk_down_by_probing_goes_to_the_emergency_number_at_once(
    node: DivertNode, workdir: Path
):
    node.wait_trunk(PBX_DEAD, active=False)
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, CARRIER_1)
    caller = call(workdir, "caller", NODE, numbered(4), 200, f"{CALLER}:6004")
    finish(carrier, caller=caller, node=node)
    assert caller.lasted() < 1.5  # no timer waited on the dead trunk
    (forwarded,) = carrier.received()
    assert forwarded.ruri_user == EMERGENCY_DEAD
    assert "reason=out-of-service" in forwarded.header("Diversion")[0]


def test_trunk_that_never_answers_an_invite_goes_to_the_emergency_number(
    node: DivertNode, workdir: Path
):
    pbx = callee(workdir, "pbx", PBX_SILENT, "silent", timeout=15)
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, PBX_SILENT, CARRIER_1)
    caller = call(workdir, "caller", NODE, numbered(5), 200, f"{CALLER}:6005")
    try:
        finish(carrier, caller=caller, node=node)
        (forwarded,) = carrier.received()
        assert forwarded.ruri_user == EMERGENCY_SILENT
        tried = pbx.received()  # retransmissions of one INVITE, never answered
        assert tried and {r.header("Via")[0] for r in tried} == {tried[0].header("Via")[0]}
    finally:
        pbx.stop()


def test_chain_of_three_busy_no_answer_voicemail(node: DivertNode, workdir: Path):
    first = callee(workdir, "pbx-a", PBX_A, "reply", code=486, reason="Busy Here")
    second = callee(workdir, "pbx-b", PBX_B, "ring")
    mailbox = callee(workdir, "voicemail", VOICEMAIL, "answer")
    up(node, PBX_A, PBX_B)
    caller = call(workdir, "caller", NODE, numbered(6), 200, f"{CALLER}:6006")
    finish(first, second, mailbox, caller=caller, node=node)
    (at_b,) = second.received()
    assert at_b.ruri_user == numbered(7)
    history = at_b.header("History-Info")  # pbx-b prefers History-Info
    assert history == [
        f"<sip:{numbered(6)}@{NET}.1:5160>;index=1, "
        f"<sip:{numbered(7)}@divert.invalid;cause=486>;index=1.1;mp=1"
    ]
    assert at_b.header("Diversion") == []
    (at_vm,) = mailbox.received()
    assert at_vm.ruri_user == numbered(7)
    assert at_vm.header("History-Info") == []  # pbx-b's branch only; voicemail is no trunk
    assert at_vm.header("Diversion") == [
        f"<sip:{numbered(7)}@divert.invalid>;reason=no-answer;counter=1;privacy=off, "
        f"<sip:{numbered(6)}@divert.invalid>;reason=user-busy;counter=1;privacy=off"
    ]


def test_not_registered_then_registered_then_unregistered(node: DivertNode, workdir: Path):
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, CARRIER_1)
    caller = call(workdir, "caller", NODE, numbered(8), 200, f"{CALLER}:6008")
    finish(carrier, caller=caller, node=node)
    assert carrier.received()[0].ruri_user == mobile(8)
    assert "reason=unavailable" in carrier.received()[0].header("Diversion")[0]

    phone_registers = register(
        workdir, "register", NODE, "alice", "acme", PHONE, 300, ALICE_PASSWORD
    )
    assert phone_registers.wait() == 0, phone_registers.diagnostics()
    phone = callee(workdir, "phone", PHONE, "answer")
    caller = call(workdir, "caller2", NODE, numbered(8), 200, f"{CALLER}:6009")
    finish(phone, caller=caller, node=node)
    assert phone.received()[0].request_line.startswith(f"INVITE sip:alice@{NET}.30:5070")

    unregisters = register(workdir, "unregister", NODE, "alice", "acme", PHONE, 0, ALICE_PASSWORD)
    assert unregisters.wait() == 0, unregisters.diagnostics()
    carrier = callee(workdir, "carrier2", CARRIER_1, "answer")
    caller = call(workdir, "caller3", NODE, numbered(8), 200, f"{CALLER}:6010")
    finish(carrier, caller=caller, node=node)
    assert carrier.received()[0].ruri_user == mobile(8)


def test_reject_destination_gives_its_code(node: DivertNode, workdir: Path):
    caller = call(workdir, "caller", NODE, numbered(9), 603, f"{CALLER}:6011")
    finish(caller=caller, node=node)


def test_unknown_number_is_404(node: DivertNode, workdir: Path):
    caller = call(workdir, "caller", NODE, "+390299999999", 404, f"{CALLER}:6012")
    finish(caller=caller, node=node)


def test_caller_not_a_carrier_or_trunk_must_authenticate(node: DivertNode, workdir: Path):
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, CARRIER_1)
    caller = call(workdir, "caller", NODE, numbered(1), 407, f"{NET}.50:6013")
    finish(carrier, caller=caller, node=node)
    assert carrier.received() == []


def test_exhausted_max_forwards_is_483(node: DivertNode, workdir: Path):
    caller = call(workdir, "caller", NODE, numbered(1), 483, f"{CALLER}:6014", max_forwards=0)
    finish(caller=caller, node=node)


def test_diversion_bound_ends_the_chain(node: DivertNode, workdir: Path):
    caller = call(workdir, "caller", NODE, numbered(20), 480, f"{CALLER}:6015")
    finish(caller=caller, node=node)


def test_busy_loop_between_two_numbers_is_stopped(node: DivertNode, workdir: Path):
    first = callee(workdir, "pbx-a", PBX_A, "reply", code=486, reason="Busy Here")
    second = callee(workdir, "pbx-b", PBX_B, "reply", code=486, reason="Busy Here")
    up(node, PBX_A, PBX_B)
    caller = call(workdir, "caller", NODE, numbered(11), 486, f"{CALLER}:6016")
    finish(first, second, caller=caller, node=node)
    assert [r.ruri_user for r in first.received()] == [numbered(11)]
    assert [r.ruri_user for r in second.received()] == [numbered(12)]


def test_cancel_in_the_middle_of_a_chain(node: DivertNode, workdir: Path):
    pbx = callee(workdir, "pbx", PBX_A, "reply", code=486, reason="Busy Here")
    carrier = callee(workdir, "carrier", CARRIER_1, "ring")
    up(node, PBX_A, CARRIER_1)
    caller = cancel(workdir, "caller", NODE, numbered(2), f"{CALLER}:6017", pause_ms=1000)
    finish(pbx, carrier, caller=caller, node=node)
    assert carrier.received()[0].ruri_user == mobile(2)
    assert len(carrier.received("CANCEL")) == 1


def test_carrier_failover_on_503(node: DivertNode, workdir: Path):
    first = callee(workdir, "carrier-1", CARRIER_1, "reply", code=503, reason="Service Unavailable")
    second = callee(workdir, "carrier-2", CARRIER_2, "answer")
    up(node, CARRIER_1, CARRIER_2)
    caller = call(workdir, "caller", NODE, numbered(1), 200, f"{CALLER}:6018")
    finish(first, second, caller=caller, node=node)
    assert first.received()[0].ruri_user == mobile(1)
    assert second.received()[0].ruri_user == mobile(1)


def test_a_forward_added_while_running_applies_to_the_next_call(node: DivertNode, workdir: Path):
    node.divert("forward", "add", numbered(10), "--when", "always", "--to", mobile(10))
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, CARRIER_1)
    time.sleep(1.5)  # the sync worker polls the SQLite portal every second
    caller = call(workdir, "caller", NODE, numbered(10), 200, f"{CALLER}:6019")
    finish(carrier, caller=caller, node=node)
    assert carrier.received()[0].ruri_user == mobile(10)
    node.divert("forward", "delete", str(_last_forward_id(node)))


def _last_forward_id(node: DivertNode) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(node.portal)
    with engine.connect() as connection:
        found = connection.execute(text("SELECT max(id) FROM forwards")).scalar()
    engine.dispose()
    return int(found)


def test_malformed_request_is_400(node: DivertNode):
    """CSeq names another method than the request line: sanity answers 400."""
    reply = send_raw(
        NODE,
        CALLER,
        [
            f"INVITE sip:{numbered(1)}@{NET}.1:5160 SIP/2.0",
            f"Via: SIP/2.0/UDP {CALLER}:6020;branch=z9hG4bK-malformed",
            f"From: <sip:caller@{CALLER}>;tag=1",
            f"To: <sip:{numbered(1)}@{NET}.1>",
            "Call-ID: malformed-1",
            "CSeq: 1 BYE",
            "Max-Forwards: 70",
            "Content-Length: 0",
        ],
        6020,
    )
    assert reply.startswith("SIP/2.0 400")


def send_raw(node: str, host: str, lines: list[str], port: int) -> str:
    import socket

    target_host, target_port = node.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3)
    try:
        sock.bind((host, port))
        sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), (target_host, int(target_port)))
        return sock.recv(4096).decode(errors="replace")
    finally:
        sock.close()


def test_register_with_wrong_credentials_is_refused(node: DivertNode, workdir: Path):
    """No credentials: 401 challenge; wrong password: 403; nothing registered."""
    wrong = register(
        workdir,
        "register",
        NODE,
        "alice",
        "acme",
        f"{NET}.31:5071",
        300,
        "not-her-password",
        final=403,
    )
    assert wrong.wait() == 0, wrong.diagnostics()
    assert "alice@acme" not in node.kamcmd("ul.dump")


def test_unauthenticated_call_from_a_stranger_is_challenged_not_routed(
    node: DivertNode, workdir: Path
):
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, CARRIER_1)
    stranger = subscriber_call(
        workdir, "caller", NODE, numbered(13), 403, f"{NET}.32:6030", "alice", "acme", "guessing"
    )
    finish(carrier, caller=stranger, node=node)
    assert carrier.received() == []


def test_internal_and_external_callers_take_different_rules(node: DivertNode, workdir: Path):
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, CARRIER_1)
    internal = subscriber_call(
        workdir,
        "alice",
        NODE,
        numbered(13),
        200,
        f"{NET}.31:6031",
        "alice",
        "acme",
        ALICE_PASSWORD,
    )
    finish(carrier, caller=internal, node=node)
    (forwarded,) = carrier.received()
    assert forwarded.ruri_user == mobile(13)
    assert "reason=unconditional" in forwarded.header("Diversion")[0]
    # the carrier is told who called: alice's number (her From shows her extension)
    assert forwarded.header("P-Asserted-Identity") == [
        f"<sip:{numbered(8)}@divert.invalid;user=phone>"
    ]
    assert forwarded.header("From")[0].startswith('"alice" <sip:201@acme>')

    pbx = callee(workdir, "pbx", PBX_A, "answer")
    up(node, PBX_A)
    external = call(workdir, "external", NODE, numbered(13), 200, f"{CALLER}:6032")
    finish(pbx, caller=external, node=node)
    (rung,) = pbx.received()
    assert rung.ruri_user == numbered(13) and rung.header("Diversion") == []


def test_operator_return_applies_to_external_callers_only(node: DivertNode, workdir: Path):
    pbx = callee(workdir, "pbx", PBX_A, "reply", code=486, reason="Busy Here")
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, PBX_A, CARRIER_1)
    external = call(workdir, "external", NODE, numbered(14), 200, f"{CALLER}:6033")
    finish(pbx, carrier, caller=external, node=node)
    (to_operator,) = carrier.received()
    assert to_operator.ruri_user == OPERATOR
    assert "reason=user-busy" in to_operator.header("Diversion")[0]

    pbx = callee(workdir, "pbx2", PBX_A, "reply", code=486, reason="Busy Here")
    up(node, PBX_A)
    internal = subscriber_call(
        workdir,
        "alice",
        NODE,
        numbered(14),
        486,
        f"{NET}.31:6034",
        "alice",
        "acme",
        ALICE_PASSWORD,
    )
    finish(pbx, caller=internal, node=node)
    assert len(pbx.received()) >= 1


def test_three_devices_ring_at_once_then_no_answer_forwards(node: DivertNode, workdir: Path):
    devices = [f"{NET}.{33 + i}:5070" for i in range(3)]
    for index, device in enumerate(devices):
        registered = register(
            workdir, f"register-{index}", NODE, "carol", "acme", device, 300, CAROL_PASSWORD
        )
        assert registered.wait() == 0, registered.diagnostics()
    phones = [callee(workdir, f"phone-{i}", device, "ring") for i, device in enumerate(devices)]
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, CARRIER_1)
    caller = call(workdir, "caller", NODE, numbered(15), 200, f"{CALLER}:6040")
    finish(*phones, carrier, caller=caller, node=node)
    assert caller.lasted() >= 2.0
    rung = [phone.received()[0] for phone in phones]
    assert {r.request_line.split()[1] for r in rung} == {f"sip:carol@{d}" for d in devices}
    assert all(len(phone.received("CANCEL")) == 1 for phone in phones)
    assert carrier.received()[0].ruri_user == mobile(15)
    for index, device in enumerate(devices):
        gone = register(
            workdir, f"unregister-{index}", NODE, "carol", "acme", device, 0, CAROL_PASSWORD
        )
        assert gone.wait() == 0, gone.diagnostics()


def test_a_forward_applies_only_while_its_time_mode_is_in_force(node: DivertNode, workdir: Path):
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    up(node, CARRIER_1)
    caller = call(workdir, "caller", NODE, numbered(16), 200, f"{CALLER}:6050")
    finish(carrier, caller=caller, node=node)
    assert carrier.received()[0].ruri_user == mobile(16)  # "night" is in force all day

    node.divert("schedule", "delete", "1")
    time.sleep(1.5)  # the sync worker polls the SQLite portal every second
    pbx = callee(workdir, "pbx", PBX_A, "answer")
    up(node, PBX_A)
    caller = call(workdir, "caller2", NODE, numbered(16), 200, f"{CALLER}:6051")
    finish(pbx, caller=caller, node=node)
    assert pbx.received()[0].ruri_user == numbered(16)  # no mode: the forward rests


def test_extension_call_carries_the_callers_extension_and_name(node: DivertNode, workdir: Path):
    registered = register(workdir, "register", NODE, "alice", "acme", PHONE, 300, ALICE_PASSWORD)
    assert registered.wait() == 0, registered.diagnostics()
    phone = callee(workdir, "alice-phone", PHONE, "answer")
    carol = subscriber_call(
        workdir, "carol", NODE, "201", 200, f"{NET}.36:6060", "carol", "acme", CAROL_PASSWORD
    )
    finish(phone, caller=carol, node=node)
    (rung,) = phone.received()
    assert rung.request_line.startswith(f"INVITE sip:alice@{PHONE}")
    assert rung.header("From")[0].startswith('"Carol" <sip:203@acme>')
    assert len(phone.received("BYE")) == 1  # the dialog survived the From rewrite
    gone = register(workdir, "unregister", NODE, "alice", "acme", PHONE, 0, ALICE_PASSWORD)
    assert gone.wait() == 0, gone.diagnostics()


def _burst(source: str, port: int, count: int) -> int:
    """Send `count` OPTIONS at once from `source`; how many were answered in 2 s."""
    import socket

    host, node_port = NODE.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, port))
    sock.settimeout(0.2)
    try:
        for index in range(count):
            request = "\r\n".join(
                [
                    f"OPTIONS sip:{host}:{node_port} SIP/2.0",
                    f"Via: SIP/2.0/UDP {source}:{port};branch=z9hG4bK-flood-{port}-{index}",
                    f"From: <sip:flood@{source}>;tag={index}",
                    f"To: <sip:{host}>",
                    f"Call-ID: flood-{port}-{index}",
                    "CSeq: 1 OPTIONS",
                    "Max-Forwards: 70",
                    "Content-Length: 0",
                    "",
                    "",
                ]
            )
            sock.sendto(request.encode(), (host, int(node_port)))
        answered = 0
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                answered += sock.recv(4096).startswith(b"SIP/2.0 200")
            except TimeoutError:
                continue
        return answered
    finally:
        sock.close()


def test_a_flood_from_an_unknown_source_is_cut_off_but_not_from_a_carrier(node: DivertNode):
    assert _burst(f"{NET}.60", 6070, 100) <= 40
    assert _burst(CALLER, 6071, 100) == 100


def test_slow_actions_raise_no_alert_that_would_fail_the_python_routes(node: DivertNode):
    # kamailio-cfg/kamailio.cfg: with a limit set, any KSR action slower than
    # it returns into Python with an exception pending and the call gets 500
    assert node.kamcmd("cfg.get", "core", "latency_limit_action").strip() == "0"
