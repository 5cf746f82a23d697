"""Phone feature codes through Kamailio and its async workers (seeds 000, 002)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    ALICE_PASSWORD,
    CALLER,
    CARRIER_1,
    NODE,
    PHONE_SOURCE,
    DivertNode,
    dial,
    numbered,
    store_rules,
    wait_for_store,
)
from tests.e2e.net import NET
from tests.e2e.sip import call, callee, subscriber_call, subscriber_cancel

TARGET = "+393351000077"


@pytest.fixture
def clean(node: DivertNode, workdir: Path) -> Iterator[DivertNode]:
    """Alice without forwards of her own, before and after the test."""
    dial(node, workdir, "*73", 480, 7000)
    assert node.subscriber_forwards("alice") == []
    yield node
    dial(node, workdir, "*73", 480, 7099)


def test_forward_all_then_cancel_all_changes_the_next_call(clean: DivertNode, workdir: Path):
    node = clean
    status = dial(node, workdir, f"*72{TARGET}", 480, 7001)
    assert status == f"SIP/2.0 480 Forwarding Activated (always) to {TARGET}"
    assert node.subscriber_forwards("alice") == [("always", TARGET)]
    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(CARRIER_1, active=True)
    caller = call(workdir, "caller", NODE, numbered(8), 200, f"{CALLER}:6080")
    assert caller.wait() == 0, caller.diagnostics()
    carrier.stop()
    assert carrier.received()[0].ruri_user == TARGET

    assert dial(node, workdir, "*73", 480, 7002) == "SIP/2.0 480 All Forwarding Cancelled"
    assert node.subscriber_forwards("alice") == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (f"*90{TARGET}", [("busy", TARGET)]),
        (f"*52{TARGET}", [("not-registered", TARGET)]),
        (f"*1{TARGET}", [("always", TARGET)]),
        ("*1 0039 335 1000077".replace(" ", ""), [("always", TARGET)]),
    ],
)
def test_each_setting_code_appears_in_the_portal(
    clean: DivertNode, workdir: Path, code: str, expected: list[tuple[str, str]]
):
    status = dial(clean, workdir, code, 480, 7010)
    assert status.startswith("SIP/2.0 480 Forwarding Activated")
    assert clean.subscriber_forwards("alice") == expected
    assert wait_for_store(clean, expected) == expected  # what the next call routes by


@pytest.mark.parametrize(
    ("setting", "cancelling", "left"),
    [
        ("*90", "*91", [("not-registered", TARGET)]),
        ("*52", "*53", [("busy", TARGET)]),
        ("*90", "*2", []),
    ],
)
def test_each_cancelling_code(
    clean: DivertNode, workdir: Path, setting: str, cancelling: str, left: list[tuple[str, str]]
):
    dial(clean, workdir, f"*90{TARGET}", 480, 7020)
    dial(clean, workdir, f"*52{TARGET}", 480, 7021)
    status = dial(clean, workdir, cancelling, 480, 7022)
    assert "Cancelled" in status
    assert clean.subscriber_forwards("alice") == left
    assert wait_for_store(clean, left) == left


def test_premium_rate_destination_is_refused_and_says_so(clean: DivertNode, workdir: Path):
    status = dial(clean, workdir, "*72+39899123456", 403, 7030)
    assert status.startswith("SIP/2.0 403 Forwarding Refused:")
    assert "premium-rate" in status
    assert clean.subscriber_forwards("alice") == []


def test_looping_destination_is_refused_and_says_so(clean: DivertNode, workdir: Path):
    status = dial(clean, workdir, f"*72{numbered(8)}", 403, 7031)  # her own number
    assert "loop" in status
    assert clean.subscriber_forwards("alice") == []


def test_a_code_from_someone_who_cannot_authenticate_changes_nothing(
    clean: DivertNode, workdir: Path
):
    dial(clean, workdir, f"*72{TARGET}", 403, 7040, password="wrong-password")
    assert clean.subscriber_forwards("alice") == []


def test_unknown_code(clean: DivertNode, workdir: Path):
    assert dial(clean, workdir, "*99", 404, 7050).startswith("SIP/2.0 404 Unknown Feature Code")


def test_the_node_routes_by_a_code_at_once(clean: DivertNode, workdir: Path):
    """The async worker wakes the sync worker: no poll interval to wait."""
    dial(clean, workdir, f"*72{TARGET}", 480, 7060)
    started = time.monotonic()
    while time.monotonic() - started < 1.0:
        table = store_rules(clean)
        if ("always", TARGET) in table:
            break
        time.sleep(0.02)
    assert ("always", TARGET) in store_rules(clean)


def test_codes_with_compact_header_names_are_each_carried_out(clean: DivertNode, workdir: Path):
    """Two codes in a row, each with compact header names (i:, f:, t:, v:):
    each gets its own answer and its own change."""
    first = dial(clean, workdir, f"*90{TARGET}", 480, 7080, compact=True)
    assert first == f"SIP/2.0 480 Forwarding Activated (busy) to {TARGET}"
    second = dial(clean, workdir, f"*52{TARGET}", 480, 7081, compact=True)
    assert second == f"SIP/2.0 480 Forwarding Activated (not-registered) to {TARGET}"
    assert clean.subscriber_forwards("alice") == [("busy", TARGET), ("not-registered", TARGET)]


def test_a_code_cancelled_before_its_answer_changes_nothing(clean: DivertNode, workdir: Path):
    """The portal is slow (another writer holds it for 2.5 s): the phone
    hangs up meanwhile, gets 200 for its CANCEL and 487 for the code, and
    the code, carried out once the portal answers, is rolled back."""
    import sqlite3
    import threading

    portal = sqlite3.connect(
        clean.portal.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False
    )
    portal.execute("BEGIN IMMEDIATE")  # the portal's writer lock, as a long write holds it
    # released after 2.5 s whatever the phone does: the code waits less than
    # its 3 s limit (a portal that failed would have the worker queue codes
    # for 10 s, and the tests after this one would see that)
    release = threading.Timer(2.5, lambda: portal.execute("ROLLBACK"))
    release.start()
    try:
        phone = subscriber_cancel(
            workdir,
            "cancel-7090",
            NODE,
            f"*72{TARGET}",
            f"{NET}.39:7090",  # pike counts per address: not the other tests' phone
            "alice",
            "acme",
            ALICE_PASSWORD,
            pause_ms=300,
        )
        assert phone.wait() == 0, f"{phone.diagnostics()}\n{clean.tail()}"
    finally:
        release.join()
        portal.close()
    replies = phone.replies()
    assert [reply[:11] for reply in replies[-2:]] == ["SIP/2.0 487", "SIP/2.0 200"], replies
    deadline = time.monotonic() + 10
    while "gave up on *72" not in clean.tail() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f"alice@acme gave up on *72{TARGET} before its answer: nothing changed" in clean.tail()
    assert clean.subscriber_forwards("alice") == []
    # the next code goes through as usual
    assert dial(clean, workdir, f"*72{TARGET}", 480, 7091).startswith("SIP/2.0 480 Forwarding")
    assert clean.subscriber_forwards("alice") == [("always", TARGET)]


def test_star_97_reaches_the_callers_own_voicemail(node: DivertNode, workdir: Path):
    from tests.e2e.conftest import VOICEMAIL

    mailbox = callee(workdir, "voicemail", VOICEMAIL, "answer")
    phone = subscriber_call(
        workdir,
        "dial-97",
        NODE,
        "*97",
        200,
        f"{PHONE_SOURCE}:7070",
        "alice",
        "acme",
        ALICE_PASSWORD,
    )
    assert phone.wait() == 0, f"{phone.diagnostics()}\n{node.tail()}"
    mailbox.stop()
    (reached,) = mailbox.received()
    assert reached.request_line.startswith(f"INVITE sip:alice@{VOICEMAIL}")


def test_star_20_and_star_11_switch_the_time_mode_from_the_phone(node: DivertNode, workdir: Path):
    """Tenant beta: 'open' for the hour around now, 'closed' otherwise; its
    number forwards only while closed.  *20 closes early, *11 steps modes."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import create_engine, text

    from tests.e2e.conftest import DAVE_PASSWORD, mobile

    now = datetime.now(UTC)
    start, end = ((now + timedelta(minutes=m)).strftime("%H:%M") for m in (-60, 60))
    engine = create_engine(node.portal)
    with engine.begin() as connection:
        connection.execute(
            text(
                "DELETE FROM schedules WHERE tenant_id = (SELECT id FROM tenants WHERE name='beta')"
            )
        )
    engine.dispose()
    node.divert(
        "schedule",
        "add",
        "--tenant",
        "beta",
        "--mode",
        "open",
        "--days",
        "all",
        "--from",
        start,
        "--to",
        end,
    )
    node.divert(
        "schedule",
        "add",
        "--tenant",
        "beta",
        "--mode",
        "closed",
        "--days",
        "all",
        "--from",
        end,
        "--to",
        start,
    )
    time.sleep(1.5)  # the sync worker polls the SQLite portal every second

    def dave(code: str, port: int) -> str:
        phone = subscriber_call(
            workdir,
            f"dave-{port}",
            NODE,
            code,
            480,
            f"{PHONE_SOURCE}:{port}",
            "dave",
            "beta",
            DAVE_PASSWORD,
        )
        assert phone.wait() == 0, f"{phone.diagnostics()}\n{node.tail()}"
        return phone.replies()[-1]

    def routed(port: int, forwarded: bool) -> None:
        carrier = callee(workdir, f"carrier-{port}", CARRIER_1, "answer")
        node.wait_trunk(CARRIER_1, active=True)
        caller = call(
            workdir,
            f"caller-{port}",
            NODE,
            numbered(17),
            200 if forwarded else 480,
            f"{CALLER}:{port}",
        )
        assert caller.wait() == 0, f"{caller.diagnostics()}\n{node.tail()}"
        carrier.stop()
        assert [r.ruri_user for r in carrier.received()] == ([mobile(17)] if forwarded else [])

    routed(6090, forwarded=False)  # open: dave is not registered, nothing forwards
    assert dave("*20", 7080) == f"SIP/2.0 480 Mode closed until {start}"
    routed(6091, forwarded=True)
    assert dave("*11", 7081) == "SIP/2.0 480 Mode open (manual)"
    routed(6092, forwarded=False)
    assert dave("*11", 7082) == "SIP/2.0 480 Mode closed (manual)"
    assert dave("*11", 7083) == "SIP/2.0 480 Modes Automatic"
