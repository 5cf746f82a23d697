"""The sync worker against real portals (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url

from divert.kemi.core.model import EndpointKind
from divert.kemi.store.format import META_POSITION
from divert.kemi.store.reader import StoreReader
from divert.loops import find_loop
from divert.sync import journal
from divert.sync.status import as_text, read_status
from tests.conftest import PG_ADMIN_URL
from tests.sync_helpers import Node, insert_forward, seed

A, ALICE, BOB = "+390212345678", "+390287654321", "+390211112222"
MOBILE = "+393351112233"
VOICEMAIL = "+393359998877"


@pytest.fixture
def node(portal_url: str, tmp_path: Path) -> Iterator[Node]:
    synced = Node(portal_url, tmp_path / "state")
    seed(synced)
    synced.sync()
    yield synced
    synced.close()


def test_full_sync_writes_every_kind_of_record(node: Node):
    table = node.table(A)
    assert table is not None
    assert table.endpoint.kind is EndpointKind.TRUNK
    assert node.destinations(A) == [("trunk-down", "+393331234567")]
    alice = node.table(ALICE)
    assert alice is not None and alice.endpoint.ref == "alice@acme"
    sub = node.table("sub:alice@acme")
    assert sub is not None and sub.identity == ALICE
    record = node.reader.subscriber("alice@acme")
    assert record is not None and record.extension == "201" and len(record.ha1) == 32
    trunk = node.reader.trunk_at("127.0.0.20:5060")
    assert trunk is not None and trunk.name == "pbx"
    assert node.reader.trunk_at("127.0.0.21:5060") is None


def test_forward_add_change_delete_arrive(node: Node):
    node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
    node.sync()
    assert ("busy", MOBILE) in node.destinations(A)
    node.divert("forward", "set", "1", "--to", "+393359998877")
    node.sync()
    assert ("busy", "+393359998877") in node.destinations(A)
    node.divert("forward", "delete", "1")
    node.sync()
    assert node.destinations(A) == [("trunk-down", "+393331234567")]


def test_subscriber_forward_reaches_all_its_keys(node: Node):
    node.divert(
        "forward",
        "add",
        "--subscriber",
        "alice",
        "--tenant",
        "acme",
        "--when",
        "not-registered",
        "--to",
        "voicemail",
    )
    node.sync()
    assert node.destinations(ALICE) == [("not-registered", "vm:alice@acme")]
    assert node.destinations("sub:alice@acme") == [("not-registered", "vm:alice@acme")]
    mailbox = node.table("vm:alice@acme")
    assert mailbox is not None and mailbox.endpoint.ref == "sip:alice@127.0.0.1:5090"


def test_number_add_and_delete_arrive(node: Node):
    node.divert("number", "add", "+390233334444", "--tenant", "acme", "--trunk", "pbx")
    node.sync()
    assert node.table("+390233334444") is not None
    node.divert("number", "delete", "+390233334444")
    node.sync()
    assert node.table("+390233334444") is None


def test_subscriber_add_change_delete_arrive(node: Node):
    node.divert(
        "subscriber",
        "add",
        "carol",
        "--tenant",
        "acme",
        "--password",
        "carol-secret",
        "--extension",
        "203",
    )
    node.sync()
    carol = node.reader.subscriber("carol@acme")
    assert carol is not None and carol.extension == "203"
    node.sql(
        "UPDATE subscribers SET ha1 = :ha1, display_name = 'Carol' WHERE username = 'carol'",
        ha1="0" * 32,
    )
    node.sync()
    changed = node.reader.subscriber("carol@acme")
    assert changed is not None and changed.ha1 == "0" * 32 and changed.display_name == "Carol"
    node.divert("subscriber", "delete", "carol", "--tenant", "acme")
    node.sync()
    assert node.reader.subscriber("carol@acme") is None
    assert node.table("sub:carol@acme") is None


def test_a_subscribers_caller_id_follows_its_numbers_and_the_operators_choice(node: Node):
    second = "+390233334444"

    def caller_id() -> str | None:
        record = node.reader.subscriber("alice@acme")
        assert record is not None
        return record.caller_id

    assert caller_id() == ALICE  # the only number she has
    node.divert("number", "add", second, "--tenant", "acme", "--subscriber", "alice")
    node.sync()
    assert caller_id() == ALICE  # still the first given
    node.divert("subscriber", "set", "alice", "--tenant", "acme", "--caller-id", second)
    node.sync()
    assert caller_id() == second
    node.divert("policy", "set", "--deny-prefixes", "+39899")  # a full resync agrees
    node.sync()
    assert caller_id() == second
    node.sql(
        "UPDATE numbers SET subscriber_id = (SELECT id FROM subscribers WHERE username = "
        "'bob') WHERE e164 = :e164",
        e164=second,
    )  # moved with plain SQL
    node.sync()
    assert caller_id() == ALICE
    node.divert("number", "delete", ALICE)
    node.sync()
    assert caller_id() is None


def test_the_store_keeps_the_policy_and_every_countrys_number_patterns(node: Node):
    node.divert("policy", "set", "--allow-countries", "39", "--deny-prefixes", "+39335")
    node.sync()
    policy = node.reader.policy()
    assert policy is not None
    assert policy.refusal("+390212345678") is None
    assert policy.refusal("+39899123456") == "it is a premium-rate number"
    assert policy.refusal("+393351112233") == "prefix +39335 is denied"
    assert policy.refusal("+33612345678") == "its country is not among the allowed (+39)"
    assert policy.refusal("+3902") == "it is not a valid phone number"


def test_extension_change_retargets_forwards(node: Node):
    node.divert("forward", "add", A, "--when", "busy", "--to", "ext:202")
    node.sync()
    assert ("busy", "sub:bob@acme") in node.destinations(A)
    node.sql("UPDATE subscribers SET username = 'robert' WHERE username = 'bob'")
    node.sync()
    assert ("busy", "sub:robert@acme") in node.destinations(A)
    assert node.table("sub:bob@acme") is None
    assert node.reader.subscriber("bob@acme") is None


def test_trunk_add_change_delete_arrive(node: Node):
    node.divert("trunk", "add", "pbx2", "--tenant", "acme", "--address", "127.0.0.21:5070")
    node.sync()
    added = node.reader.trunk_at("127.0.0.21:5070")
    assert added is not None and added.name == "pbx2"
    node.sql("UPDATE trunks SET emergency = '+393337654321' WHERE name = 'pbx'")
    node.sql("UPDATE trunks SET addresses = '127.0.0.22:5070' WHERE name = 'pbx2'")
    node.sync()
    assert node.destinations(A) == [("trunk-down", "+393337654321")]
    assert node.reader.trunk_at("127.0.0.21:5070") is None
    assert node.reader.trunk_at("127.0.0.22:5070") is not None
    node.divert("trunk", "delete", "pbx2", "--tenant", "acme")
    node.sync()
    assert node.reader.trunk_at("127.0.0.22:5070") is None


def test_tenant_change_and_delete_arrive(node: Node):
    node.divert("tenant", "set", "acme", "--operator", "202")
    node.divert("forward", "add", A, "--when", "no-answer", "--to", "operator")
    node.divert("forward", "add", A, "--when", "busy", "--to", "voicemail")
    node.sync()
    assert ("no-answer", "sub:bob@acme") in node.destinations(A)
    node.divert(
        "tenant", "set", "acme", "--operator", "201", "--voicemail-uri", "sip:{mailbox}@vm2.test"
    )
    node.sync()
    assert ("no-answer", "sub:alice@acme") in node.destinations(A)
    mailbox = node.table(f"vm:{A}")
    assert mailbox is not None and mailbox.endpoint.ref == f"sip:{A}@vm2.test"
    for forward_id in ("1", "2"):
        node.divert("forward", "delete", forward_id)
    for number in (A, ALICE, BOB):
        node.divert("number", "delete", number)
    node.divert("tenant", "set", "acme", "--operator", "")
    for username in ("alice", "bob"):
        node.divert("subscriber", "delete", username, "--tenant", "acme")
    node.divert("trunk", "delete", "pbx", "--tenant", "acme")
    node.divert("tenant", "delete", "acme")
    node.sync()
    assert node.table(A) is None and node.table("sub:alice@acme") is None
    assert node.reader.trunk_at("127.0.0.20:5060") is None
    assert node.reader.subscriber("alice@acme") is None


def test_incremental_sync_is_not_a_full_resync(node: Node):
    before = node.full_syncs()
    node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
    node.sync()
    assert node.full_syncs() == before


def test_restart_resumes_from_the_stored_position(node: Node, tmp_path: Path):
    before = node.full_syncs()
    position = node.worker.writer.meta(META_POSITION)
    node.worker.close()
    node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
    restarted = Node(node.url, tmp_path / "state")
    try:
        assert restarted.worker.writer.meta(META_POSITION) == position
        restarted.sync()
        assert restarted.full_syncs() == before
        assert ("busy", MOBILE) in restarted.destinations(A)
    finally:
        restarted.close()
        node.worker = restarted.worker  # closed above; keep the fixture's close harmless
        node.worker.writer = restarted.worker.writer


def test_bad_row_is_reported_skipped_and_the_key_keeps_its_last_good_version(node: Node):
    node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
    node.sync()
    good = node.destinations(A)
    insert_forward(node, A, "always", "number", "+39899123456")
    node.divert("forward", "add", BOB, "--when", "busy", "--to", MOBILE)
    node.sync()
    assert node.destinations(A) == good
    assert ("busy", MOBILE) in node.destinations(BOB)
    rejected = node.rejected()
    assert list(rejected) == ["forwards:2"]
    assert "premium-rate" in rejected["forwards:2"]
    status = as_text(read_status(node.state_dir, node.url))
    assert "rejected rows: 1" in status
    reason = "forwarding to +39899123456 is not allowed: it is a premium-rate number"
    assert f"forwards:2: {reason} (key {A} keeps its last good version)" in status
    node.sql("UPDATE forwards SET dest_value = '+393351119999' WHERE id = 2")
    node.sync()
    assert ("always", "+393351119999") in node.destinations(A)
    assert node.rejected() == {}


def test_bad_row_of_a_new_key_is_left_out(node: Node):
    node.divert("number", "add", "+390233334444", "--tenant", "acme", "--trunk", "pbx")
    insert_forward(node, "+390233334444", "busy", "extension", "299")
    node.sync()
    assert node.destinations("+390233334444") == [("trunk-down", "+393331234567")]
    assert "extension 299 does not exist" in next(iter(node.rejected().values()))


def test_loop_written_with_plain_sql_is_rejected(node: Node):
    node.divert("forward", "add", A, "--when", "always", "--to", BOB)
    node.sync()
    insert_forward(node, BOB, "always", "number", A)
    node.sync()
    assert "closes a loop" in node.rejected()["forwards:2"]
    assert find_loop(node.reader.table, [A, BOB], time.time()) is None


def test_full_sync_breaks_loops_too(portal_url: str, tmp_path: Path):
    fresh = Node(portal_url, tmp_path / "state")
    seed(fresh)
    fresh.divert("forward", "add", A, "--when", "always", "--to", BOB)
    insert_forward(fresh, BOB, "always", "number", A)
    fresh.sync()
    try:
        assert len(fresh.rejected()) == 1
        assert find_loop(fresh.reader.table, [A, BOB], time.time()) is None
    finally:
        fresh.close()


def test_tightened_policy_stops_denied_forwards_at_once(node: Node):
    node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
    node.sync()
    node.divert("policy", "set", "--deny-prefixes", "+39335")
    node.sync()
    assert ("busy", MOBILE) not in node.destinations(A)
    assert "prefix +39335 is denied" in node.rejected()["forwards:1"]


# -- running worker -------------------------------------------------------------------


class Running:
    """`SyncWorker.run` in a thread (the worker itself is single-threaded)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.stop = False
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        self.thread = threading.Thread(
            target=node.worker.run, args=(lambda: self.stop, (self.wake_read,))
        )

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop = True
        os.write(self.wake_write, b"x")
        self.thread.join(timeout=30)
        os.close(self.wake_read)
        os.close(self.wake_write)
        assert not self.thread.is_alive()


