"""The feature server against a real portal: answers, retransmissions, who
may ask, and codes queued while the portal is down, delivered in order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from divert.cli import main
from divert.features.server import FeatureConfig, FeatureServer
from divert.kemi.signing import ensure_key, load_key, subscriber_voucher
from tests.conftest import portal_reachable

KAMAILIO = ("127.0.0.1", 5160)
TARGET = "+393351000077"


def invite(dialled: str, call_id: str, vouched: str | None = None) -> bytes:
    """A code as Kamailio relays it: `vouched` is X-Divert-Subscriber's value
    (by default alice@acme with the node's voucher for this code and Call-ID)."""
    if vouched is None:
        vouched = f"alice@acme;mac={_voucher('alice@acme', dialled, call_id)}"
    lines = [
        f"INVITE sip:{dialled}@acme SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5160;branch=z9hG4bK-1",
        "Via: SIP/2.0/UDP 127.0.0.37:7000;branch=z9hG4bK-phone",
        "From: <sip:alice@acme>;tag=abc",
        f"To: <sip:{dialled}@acme>",
        f"Call-ID: {call_id}",
        "CSeq: 2 INVITE",
        f"X-Divert-Subscriber: {vouched}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


_STATE: list[Path] = []


def _voucher(aor: str, dialled: str, call_id: str) -> str:
    return subscriber_voucher(load_key(_STATE[-1]), aor, dialled, call_id)


@pytest.fixture(autouse=True)
def node_key(tmp_path: Path) -> Iterator[None]:
    """The node key in the test's state folder, as `divert run` makes it."""
    ensure_key(tmp_path)
    _STATE.append(tmp_path)
    yield
    _STATE.pop()


def status(response: bytes | None) -> str:
    assert response is not None
    return response.decode().split("\r\n", 1)[0]


@pytest.fixture
def server(portal_url: str, tmp_path: Path) -> Iterator[FeatureServer]:
    for args in [
        ("tenant", "add", "acme", "--region", "IT"),
        (
            "subscriber",
            "add",
            "alice",
            "--tenant",
            "acme",
            "--password",
            "alice-secret",
            "--extension",
            "201",
        ),
    ]:
        assert main(["--portal", portal_url, *args]) == 0
    running = FeatureServer(FeatureConfig(portal_url, ("127.0.0.1", 0), KAMAILIO[0], tmp_path))
    yield running
    running.queue.close()
    if running._engine is not None:
        running._engine.dispose()


def forwards_of_alice(url: str) -> list[tuple[str, str]]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT condition, dest_value FROM forwards ORDER BY id")
        ).all()
    engine.dispose()
    return [(c, v) for c, v in rows]


def test_a_code_is_answered_and_applied_once_despite_retransmissions(
    server: FeatureServer, portal_url: str
):
    first = server.handle(invite(f"*72{TARGET}", "c1"), KAMAILIO)
    again = server.handle(invite(f"*72{TARGET}", "c1"), KAMAILIO)
    assert status(first) == f"SIP/2.0 480 Forwarding Activated (always) to {TARGET}"
    assert again == first
    assert forwards_of_alice(portal_url) == [("always", TARGET)]
    reply = first.decode()
    assert (
        "Via: SIP/2.0/UDP 127.0.0.1:5160;branch=z9hG4bK-1\r\nVia: SIP/2.0/UDP 127.0.0.37" in reply
    )
    assert "To: <sip:*72+393351000077@acme>;tag=divert-features" in reply


def test_only_kamailio_may_ask_and_only_with_the_nodes_voucher(
    server: FeatureServer, portal_url: str
):
    assert server.handle(invite(f"*72{TARGET}", "c2"), ("127.0.0.50", 5060)) is None
    code = f"*72{TARGET}"
    forgeries = {  # Call-ID: X-Divert-Subscriber (each its own call: no cached answer)
        "f1": "alice@acme",  # what a forged header looked like before vouchers
        "f2": "alice@acme;mac=",
        "f3": "alice@acme;mac=00112233445566778899aabb",
        "f4": f"alice@acme;mac={_voucher('alice@acme', '*73', 'f4')}",  # another code's
        "f5": f"alice@acme;mac={_voucher('alice@acme', code, 'elsewhere')}",  # another call's
        "f6": f"bob@acme;mac={_voucher('alice@acme', code, 'f6')}",  # somebody else's
        "f9": f"alice@acme;mac={'é' * 24}",  # not even ASCII
    }
    for call_id, vouched in forgeries.items():
        forged = invite(code, call_id, vouched)
        assert status(server.handle(forged, KAMAILIO)) == (
            "SIP/2.0 403 Forwarding Refused: not authenticated"
        ), vouched
    valid = f"alice@acme;mac={_voucher('alice@acme', code, 'f7')}"
    folded = invite(code, "f7", "bob@acme").replace(
        b"X-Divert-Subscriber", f"Subject: hi\r\n X-Divert-Subscriber: {valid}\r\nX-D".encode()
    )
    twice = invite(code, "f8", valid).replace(
        b"X-Divert-Subscriber", f"X-Divert-Subscriber: {valid}\r\nX-Divert-Subscriber".encode()
    )
    for forged in (folded, twice):  # a header folded into another, or a second one
        assert status(server.handle(forged, KAMAILIO)).startswith("SIP/2.0 403"), forged
    no_header = invite(f"*72{TARGET}", "c4", "").replace(b"X-Divert-Subscriber: \r\n", b"")
    assert status(server.handle(no_header, KAMAILIO)).startswith("SIP/2.0 403")
    assert forwards_of_alice(portal_url) == []


@pytest.mark.postgres
def test_codes_dialled_while_the_portal_is_down_are_delivered_in_order(pg_url: str, tmp_path: Path):
    for args in [
        ("tenant", "add", "acme", "--region", "IT"),
        ("subscriber", "add", "alice", "--tenant", "acme", "--password", "alice-secret"),
    ]:
        assert main(["--portal", pg_url, *args]) == 0
    server = FeatureServer(FeatureConfig(pg_url, ("127.0.0.1", 0), KAMAILIO[0], tmp_path))
    try:
        portal_reachable(pg_url, False)
        for index, code in enumerate([f"*90{TARGET}", "*91", "*72+393351000088"]):
            answer = status(server.handle(invite(code, f"q{index}"), KAMAILIO))
            assert answer.startswith("SIP/2.0 480 Forwarding Queued")
        assert server.pending() == 3
        assert server.deliver_queue() is False  # still down: nothing lost
        portal_reachable(pg_url, True)
        assert server.deliver_queue() is True
        # in order: busy set, busy cancelled, then always set
        assert forwards_of_alice(pg_url) == [("always", "+393351000088")]
    finally:
        portal_reachable(pg_url, True)
        server.queue.close()
        if server._engine is not None:
            server._engine.dispose()


def test_star_20_and_star_11_set_the_tenants_mode_override(portal_url: str):
    from datetime import UTC, datetime

    from divert.db import open_portal
    from divert.features.apply import carry_out

    for args in [
        ("tenant", "add", "shop", "--region", "FR", "--code-profile", "vpbx"),
        ("subscriber", "add", "dave", "--tenant", "shop", "--password", "dave-secret1"),
        (
            "schedule",
            "add",
            "--tenant",
            "shop",
            "--mode",
            "open",
            "--days",
            "mon-fri",
            "--from",
            "08:00",
            "--to",
            "12:00",
        ),
        (
            "schedule",
            "add",
            "--tenant",
            "shop",
            "--mode",
            "closed",
            "--days",
            "mon-fri",
            "--from",
            "12:00",
            "--to",
            "13:30",
        ),
    ]:
        assert main(["--portal", portal_url, *args]) == 0
    monday_1145 = datetime(2026, 11, 23, 11, 45, tzinfo=UTC).timestamp()
    engine = open_portal(portal_url)
    try:
        with engine.begin() as connection:
            answer = carry_out(connection, "dave@shop", "*20", now=monday_1145)
        assert (answer.code, answer.reason) == (480, "Mode closed until 13:30")
        with engine.connect() as connection:
            mode, until = connection.execute(
                text("SELECT mode_override, mode_override_until FROM tenants")
            ).one()
        assert mode == "closed"
        assert str(until).startswith("2026-11-23 13:30")
        reasons = []
        for _ in range(3):
            with engine.begin() as connection:
                reasons.append(carry_out(connection, "dave@shop", "*11", now=monday_1145).reason)
        assert reasons == ["Mode open (manual)", "Mode closed (manual)", "Modes Automatic"]
    finally:
        engine.dispose()


def test_a_datagram_that_fails_does_not_end_the_server(
    server: FeatureServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    import socket

    original = server.handle
    calls: list[bytes] = []

    def failing_first(data: bytes, source: tuple[str, int]) -> bytes | None:
        calls.append(data)
        if len(calls) == 1:
            raise TypeError("a fault in one request")
        return original(data, source)

    monkeypatch.setattr(server, "handle", failing_first)
    listening = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    kamailio = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        listening.bind(("127.0.0.1", 0))
        kamailio.bind(("127.0.0.1", 0))
        kamailio.settimeout(3)
        for call_id in ("boom", "fine"):
            kamailio.sendto(invite(f"*72{TARGET}", call_id), listening.getsockname())
            server.answer(listening)
        assert kamailio.recv(4096).startswith(b"SIP/2.0 480 Forwarding Activated")
    finally:
        listening.close()
        kamailio.close()
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "a request failed: TypeError: a fault in one request"
    ]
