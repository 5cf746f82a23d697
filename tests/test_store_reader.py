"""The store's format and its cached reader, in one process and across several."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from divert.kemi.core.model import DestKind
from divert.kemi.store.format import SCHEMA_VERSION, decode_table, encode_table
from divert.kemi.store.lru import Lru
from divert.kemi.store.reader import StoreReader, StoreUnavailable
from divert.kemi.store.writer import StoreWriter
from tests.builders import rule, table

A, B = "+390200000001", "+390200000002"


def put(writer: StoreWriter, key: str, *rules) -> None:  # type: ignore[no-untyped-def]
    with writer.transaction():
        writer.put_table(key, "acme", encode_table(table(key, *rules)))


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[StoreWriter]:
    store = StoreWriter(tmp_path)
    yield store
    store.close()


def test_table_round_trips_through_the_store_format():
    original = table(
        A,
        rule("always", B, callers="internal", modes=("night",), expires_at=99.5),
        rule("busy", "vm:x", kind=DestKind.VOICEMAIL),
        rule("no-answer", B, timeout=20),
        rule("trunk-down", code=603),
    )
    decoded = decode_table(encode_table(original))
    assert decoded == original
    assert decoded.candidates(rule("busy").condition, False) == original.candidates(
        rule("busy").condition, False
    )


def test_the_cache_evicts_the_least_recently_used_entry():
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a", 0) == 1  # read: "b" is now the oldest
    cache.put("c", 3)
    assert (cache.get("a", 0), cache.get("b", 0), cache.get("c", 0)) == (1, 0, 3)
    cache.put("a", 4)  # rewritten: "c" is now the oldest
    cache.put("d", 5)
    assert (cache.get("a", 0), cache.get("c", 0), len(cache)) == (4, 0, 2)
    cache.discard("a")
    assert cache.get("a", 0) == 0 and len(cache) == 1


def test_missing_store_is_a_clear_error(tmp_path: Path):
    with pytest.raises(StoreUnavailable, match="has the sync worker run"):
        StoreReader(tmp_path / "nowhere").table(A)


def test_lookup_reads_once_then_serves_from_the_cache(writer: StoreWriter, tmp_path: Path):
    put(writer, A, rule("always", B))
    reader = StoreReader(tmp_path)
    first = reader.table(A)
    assert first is not None and first.rules[0].destination.key == B
    assert reader.table(A) is first
    assert reader.misses == 1


def test_cache_is_bounded_by_its_size(writer: StoreWriter, tmp_path: Path):
    with writer.transaction():
        for index in range(200):
            key = f"+3902{index:08d}"
            writer.put_table(key, "acme", encode_table(table(key)))
    reader = StoreReader(tmp_path, cache_size=25)
    for index in range(200):
        assert reader.table(f"+3902{index:08d}") is not None
    assert reader.cached == 25


def test_a_change_evicts_only_the_changed_key(writer: StoreWriter, tmp_path: Path):
    put(writer, A, rule("always", B))
    put(writer, B)
    reader = StoreReader(tmp_path)
    reader.table(A)
    reader.table(B)
    put(writer, A, rule("busy", B))
    changed = reader.table(A)
    assert changed is not None and changed.rules[0].condition.value == "busy"
    reader.table(B)
    assert reader.misses == 3  # A, B, then A again; B stayed cached


def test_absent_keys_are_cached_until_they_appear(writer: StoreWriter, tmp_path: Path):
    put(writer, B)
    reader = StoreReader(tmp_path)
    assert reader.table(A) is None
    assert reader.table(A) is None
    assert reader.misses == 1
    put(writer, A)
    assert reader.table(A) is not None


def test_a_full_sync_starts_a_new_epoch_and_clears_caches(writer: StoreWriter, tmp_path: Path):
    put(writer, A, rule("always", B))
    reader = StoreReader(tmp_path)
    reader.table(A)
    with writer.transaction():
        writer.reset()
        writer.put_tables([(A, "acme", None, encode_table(table(A)))])
    refreshed = reader.table(A)
    assert refreshed is not None and refreshed.rules == ()


def test_deleted_key_disappears(writer: StoreWriter, tmp_path: Path):
    put(writer, A)
    reader = StoreReader(tmp_path)
    assert reader.table(A) is not None
    with writer.transaction():
        writer.delete_table(A)
    assert reader.table(A) is None


def test_rolled_back_batch_is_invisible(writer: StoreWriter, tmp_path: Path):
    put(writer, A, rule("always", B))
    reader = StoreReader(tmp_path)
    with pytest.raises(RuntimeError), writer.transaction():
        writer.put_table(A, "acme", encode_table(table(A)))
        raise RuntimeError("worker died mid-batch")
    still = reader.table(A)
    assert still is not None and still.rules[0].destination.key == B


# -- several processes -------------------------------------------------------------------


def _reader_process(state_dir: str, requests, replies) -> None:  # type: ignore[no-untyped-def]
    reader = StoreReader(state_dir)
    while True:
        key = requests.get()
        if key is None:
            return
        found = reader.table(key)
        replies.put(None if found is None else found.rules[0].destination.key)


def _version(key_table) -> int:  # type: ignore[no-untyped-def]
    return int(key_table.rules[0].destination.key[-4:])


def _hammer(state_dir: str, seconds: float, results) -> None:  # type: ignore[no-untyped-def]
    """Read A and B for a while; report whether versions ever went backwards
    and whether A and B from one batch were ever seen out of step by more
    than the batch they straddle."""
    reader = StoreReader(state_dir, cache_size=100)
    last = -1
    problems = []
    deadline = time.monotonic() + seconds
    reads = 0
    while time.monotonic() < deadline:
        a = _version(reader.table(A))
        b = _version(reader.table(B))
        reads += 2
        if a < last:
            problems.append(f"A went back from {last} to {a}")
        if b < a:
            problems.append(f"B at {b} behind A at {a}: half a batch")
        last = a
    results.put((reads, problems, last))


def _versioned(key: str, version: int) -> bytes:
    return encode_table(table(key, rule("always", f"+39335000{version:04d}")))


def test_two_processes_see_a_change_on_their_next_lookup(writer: StoreWriter, tmp_path: Path):
    context = multiprocessing.get_context("fork")
    with writer.transaction():
        writer.put_table(A, "acme", _versioned(A, 0))
    workers = []
    for _ in range(2):
        requests, replies = context.Queue(), context.Queue()
        process = context.Process(target=_reader_process, args=(str(tmp_path), requests, replies))
        process.start()
        workers.append((process, requests, replies))
    try:
        for version in range(1, 6):
            for _, requests, replies in workers:
                requests.put(A)
                assert replies.get(timeout=10) == f"+39335000{version - 1:04d}"
            with writer.transaction():
                writer.put_table(A, "acme", _versioned(A, version))
            for _, requests, replies in workers:
                requests.put(A)
                assert replies.get(timeout=10) == f"+39335000{version:04d}"
    finally:
        for process, requests, _ in workers:
            requests.put(None)
            process.join(timeout=10)


def test_readers_never_see_half_a_batch_while_the_worker_writes(
    writer: StoreWriter, tmp_path: Path
):
    """Each batch writes B then A with the same version; a reader reading A
    then B must never find B older than A, nor A going backwards."""
    context = multiprocessing.get_context("fork")
    with writer.transaction():
        writer.put_table(A, "acme", _versioned(A, 0))
        writer.put_table(B, "acme", _versioned(B, 0))
    results = context.Queue()
    readers = [
        context.Process(target=_hammer, args=(str(tmp_path), 3.0, results)) for _ in range(2)
    ]
    for process in readers:
        process.start()
    version = 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline and version < 9999:
        version += 1
        with writer.transaction():
            writer.put_table(B, "acme", _versioned(B, version))
            writer.put_table(A, "acme", _versioned(A, version))
    outcomes = [results.get(timeout=30) for _ in readers]
    for process in readers:
        process.join(timeout=10)
    for reads, problems, last in outcomes:
        assert problems == []
        assert reads > 100
        assert last <= version
    assert version > 10


def test_an_older_store_is_rebuilt_on_upgrade(tmp_path: Path):
    import sqlite3

    old = sqlite3.connect(tmp_path / "store.sqlite")
    old.executescript(
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('format', '1'), ('schema_version', '2'), "
        "('journal_position', 'id:7'), ('epoch', '1');"
        "CREATE TABLE tenants (name TEXT PRIMARY KEY, timezone TEXT NOT NULL, "
        "schedule BLOB NOT NULL) WITHOUT ROWID;"
    )
    old.close()
    writer = StoreWriter(tmp_path)
    columns = [row[1] for row in writer.db.execute("PRAGMA table_info(tenants)")]
    assert "voicemail_uri" in columns
    assert writer.meta("journal_position") is None  # the next pass resyncs in full
    assert writer.meta("schema_version") == str(SCHEMA_VERSION)
    writer.close()


# -- faults: a rebuilt store, a deleted one, a damaged one (issue 12) ---------------------


def test_a_store_rebuilt_into_a_new_generation_is_read_after_the_swap(
    writer: StoreWriter, tmp_path: Path
):
    put(writer, "+390200000001", rule("always", "+393351000001"))
    reader = StoreReader(tmp_path, cache_size=10)
    assert reader.table("+390200000001") is not None
    fresh = StoreWriter(tmp_path, fresh=True)
    put(fresh, "+390200000002", rule("always", "+393351000002"))
    assert reader.table("+390200000002") is None  # not installed yet: readers see the old one
    fresh.install()
    assert (tmp_path / "store.sqlite").resolve() == fresh.file
    assert reader.table("+390200000002") is not None
    assert reader.table("+390200000001") is None
    fresh.close()


def test_a_deleted_store_keeps_serving_the_reader_that_has_it_open(
    writer: StoreWriter, tmp_path: Path
):
    put(writer, "+390200000001", rule("always", "+393351000001"))
    reader = StoreReader(tmp_path, cache_size=10)
    reader.open()
    (tmp_path / "store.sqlite").unlink()
    assert writer.problem() == "was deleted"
    assert reader.table("+390200000001") is not None  # read from the open file
    with pytest.raises(StoreUnavailable):
        StoreReader(tmp_path, cache_size=10).table("+390200000001")


def test_a_deleted_sequence_file_is_made_again_and_readers_follow(
    writer: StoreWriter, tmp_path: Path
):
    reader = StoreReader(tmp_path, cache_size=10)
    assert reader.table("+390200000003") is None
    (tmp_path / "store.seq").unlink()
    assert writer.problem() is None  # made again
    put(writer, "+390200000003", rule("always", "+393351000003"))
    assert reader.table("+390200000003") is not None  # the old mapping told it to reopen


def test_a_damaged_store_is_unavailable_and_the_worker_is_asked_to_check(
    writer: StoreWriter, tmp_path: Path
):
    import os
    import socket

    for index in range(300):  # pages enough to damage
        put(writer, f"+3902{index:08d}", rule("always", "+393351000001"))
    writer.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store = (tmp_path / "store.sqlite").resolve()
    with open(store, "r+b") as file:
        file.seek(4096)
        file.write(os.urandom(store.stat().st_size - 4096))
    (tmp_path / "run").mkdir()
    worker_end = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    worker_end.bind(str(tmp_path / "run" / "sync.wake"))
    worker_end.settimeout(1)
    reader = StoreReader(tmp_path, cache_size=10)
    with pytest.raises(StoreUnavailable, match="the store"):
        reader.table("+390200000007")
    assert worker_end.recv(64) == b"check"
    assert writer.quick_check() is not None
    worker_end.close()