def wait_for(predicate, timeout: float = 20.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.mark.postgres
def test_listen_notify_wakes_the_worker(pg_url: str, tmp_path: Path):
    node = Node(pg_url, tmp_path / "state")
    node.worker.config = node.worker.config.__class__(pg_url, tmp_path / "state", poll_interval=60)
    seed(node)
    node.sync()
    try:
        with Running(node):
            time.sleep(0.5)  # the worker is now asleep on LISTEN, next poll in 60 s
            node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
            wait_for(lambda: ("busy", MOBILE) in node.destinations(A), timeout=30)
    finally:
        node.close()


@pytest.mark.postgres
def test_an_open_transaction_of_another_database_holds_no_change_back(pg_url: str, tmp_path: Path):
    """Transaction ids are the whole cluster's: another application's open
    transaction (here one in the admin database, holding an id) must not
    keep the portal's later changes out of the store until it ends."""
    node = Node(pg_url, tmp_path / "state")
    seed(node)
    node.sync()
    elsewhere = create_engine(PG_ADMIN_URL).connect()
    try:
        elsewhere.begin()
        elsewhere.execute(text("SELECT txid_current()"))  # an id, open
        node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
        node.sync()
        assert ("busy", MOBILE) in node.destinations(A)
    finally:
        elsewhere.rollback()
        elsewhere.close()
        node.close()


def write_no_answer_forward(portal: Connection, owner: str, to: str) -> None:
    """A no-answer forward written straight into the portal, in whatever
    transaction `portal` has open (a portal transaction left open)."""
    portal.execute(
        text(
            "INSERT INTO forwards (tenant_id, number_id, condition, callers, dest_kind, "
            "dest_value, position, enabled) SELECT tenant_id, id, 'no-answer', 'any', "
            "'number', :to, 0, true FROM numbers WHERE e164 = :owner"
        ),
        {"to": to, "owner": owner},
    )


@pytest.mark.postgres
def test_a_change_behind_an_open_portal_transaction_waits_for_it_and_both_arrive(
    pg_url: str, tmp_path: Path
):
    """An open transaction of the portal itself may still write journal rows
    with an older id: a change committed after it waits, and nothing is
    skipped once it commits, with an older one of another database open
    all along."""
    node = Node(pg_url, tmp_path / "state")
    seed(node)
    node.sync()
    elsewhere = create_engine(PG_ADMIN_URL).connect()
    portal = create_engine(pg_url).connect()
    try:
        elsewhere.begin()
        elsewhere.execute(text("SELECT txid_current()"))  # older than the portal's
        portal.begin()
        write_no_answer_forward(portal, ALICE, VOICEMAIL)
        node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
        node.sync()
        assert ("busy", MOBILE) not in node.destinations(A)  # behind the open one
        portal.commit()
        node.sync()
        assert ("busy", MOBILE) in node.destinations(A)
        assert ("no-answer", VOICEMAIL) in node.destinations(ALICE)
    finally:
        portal.close()
        elsewhere.rollback()
        elsewhere.close()
        node.close()


def synced(node: Node, key: str, destination: tuple[str, str]) -> bool:
    """One sync, then: has `destination` reached `key`?"""
    node.sync()
    return destination in node.destinations(key)


def _as_superuser(database: str, sql: str) -> None:
    """Run `sql` in `database` as a PostgreSQL superuser: the test server's
    postgres role over TCP (trust auth, as on the development machines), or
    through its local socket as the postgres user (root, as make test runs
    on a fresh machine).  Skips the test when neither works."""
    assert database, "a test database, never the shared admin one"
    url = make_url(PG_ADMIN_URL)
    host, port = url.host or "127.0.0.1", str(url.port or 5432)
    attempts = [["psql", "-h", host, "-p", port, "-U", "postgres"]]
    if os.geteuid() == 0 and host in ("127.0.0.1", "localhost"):
        attempts.append(["runuser", "-u", "postgres", "--", "psql", "-p", port])
    errors = []
    for command in attempts:
        try:
            done = subprocess.run(
                [*command, "-w", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            errors.append(str(error))
            continue
        if done.returncode == 0:
            return
        errors.append((done.stderr.strip().splitlines() or [""])[-1])
    pytest.skip(f"no PostgreSQL superuser reachable to change a right: {errors}")


@pytest.mark.postgres
def test_a_role_denied_pg_stat_activity_still_syncs_and_skips_nothing(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    """Where the portal's role may not read pg_stat_activity (revoked from
    PUBLIC, in the portal's database only), the worker falls back to the
    snapshot's xmin: changes still arrive, one warning says why they may
    wait, and an open portal transaction still holds a later change back
    until both arrive.  (Every open transaction of the cluster now holds
    changes back, other test workers' too: arrivals are waited for.)"""
    database = make_url(pg_url).database or ""
    probe = create_engine(pg_url)
    try:
        with probe.connect() as connection:
            role = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            if connection.scalar(text(role)):
                pytest.skip("the test role is a superuser: no right can be taken from it")
        _as_superuser(database, "REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC")
        with probe.connect() as connection, pytest.raises(Exception, match="permission denied"):
            connection.execute(text("SELECT count(*) FROM pg_stat_activity"))
    finally:
        probe.dispose()
    monkeypatch.setattr(journal, "_missing_said", ())  # said once per process
    caplog.set_level(logging.INFO, logger="divert.sync")
    node = Node(pg_url, tmp_path / "state")
    seed(node)
    node.sync()
    portal = create_engine(pg_url).connect()
    try:
        node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
        wait_for(lambda: synced(node, A, ("busy", MOBILE)), timeout=60)
        portal.begin()
        write_no_answer_forward(portal, ALICE, VOICEMAIL)
        node.divert("forward", "add", BOB, "--when", "busy", "--to", MOBILE)
        node.sync()
        assert ("busy", MOBILE) not in node.destinations(BOB)  # behind the open one
        portal.commit()
        wait_for(lambda: synced(node, BOB, ("busy", MOBILE)), timeout=60)
        assert ("no-answer", VOICEMAIL) in node.destinations(ALICE)
        said = [r for r in caplog.records if "pg_stat_activity" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING], said
        assert "lacks SELECT ON pg_stat_activity:" in said[0].getMessage()
        _as_superuser(database, "GRANT SELECT ON pg_catalog.pg_stat_activity TO PUBLIC")
        node.sync()
        said = [r for r in caplog.records if "pg_stat_activity" in r.getMessage()]
        assert [r.levelno for r in said] == [logging.WARNING, logging.INFO], said
    finally:
        portal.close()
        node.close()


def _terminate_backends(url: str) -> int:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        killed = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": make_url(url).database},
        ).scalar()
    admin.dispose()
    return int(killed or 0)


@pytest.mark.postgres
def test_dropped_portal_connections_lose_nothing(pg_url: str, tmp_path: Path):
    node = Node(pg_url, tmp_path / "state")
    seed(node)
    node.sync()
    targets = [f"+3933500{i:05d}" for i in range(30)]
    try:
        with Running(node):
            for index, target in enumerate(targets):
                number = (A, ALICE, BOB)[index % 3]
                node.divert("forward", "add", number, "--when", "busy", "--to", target)
                if index in (5, 15, 25):
                    _terminate_backends(pg_url)
            expected = {t for t in targets}

            def all_there() -> bool:
                seen = {d for key in (A, ALICE, BOB) for _, d in node.destinations(key)}
                return expected <= seen

            wait_for(all_there, timeout=60)
    finally:
        node.close()


@pytest.mark.postgres
def test_portal_outage_keeps_the_store_serving_and_logs_once(
    pg_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    database = make_url(pg_url).database
    node = Node(pg_url, tmp_path / "state")
    node.worker.config = node.worker.config.__class__(
        pg_url, tmp_path / "state", poll_interval=0.2, max_backoff=0.5
    )
    seed(node)
    node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
    node.sync()
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    caplog.set_level(logging.INFO, logger="divert.sync")
    try:
        with Running(node):
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            _terminate_backends(pg_url)
            time.sleep(3)  # several retries at up to 0.5 s
            assert ("busy", MOBILE) in node.destinations(A)  # the store still serves
            with admin.connect() as connection:
                connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
            node.divert("forward", "add", A, "--when", "busy", "--to", "+393359998877")
            wait_for(lambda: ("busy", "+393359998877") in node.destinations(A), timeout=30)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        admin.dispose()
        node.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "divert.sync"]
    assert sum("portal unreachable" in m for m in messages) == 1, messages
    assert sum("portal reachable again" in m for m in messages) == 1, messages


def test_sigterm_stops_the_worker_cleanly(sqlite_url: str, tmp_path: Path):
    command = [
        str(Path(sys.executable).with_name("divert")),
        "--portal",
        sqlite_url,
        "sync",
        "--state-dir",
        str(tmp_path / "state"),
        "--poll",
        "0.2",
    ]
    worker = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "state" / "store.seq").exists(), timeout=30)
        time.sleep(0.5)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=15)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert "sync worker stopped" in err
    assert "Traceback" not in err


