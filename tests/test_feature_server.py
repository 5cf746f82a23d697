"""The feature server against a real portal: answers, retransmissions, who
may ask, and codes queued while the portal is down, delivered in order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from divert.cli import main
from divert.features.server import FeatureConfig, FeatureServer
from tests.conftest import portal_reachable

KAMAILIO = ("127.0.0.1", 5160)
TARGET = "+393351000077"


def invite(dialled: str, call_id: str, subscriber: str = "alice@acme") -> bytes:
    lines = [
        f"INVITE sip:{dialled}@acme SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:5160;branch=z9hG4bK-1",
        "Via: SIP/2.0/UDP 127.0.0.37:7000;branch=z9hG4bK-phone",
        "From: <sip:alice@acme>;tag=abc",
        f"To: <sip:{dialled}@acme>",
        f"Call-ID: {call_id}",
        "CSeq: 2 INVITE",
        f"X-Divert-Subscriber: {subscriber}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


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


def test_only_kamailio_may_ask(server: FeatureServer, portal_url: str):
    assert server.handle(invite(f"*72{TARGET}", "c2"), ("127.0.0.50", 5060)) is None
    no_vouch = invite(f"*72{TARGET}", "c3").replace(b"X-Divert-Subscriber: alice@acme\r\n", b"")
    assert status(server.handle(no_vouch, KAMAILIO)).startswith("SIP/2.0 403")
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
