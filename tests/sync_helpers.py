"""Helpers for sync tests: a portal driven through `divert`, and a worker."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from divert.cli import main
from divert.db import open_portal
from divert.kemi.core.model import ForwardTable
from divert.kemi.store.format import META_EPOCH, META_FULL_SYNC_AT
from divert.kemi.store.reader import StoreReader
from divert.sync.worker import SyncWorker, WorkerConfig


class Node:
    """A portal URL, a state dir, a worker over them and a reader."""

    def __init__(self, portal_url: str, state_dir: Path) -> None:
        self.url = portal_url
        self.state_dir = state_dir
        self.worker = SyncWorker(WorkerConfig(portal_url, state_dir, poll_interval=0.2))
        self.reader = StoreReader(state_dir, cache_size=1000)

    def divert(self, *args: str) -> None:
        code = main(["--portal", self.url, *args])
        assert code == 0, f"divert {' '.join(args)} failed with {code}"

    def sql(self, statement: str, **params: object) -> None:
        engine = open_portal(self.url)
        with engine.begin() as connection:
            connection.execute(text(statement), params)
        engine.dispose()

    def sync(self) -> None:
        self.worker.sync_once()

    def table(self, key: str) -> ForwardTable | None:
        return self.reader.table(key)

    def destinations(self, key: str) -> list[tuple[str, str]]:
        table = self.table(key)
        assert table is not None, f"{key} is not in the store"
        return [(r.condition.value, r.destination.key) for r in table.rules]

    def full_syncs(self) -> tuple[str | None, str | None]:
        return self.worker.writer.meta(META_EPOCH), self.worker.writer.meta(META_FULL_SYNC_AT)

    def rejected(self) -> dict[str, str]:
        rows = self.worker.writer.db.execute("SELECT source, reason FROM rejected")
        return {source: reason for source, reason in rows}

    def close(self) -> None:
        self.reader.close()
        self.worker.close()


ACME = [
    (
        "tenant",
        "add",
        "acme",
        "--region",
        "IT",
        "--timezone",
        "Europe/Rome",
        "--voicemail-uri",
        "sip:{mailbox}@127.0.0.1:5090",
    ),
    (
        "trunk",
        "add",
        "pbx",
        "--tenant",
        "acme",
        "--address",
        "127.0.0.20:5060",
        "--emergency",
        "+393331234567",
    ),
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
        "--name",
        "Alice",
    ),
    (
        "subscriber",
        "add",
        "bob",
        "--tenant",
        "acme",
        "--password",
        "bob-secret1",
        "--extension",
        "202",
    ),
    ("number", "add", "02 1234 5678", "--tenant", "acme", "--trunk", "pbx"),
    ("number", "add", "+390287654321", "--tenant", "acme", "--subscriber", "alice"),
    ("number", "add", "+390211112222", "--tenant", "acme", "--subscriber", "bob"),
]
"""`divert` commands for a tenant with a trunk, two subscribers and three numbers."""


def seed(node: Node) -> None:
    for args in ACME:
        node.divert(*args)


def insert_forward(node: Node, owner: str, condition: str, kind: str, value: str) -> None:
    """A forward written with plain SQL, bypassing the portal's validation."""
    node.sql(
        "INSERT INTO forwards (tenant_id, number_id, condition, callers, dest_kind, dest_value, "
        "position, enabled) SELECT tenant_id, id, :condition, 'any', :kind, :value, 0, :yes "
        "FROM numbers WHERE e164 = :owner",
        owner=owner,
        condition=condition,
        kind=kind,
        value=value,
        yes=True,
    )