def test_a_worker_started_during_an_outage_waits_for_the_portal(tmp_path: Path):
    """`divert run` restarts its worker whatever the portal's state: an
    unreachable portal at start is an outage to ride out, not a fatal error."""
    command = [
        str(Path(sys.executable).with_name("divert")),
        "--portal",
        "postgresql://divert:divert@127.0.0.1:1/nowhere",  # nothing listens on port 1
        "sync",
        "--state-dir",
        str(tmp_path / "state"),
    ]
    worker = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.0)
        assert worker.poll() is None, worker.communicate()[1]
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=15)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert "unreachable" in err and "starting anyway" in err
    assert "Traceback" not in err


def test_killed_worker_leaves_a_consistent_store(sqlite_url: str, tmp_path: Path):
    """A batch of 3,000 forwards in one portal transaction is applied by one
    store transaction: after SIGKILL at any moment the store has all or none."""
    node = Node(sqlite_url, tmp_path / "state")
    seed(node)
    node.sync()
    node.close()
    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        for index in range(1000):
            connection.execute(
                text("INSERT INTO numbers (e164, tenant_id, trunk_id) VALUES (:e, 1, 1)"),
                {"e": f"+39024{index:06d}"},
            )
    command = [
        str(Path(sys.executable).with_name("divert")),
        "--portal",
        sqlite_url,
        "sync",
        "--once",
        "--state-dir",
        str(tmp_path / "state"),
    ]
    outcomes = set()
    for delay in (0.3, 0.6, 0.9, 1.2, 1.5, 3.0):
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM forwards"))
            connection.execute(
                text(
                    "INSERT INTO forwards (tenant_id, number_id, condition, callers, dest_kind, "
                    "dest_value, position, enabled) SELECT 1, id, 'busy', 'any', 'number', "
                    ":to, 0, 1 FROM numbers WHERE e164 LIKE '+39024%'"
                ),
                {"to": f"+39335000{int(delay * 10):04d}"},
            )
        worker = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        store = sqlite3.connect(tmp_path / "state" / "store.sqlite")
        assert store.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        store.close()
        reader = StoreReader(tmp_path / "state")
        destinations = {
            tuple(
                r.destination.key
                for r in reader.table(f"+39024{i:06d}").rules
                if r.condition.value == "busy"
            )
            for i in range(0, 1000, 7)
            if reader.table(f"+39024{i:06d}") is not None
        }
        reader.close()
        assert len(destinations) <= 1, f"half a batch after kill at {delay} s: {destinations}"
        outcomes.add("killed" if worker.returncode == -signal.SIGKILL else "finished")
    engine.dispose()
    assert "killed" in outcomes


