"""Feature codes while the portal is down: checked on the node, their effect
written into the store at once, and replaced by the portal's data once
delivered (issue 5: "a code takes effect on this node at once")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from divert.features.local import LocalNode
from divert.features.overlay import with_code
from divert.features.queue import FeatureQueue
from divert.kemi.core.model import (
    Condition,
    Destination,
    DestKind,
    Endpoint,
    EndpointKind,
    ForwardTable,
    Rule,
    Scope,
)
from tests.sync_helpers import Node, seed

ALICE, BOB = "+390287654321", "+390211112222"
SUB = "sub:alice@acme"
TARGET, OTHER = "+393351000077", "+393351000088"
PREMIUM = "+39899123456"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()  # a Monday, 11:00 in Rome


def rule(condition: Condition, key: str, origin: str) -> Rule:
    return Rule(condition, Scope.ANY, Destination(DestKind.NUMBER, key, key), origin)


def table(key: str, *rules: Rule) -> ForwardTable:
    endpoint = Endpoint(EndpointKind.SUBSCRIBER, "alice@acme")
    return ForwardTable(key, "acme", key, endpoint, rules)


class TestWithCode:
    own = rule(Condition.BUSY, "+393350000001", "forward 1")  # the number's own forward
    theirs = rule(Condition.BUSY, "+393350000002", "forward 2")  # alice's
    theirs_always = rule(Condition.ALWAYS, "+393350000003", "forward 3")

    def tables(self) -> list[ForwardTable]:
        return [
            table(ALICE, self.own, self.theirs, self.theirs_always),
            table(SUB, self.theirs, self.theirs_always),
        ]

    def test_set_replaces_the_subscribers_rules_of_that_condition_only(self):
        target = Destination(DestKind.NUMBER, TARGET, TARGET)
        after = with_code(self.tables(), SUB, "set", "busy", target, "feature code *90")
        new = rule(Condition.BUSY, TARGET, "feature code *90")
        assert [t.rules for t in after] == [
            (self.own, self.theirs_always, new),
            (self.theirs_always, new),
        ]

    def test_cancel_and_cancel_all_leave_the_numbers_own_forwards(self):
        cancelled = with_code(self.tables(), SUB, "cancel", "busy", None, "feature code *91")
        assert [t.rules for t in cancelled] == [
            (self.own, self.theirs_always),
            (self.theirs_always,),
        ]
        cleared = with_code(self.tables(), SUB, "cancel-all", None, None, "feature code *73")
        assert [t.rules for t in cleared] == [(self.own,), ()]

    def test_applying_twice_is_applying_once(self):
        target = Destination(DestKind.NUMBER, TARGET, TARGET)
        once = with_code(self.tables(), SUB, "set", "always", target, "feature code *72")
        twice = with_code(once, SUB, "set", "always", target, "feature code *72")
        assert [t.rules for t in twice] == [t.rules for t in once]

    def test_a_missing_subscriber_table_is_an_error(self):
        with pytest.raises(KeyError):
            with_code(self.tables()[:1], SUB, "cancel-all", None, None, "x")


@pytest.fixture
def node(sqlite_url: str, tmp_path: Path) -> Iterator[Node]:
    synced = Node(sqlite_url, tmp_path / "state")
    seed(synced)
    synced.divert("policy", "set", "--deny-prefixes", "+39351")
    synced.divert("forward", "add", ALICE, "--when", "no-answer", "--to", OTHER)
    synced.sync()
    yield synced
    synced.close()


def local(node: Node) -> LocalNode:
    return LocalNode(node.worker.writer.view)


def test_a_code_is_checked_with_the_portals_rules_from_the_store(node: Node):
    here = local(node)
    accepted = here.effect("alice@acme", f"*72{TARGET}", NOW)
    assert accepted.answer.reason == f"Forwarding Activated (always) to {TARGET}"
    assert {t.key for t in accepted.tables} == {ALICE, SUB}
    premium = here.effect("alice@acme", f"*72{PREMIUM}", NOW)
    assert premium.answer.code == 403 and "premium-rate" in premium.answer.reason
    assert premium.tables == ()
    denied = here.effect("alice@acme", "*90+393511234567", NOW)
    assert denied.answer.code == 403 and "prefix +39351 is denied" in denied.answer.reason
    national = here.effect("alice@acme", "*900212345678", NOW)
    assert national.answer.reason == "Forwarding Activated (busy) to +390212345678"
    assert here.effect("alice@acme", "*72202", NOW).answer.reason.endswith("to ext:202")
    missing = here.effect("alice@acme", "*72209", NOW).answer
    assert missing.code == 403 and "extension 209 does not exist" in missing.reason
    assert here.effect("alice@acme", "*45", NOW).answer.code == 404
    assert here.effect("mallory@acme", "*73", NOW).answer.code == 403


def test_a_loop_is_refused_on_the_node_too(node: Node):
    node.divert("forward", "add", BOB, "--when", "always", "--to", ALICE)
    node.sync()
    looping = local(node).effect("alice@acme", f"*72{BOB}", NOW).answer
    assert looping.code == 403 and "close a loop" in looping.reason
    assert f"{ALICE} -> {BOB} -> {ALICE}" in looping.reason or f"{BOB} -> {ALICE}" in looping.reason


def test_queued_codes_route_at_once_and_give_way_to_the_portal(node: Node):
    queue = FeatureQueue(node.state_dir)
    queue.add("alice@acme", f"*90{TARGET}", NOW, None)
    queue.add("alice@acme", f"*72{OTHER}", NOW + 1, None)
    codes = node.worker.codes
    assert codes.replay() == 2  # two codes, written once to each of two tables
    assert node.destinations(ALICE) == [("no-answer", OTHER), ("busy", TARGET), ("always", OTHER)]
    assert node.destinations(SUB) == [("busy", TARGET), ("always", OTHER)]
    assert codes.replay() == 0  # replaying changes nothing more

    # delivered: the portal now has the codes, and its data replaces the local effect
    for args in [
        ("forward", "add", "--subscriber", "alice", "--tenant", "acme", "--when", "busy"),
        ("forward", "add", "--subscriber", "alice", "--tenant", "acme", "--when", "always"),
    ]:
        node.divert(*args, "--to", TARGET if args[-1] == "busy" else OTHER)
    for row in queue.pending():
        queue.remove(row.id)
    codes.replay()
    assert codes.unsettled
    with node.worker.engine.connect() as connection:
        codes.settle(connection)
    alice = node.table(ALICE)
    assert alice is not None
    assert [r.origin.startswith("forward ") for r in alice.rules] == [True, True, True]
    assert node.destinations(ALICE) == [("no-answer", OTHER), ("busy", TARGET), ("always", OTHER)]
    queue.close()


def test_a_code_the_portal_refused_leaves_no_trace(node: Node):
    queue = FeatureQueue(node.state_dir)
    queue.add("alice@acme", f"*72{TARGET}", NOW, None)
    codes = node.worker.codes
    codes.replay()
    assert ("always", TARGET) in node.destinations(SUB)
    queue.remove(queue.pending()[0].id)  # refused on delivery: the portal never had it
    codes.replay()
    with node.worker.engine.connect() as connection:
        codes.settle(connection)
    assert node.destinations(SUB) == []
    assert node.destinations(ALICE) == [("no-answer", OTHER)]
    queue.close()


def test_mode_codes_change_the_tenants_mode_on_the_node(node: Node):
    node.divert("schedule", "add", "--tenant", "acme", "--mode", "day", "--days", "mon-fri",
                "--from", "08:00", "--to", "18:00")  # fmt: skip
    node.divert("schedule", "add", "--tenant", "acme", "--mode", "night", "--days", "all",
                "--from", "18:00", "--to", "08:00")  # fmt: skip
    node.sync()
    toggled = local(node).effect("alice@acme", "*11", NOW)
    assert toggled.answer.reason == "Mode day (manual)" and toggled.chosen == "day"
    queue = FeatureQueue(node.state_dir)
    queue.add("alice@acme", "*11", NOW, toggled.chosen)
    queue.add("alice@acme", "*20", NOW + 1, None)
    node.worker.codes.replay()
    tenant = node.reader.tenant("acme")
    assert tenant is not None and tenant.override == "night"
    assert tenant.override_until == datetime(2026, 11, 24, 7, 0, tzinfo=UTC).timestamp()
    assert node.worker.codes.replay() == 0  # *11 replays to the mode it picked, not further
    queue.close()


def test_presence_codes_mark_the_subscribers_tables_on_the_node(node: Node):
    away = local(node).effect("alice@acme", "*78", NOW)
    assert (away.answer.code, away.answer.reason) == (480, "Away")
    assert {t.key for t in away.tables} == {ALICE, SUB} and all(t.away for t in away.tables)
    queue = FeatureQueue(node.state_dir)
    queue.add("alice@acme", "*78", NOW, None)
    node.worker.codes.replay()
    table = node.table(ALICE)
    assert table is not None and table.away  # the next call takes her not-present forwards
    queue.add("alice@acme", "*79", NOW + 1, None)
    node.worker.codes.replay()
    table = node.table(ALICE)
    assert table is not None and not table.away
    queue.close()
