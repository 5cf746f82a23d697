"""Feature codes as Kamailio's async workers carry them out
(`divert.features.task`), against a real portal: nothing changes before
the commit, a rolled-back code changes nothing, refusals write nothing,
and codes dialled while the portal is down are queued and delivered in
order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from divert.cli import main
from divert.features.delivery import deliver
from divert.features.task import FeatureCodes
from tests.conftest import portal_reachable

TARGET = "+393351000077"


def forwards_of_alice(url: str) -> list[tuple[str, str]]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT condition, dest_value FROM forwards ORDER BY id")
        ).all()
    engine.dispose()
    return [(c, v) for c, v in rows]


def add_alice(url: str) -> None:
    for args in [
        ("tenant", "add", "acme", "--region", "IT"),
        ("subscriber", "add", "alice", "--tenant", "acme", "--password", "alice-secret"),
    ]:
        assert main(["--portal", url, *args]) == 0


@pytest.fixture
def codes(portal_url: str, tmp_path: Path) -> Iterator[FeatureCodes]:
    add_alice(portal_url)
    made = FeatureCodes(portal_url, tmp_path)
    yield made
    made.close()


def test_a_code_changes_the_portal_only_when_committed(codes: FeatureCodes, portal_url: str):
    pending = codes.begin("alice@acme", f"*72{TARGET}")
    assert (pending.answer.code, pending.answer.reason) == (
        480,
        f"Forwarding Activated (always) to {TARGET}",
    )
    answer = pending.commit()
    assert answer == pending.answer
    assert forwards_of_alice(portal_url) == [("always", TARGET)]


def test_a_code_rolled_back_changes_nothing(codes: FeatureCodes, portal_url: str):
    pending = codes.begin("alice@acme", f"*90{TARGET}")
    assert pending.answer.code == 480
    pending.rollback()
    assert forwards_of_alice(portal_url) == []
    # and the worker goes on: the next code is carried out
    codes.begin("alice@acme", f"*52{TARGET}").commit()
    assert forwards_of_alice(portal_url) == [("not-registered", TARGET)]


@pytest.mark.parametrize(
    ("dialled", "answer"),
    [
        ("*72+39899123456", "403 Forwarding Refused: "),
        ("*4711", "404 Unknown Feature Code"),
    ],
)
def test_a_refused_code_writes_nothing(
    codes: FeatureCodes, portal_url: str, dialled: str, answer: str
):
    pending = codes.begin("alice@acme", dialled)
    assert f"{pending.answer.code} {pending.answer.reason}".startswith(answer)
    assert pending.commit() == pending.answer
    assert forwards_of_alice(portal_url) == []
    assert codes.queue.count() == 0


@pytest.mark.postgres
def test_codes_dialled_while_the_portal_is_down_are_delivered_in_order(pg_url: str, tmp_path: Path):
    add_alice(pg_url)
    codes = FeatureCodes(pg_url, tmp_path)
    try:
        portal_reachable(pg_url, False)
        rolled_back = codes.begin("alice@acme", "*72+393351000099")
        assert rolled_back.answer.reason.startswith("Forwarding Queued")  # no store to check by
        rolled_back.rollback()  # the phone gave up: not queued
        for code in [f"*90{TARGET}", "*91", "*72+393351000088"]:
            pending = codes.begin("alice@acme", code)
            assert pending.commit().reason.startswith("Forwarding Queued")
        assert [row.dialled for row in codes.queue.pending()] == [
            f"*90{TARGET}",
            "*91",
            "*72+393351000088",
        ]
        with pytest.raises(SQLAlchemyError):
            deliver(codes.queue, codes.engine)  # still down: nothing lost
        assert codes.queue.count() == 3
        portal_reachable(pg_url, True)
        codes._portal_rests_until = 0.0  # as PORTAL_REST seconds after the failure
        # the next code first delivers the queue, then is carried out itself
        after = codes.begin("alice@acme", f"*52{TARGET}")
        assert after.commit().reason == f"Forwarding Activated (not-registered) to {TARGET}"
        assert codes.queue.count() == 0
        # in order: busy set, busy cancelled, always set, then not-registered
        assert forwards_of_alice(pg_url) == [
            ("always", "+393351000088"),
            ("not-registered", TARGET),
        ]
    finally:
        portal_reachable(pg_url, True)
        codes.close()


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


def test_star_78_and_star_79_set_the_subscribers_presence(codes: FeatureCodes, portal_url: str):
    def away() -> bool:
        engine = create_engine(portal_url.replace("postgresql://", "postgresql+psycopg://"))
        with engine.connect() as connection:
            value = connection.execute(text("SELECT away FROM subscribers")).scalar_one()
        engine.dispose()
        return bool(value)

    assert codes.begin("alice@acme", "*78").commit().reason == "Away"
    assert away()
    assert codes.begin("alice@acme", "*79").commit().reason == "Present"
    assert not away()


def test_a_code_the_portal_errs_on_is_set_aside_and_the_rest_delivered(
    codes: FeatureCodes, portal_url: str, monkeypatch: pytest.MonkeyPatch
):
    from sqlalchemy.exc import DataError

    from divert.features import delivery

    codes.queue.add("alice@acme", "*78", 1.0, None)
    codes.queue.add("alice@acme", f"*72{TARGET}", 2.0, None)
    real = delivery._deliver

    def poisoned(row, engine):  # type: ignore[no-untyped-def]
        if row.dialled == "*78":
            raise DataError("UPDATE subscribers", {}, Exception("value too long"))
        return real(row, engine)

    monkeypatch.setattr(delivery, "_deliver", poisoned)
    assert deliver(codes.queue, codes.engine) is True
    assert forwards_of_alice(portal_url) == [("always", TARGET)]
    failed = codes.queue.db.execute("SELECT dialled, reason FROM failed").fetchall()
    assert [(d, r.split(":")[0]) for d, r in failed] == [("*78", "DataError")]


def test_a_queue_commit_that_fails_leaves_no_transaction_open(codes: FeatureCodes):
    import sqlite3

    real = codes.queue.db

    class FullDisk:
        """The queue's connection, whose COMMIT fails as on a full disk."""

        in_transaction = property(lambda self: real.in_transaction)

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql == "COMMIT":
                raise sqlite3.OperationalError("database or disk is full")
            return real.execute(sql, *args)

    codes.queue.hold("alice@acme", "*73", 1.0, None)
    codes.queue.db = FullDisk()  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError):
        codes.queue.commit()
    assert not real.in_transaction  # rolled back: the next code can be queued
    codes.queue.db = real
    codes.queue.add("alice@acme", "*73", 2.0, None)
    assert [row.received_at for row in codes.queue.pending()] == [2.0]


def test_a_code_without_its_number_says_so(codes: FeatureCodes, portal_url: str):
    pending = codes.begin("alice@acme", "*72")
    assert (pending.answer.code, pending.answer.reason) == (
        484,
        "Number Missing: dial *72 then the number",
    )
    assert forwards_of_alice(portal_url) == []