def test_schedules_arrive_as_the_tenants_time_modes(node: Node):
    assert node.reader.tenant("acme") is not None
    assert node.reader.tenant("acme").schedule == ()
    node.divert(
        "schedule",
        "add",
        "--tenant",
        "acme",
        "--mode",
        "night",
        "--days",
        "all",
        "--from",
        "20:00",
        "--to",
        "07:00",
    )
    node.sync()
    record = node.reader.tenant("acme")
    assert record is not None and record.timezone == "Europe/Rome"
    assert record.voicemail_uri == "sip:{mailbox}@127.0.0.1:5090"
    (entry,) = record.schedule
    assert (entry.mode, entry.start, entry.end, len(entry.days)) == ("night", 1200, 420, 7)
    node.divert("schedule", "delete", "1")
    node.sync()
    assert node.reader.tenant("acme").schedule == ()


def test_a_wake_datagram_makes_the_worker_sync_at_once(sqlite_url: str, tmp_path: Path):
    from divert.sync import wake

    node = Node(sqlite_url, tmp_path / "state")
    node.worker.config = node.worker.config.__class__(
        sqlite_url, tmp_path / "state", poll_interval=60
    )
    seed(node)
    node.sync()
    woken = wake.listen(tmp_path / "state")
    stop = False
    thread = threading.Thread(target=node.worker.run, args=(lambda: stop, (woken.fileno(),)))
    thread.start()
    try:
        time.sleep(0.5)  # asleep now; its next poll is a minute away
        node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
        wake.wake(tmp_path / "state")
        wait_for(lambda: ("busy", MOBILE) in node.destinations(A), timeout=10)
    finally:
        stop = True
        wake.wake(tmp_path / "state")
        thread.join(timeout=30)
        wake.close(woken, tmp_path / "state")
        node.close()
    assert not thread.is_alive()


# -- the store's own faults (issue 12) ---------------------------------------------------


def test_a_deleted_store_is_rebuilt_into_a_new_generation(
    node: Node, caplog: pytest.LogCaptureFixture
):
    first = node.worker.writer.file
    node.reader.open()
    (node.state_dir / "store.sqlite").unlink()
    assert node.table(A) is not None  # the reader still has the deleted file open
    with caplog.at_level(logging.WARNING, logger="divert.sync"):
        node.sync()
    assert [r.message for r in caplog.records if "was deleted" in r.message]
    current = (node.state_dir / "store.sqlite").resolve()
    assert current != first and current == node.worker.writer.file
    assert node.table(A) is not None  # the reader follows the new epoch to the new file
    node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
    node.sync()
    assert ("busy", MOBILE) in node.destinations(A)


def test_a_store_that_is_not_a_database_is_rebuilt_at_start(node: Node, tmp_path: Path):
    node.worker.close()
    store = (node.state_dir / "store.sqlite").resolve()
    for suffix in ("-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    store.write_bytes(os.urandom(8192))
    restarted = Node(node.url, node.state_dir)
    try:
        assert not restarted.worker.writer.installed
        restarted.sync()
        assert restarted.worker.writer.installed
        assert restarted.table(A) is not None
    finally:
        restarted.close()
        node.worker = restarted.worker
        node.worker.writer = restarted.worker.writer


def test_a_store_write_that_fails_keeps_the_last_store_and_is_logged_once(
    node: Node, caplog: pytest.LogCaptureFixture
):
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    with caplog.at_level(logging.WARNING, logger="divert.sync"):
        node.worker._store_failed(full)
        node.worker._store_failed(full)
        node.worker._store_recovered()
    messages = [r.message for r in caplog.records]
    assert sum("store write failed" in m for m in messages) == 1
    assert sum("writable again" in m for m in messages) == 1
    damaged = sqlite3.DatabaseError("database disk image is malformed")
    damaged.sqlite_errorcode = sqlite3.SQLITE_CORRUPT  # type: ignore[attr-defined]
    node.worker._store_failed(damaged)  # from the feature queue, say: the store is checked
    first = node.worker.writer.file
    node.sync()
    assert node.worker.writer.file == first  # sound: not rebuilt


def test_every_store_file_deleted_is_rebuilt_and_old_readers_follow(node: Node, tmp_path: Path):
    """`rm store.*` under a running node: no generation number or epoch a
    reader has seen comes back, and a reader that maps the deleted
    ``store.seq`` learns of the new one."""
    node.reader.open()
    assert node.table(A) is not None
    for path in node.state_dir.glob("store.*"):
        path.unlink()
    node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
    node.sync()
    assert (node.state_dir / "store.sqlite").resolve().name == "store.2.sqlite"
    node.reader._next_seq_look = 0.0  # its once-a-second look, now
    assert ("busy", MOBILE) in node.destinations(A)
    fresh = StoreReader(node.state_dir, cache_size=10)
    assert fresh.table(A) is not None


def test_a_worker_restarted_with_the_store_gone_installs_nothing_until_rebuilt(
    node: Node, caplog: pytest.LogCaptureFixture
):
    node.worker.close()
    (node.state_dir / "store.sqlite").resolve().unlink()  # the link now dangles
    with caplog.at_level(logging.WARNING, logger="divert.sync"):
        restarted = Node(node.url, node.state_dir)
    try:
        assert not restarted.worker.writer.installed  # no empty store for readers to route from
        assert [r.message for r in caplog.records if "is missing" in r.message]
        restarted.sync()
        assert restarted.worker.writer.installed and restarted.table(A) is not None
    finally:
        restarted.close()
        node.worker = restarted.worker
        node.worker.writer = restarted.worker.writer


def test_a_link_that_loops_or_points_elsewhere_is_not_followed(node: Node, tmp_path: Path):
    node.worker.close()
    link = node.state_dir / "store.sqlite"
    link.unlink()
    link.symlink_to("/etc/passwd")
    restarted = Node(node.url, node.state_dir)
    try:
        assert not restarted.worker.writer.installed
        restarted.sync()
        assert link.resolve().parent == node.state_dir.resolve()
        assert restarted.table(A) is not None
    finally:
        restarted.close()
        node.worker = restarted.worker
        node.worker.writer = restarted.worker.writer


def test_the_running_worker_keeps_the_last_store_through_a_full_disk_and_recovers(
    node: Node, caplog: pytest.LogCaptureFixture
):
    """A real SQLITE_FULL in `run()`: the store is capped at the pages it has
    (``max_page_count``, what a full disk looks like to SQLite)."""
    writer = node.worker.writer
    pages = writer.db.execute("PRAGMA page_count").fetchone()[0]
    writer.db.execute(f"PRAGMA max_page_count = {pages}")
    stop = threading.Event()
    runner = threading.Thread(target=node.worker.run, args=(stop.is_set,))
    with caplog.at_level(logging.WARNING, logger="divert.sync"):
        runner.start()
        try:
            for index in range(40):  # more than the free pages can take
                node.divert(
                    "number", "add", f"+3902555{index:05d}", "--tenant", "acme", "--trunk", "pbx"
                )
            wait_for(lambda: any("store write failed" in r.message for r in caplog.records))
            assert node.table("+390255500039") is None  # its batch rolled back whole
            assert node.table(A) is not None  # the last good store serves on
            writer.db.execute("PRAGMA max_page_count = 1073741823")  # space is back
            wait_for(lambda: node.table("+390255500039") is not None)
            wait_for(lambda: any("writable again" in r.message for r in caplog.records))
        finally:
            stop.set()
            runner.join(timeout=10)
    assert not runner.is_alive()
    assert sum("store write failed" in r.message for r in caplog.records) == 1


@pytest.mark.postgres
def test_a_change_committed_during_the_first_pass_is_notified_not_polled(
    pg_url: str, tmp_path: Path
):
    """LISTEN comes before the first read: the poll (60 s here) is never needed."""
    node = Node(pg_url, tmp_path / "state")
    node.worker.config = node.worker.config.__class__(pg_url, tmp_path / "state", poll_interval=60)
    seed(node)
    first_pass = node.worker.sync_once
    passes: list[object] = []

    def sync_once():  # type: ignore[no-untyped-def]
        done = first_pass()
        if not passes:  # a change lands just after the first pass read the journal
            node.divert("forward", "add", A, "--when", "busy", "--to", MOBILE)
        passes.append(done)
        return done

    node.worker.sync_once = sync_once  # type: ignore[method-assign]
    try:
        with Running(node):
            waited = wait_for(lambda: ("busy", MOBILE) in _rules(node.reader, A), timeout=10)
        assert waited < 5.0 and len(passes) >= 2
    finally:
        node.close()


def _rules(reader: StoreReader, key: str) -> list[tuple[str, str]]:
    table = reader.table(key)
    return [] if table is None else [(r.condition.value, r.destination.key) for r in table.rules]


def test_retries_are_jittered_so_nodes_do_not_return_together():
    from divert.sync.worker import jittered

    delays = {jittered(8.0) for _ in range(50)}
    assert all(4.0 <= delay <= 8.0 for delay in delays) and len(delays) > 40


def test_a_trunk_address_already_taken_is_listed_never_dropped_in_silence(node: Node):
    node.divert("tenant", "add", "beta", "--region", "IT")
    node.sql(  # as an older portal allowed, or plain SQL does
        "INSERT INTO trunks (tenant_id, name, addresses, diversion_style) "
        "SELECT id, 'beta-pbx', '127.0.0.20:5060', 'diversion' FROM tenants WHERE name = 'beta'"
    )
    node.sync()
    (source, reason) = next(iter(node.rejected().items()))
    assert source.startswith("trunks:")
    assert "address 127.0.0.20:5060 is already trunk pbx of tenant acme" in reason
    assert node.reader.trunk_at("127.0.0.20:5060").tenant == "acme"  # type: ignore[union-attr]
    status = as_text(read_status(node.state_dir, node.url))
    assert "rejected rows: 1" in status and "beta-pbx" in status
    from divert.sync.apply import full_sync

    with node.worker.engine.connect() as connection, connection.begin():
        full_sync(connection, node.worker.writer)
    assert list(node.rejected()) == [source]  # a full sync lists it too, the same way
    assert node.reader.trunk_at("127.0.0.20:5060").tenant == "acme"  # type: ignore[union-attr]
    node.sql("UPDATE trunks SET addresses = '127.0.0.29:5060' WHERE name = 'pbx'")
    node.sync()  # the first owner gave it up: the other trunk gets it
    assert node.rejected() == {}
    assert node.reader.trunk_at("127.0.0.20:5060").tenant == "beta"  # type: ignore[union-attr]
