"""Three nodes as one (issue 17): registrations shared by DMQ, any node
takes any call, a node lost loses nothing but its calls in flight.

Three `divert run` on NET.101-103:5060 (tests/e2e/net.py), each with `--peer` the other
two, one PostgreSQL portal.  Alice's phone (NET.104:5070) registers at
node 1 from behind NAT: its Contact names NET.105:5070, where nothing
listens, so a call that does not go through node 1 (its Path, with where
the phone really is) never reaches it.  Callers send from the carriers'
address, as a carrier would to any node.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from divert.db import open_portal
from divert.kemi.store.reader import StoreReader
from tests.conftest import database_from
from tests.e2e.conftest import CALLER, CARRIER_1, DivertNode, dial, mobile, numbered
from tests.e2e.net import NET
from tests.e2e.sip import Peer, call, callee, exchange, load, register, tally
from tests.e2e.test_faults import ours, wait_for

NODES = (f"{NET}.101:5060", f"{NET}.102:5060", f"{NET}.103:5060")
PHONE = f"{NET}.104:5070"
NAT_CONTACT = f"{NET}.105:5070"  # the phone's own idea of its address: unreachable
PASSWORD = "alice-cluster-1"
ALICE = numbered(60)  # rings alice; not registered: her mobile
FORWARDED = numbered(61)  # always to mobile(61), through the carrier
RATE = 20

SEED = [
    ("tenant", "add", "acme", "--region", "IT"),
    ("subscriber", "add", "alice", "--tenant", "acme", "--password", PASSWORD),
    ("number", "add", ALICE, "--tenant", "acme", "--subscriber", "alice"),
    ("forward", "add", ALICE, "--when", "not-registered", "--to", mobile(60)),
    ("number", "add", FORWARDED, "--tenant", "acme", "--subscriber", "alice"),
    ("forward", "add", FORWARDED, "--when", "always", "--to", mobile(61)),
]


def cluster_node(workdir: Path, portal: str, index: int) -> DivertNode:
    node = DivertNode(workdir / f"node{index + 1}", portal=portal, listen=NODES[index])
    node.workdir.mkdir(parents=True, exist_ok=True)
    node.options = tuple(
        option for peer in NODES if peer != NODES[index] for option in ("--peer", peer)
    )
    return node


@pytest.fixture(scope="module")
def portal(pg_template: str) -> Iterator[str]:
    """A PostgreSQL portal of the module's own."""
    with database_from(pg_template, "divert_cluster") as url:
        yield url


@pytest.fixture(scope="module")
def cluster(portal: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DivertNode]]:
    workdir = tmp_path_factory.mktemp("cluster")
    nodes = [cluster_node(workdir, portal, index) for index in range(3)]
    for args in SEED:
        nodes[0].divert(*args)
    try:
        for node in nodes:
            node.start()
        wait_joined(nodes)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def carrier(cluster: list[DivertNode], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """The carrier every node forwards to, answering every call."""
    peer = callee(tmp_path_factory.mktemp("carrier"), "carrier", CARRIER_1, "answer", calls=400)
    for node in cluster:
        node.wait_trunk(CARRIER_1, active=True)
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def registered(cluster: list[DivertNode], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Alice's phone registered at node 1, and every node knowing it."""
    registers = register(
        tmp_path_factory.mktemp("phone"),
        "register",
        NODES[0],
        "alice",
        "acme",
        PHONE,
        600,
        PASSWORD,
        behind_nat=NAT_CONTACT,
    )
    assert registers.wait() == 0, registers.diagnostics() + cluster[0].tail()
    for node in cluster:
        wait_contact(node, present=True)


def wait_joined(nodes: list[DivertNode], timeout: float = 30) -> None:
    """Until every node's DMQ lists every other as active, and still does
    once a notice sent before a peer listened has timed out (the node's
    2 s fail timer): such a late timeout marks the peer pending until the
    next heartbeat (kamailio.cfg: route CLUSTER_HEARTBEAT), and DMQ
    replicates nothing to a pending peer (README "Several nodes")."""

    def joined() -> bool:
        return all(
            node.kamcmd("dmq.list_nodes").count("status: active") == len(nodes) for node in nodes
        )

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if joined():
            time.sleep(2.5)
            if joined():
                return
        time.sleep(0.2)
    listings = "\n".join(node.kamcmd("dmq.list_nodes") for node in nodes)
    raise AssertionError(f"the nodes did not all join within {timeout} s:\n{listings}")


def wait_contact(node: DivertNode, present: bool, timeout: float = 10) -> None:
    wait_for(
        f"alice's contact {'at' if present else 'gone from'} {node.listen}",
        lambda: (f"sip:alice@{NAT_CONTACT}" in node.kamcmd("ul.dump")) == present,
        timeout,
    )


def call_alice(workdir: Path, node: DivertNode, name: str, port: int) -> Peer:
    """A call to alice's number entering `node`; the phone that got it."""
    phone = callee(workdir, f"phone-{name}", PHONE, "answer")
    caller = call(workdir, f"caller-{name}", node.listen, ALICE, 200, f"{CALLER}:{port}")
    assert caller.wait() == 0, caller.diagnostics() + node.tail()
    time.sleep(0.3)
    phone.stop()
    return phone


def test_a_phone_registered_at_one_node_is_called_through_any(
    cluster: list[DivertNode], registered: None, tmp_path: Path
):
    for index, node in enumerate(cluster):
        phone = call_alice(tmp_path, node, f"via-{index + 1}", 7400 + index)
        (invite,) = phone.received()
        # the Contact it registered, reached where it really is: node 1 knows
        assert invite.request_line.startswith(f"INVITE sip:alice@{NAT_CONTACT}")
        routes = " ".join(invite.header("Record-Route"))
        assert NODES[0].split(":")[0] in routes, node.kamcmd("ul.dump")  # node 1 stays on the path
        if index:
            assert node.listen.split(":")[0] in routes


def test_a_peer_that_is_not_one_is_refused(cluster: list[DivertNode], tmp_path: Path):
    """KDMQ from a stranger (it would plant a registration) gets 403."""
    message = "\r\n".join(
        [
            f"KDMQ sip:usrloc@{NODES[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {NET}.106:7450;branch=z9hG4bK-kdmq-1",
            f"From: <sip:{NODES[0]}>;tag=kdmq1",
            f"To: <sip:usrloc@{NODES[1]}>",
            "Call-ID: kdmq-forged-1",
            "CSeq: 1 KDMQ",
            "Max-Forwards: 5",
            "Content-Type: application/json",
            "Content-Length: 2",
            "",
            "{}",
        ]
    ).encode()
    replies = exchange(NODES[1], f"{NET}.106:7450", message)
    assert replies[:1] and replies[0].startswith("SIP/2.0 403"), replies


def test_a_portal_change_routes_on_every_node(
    cluster: list[DivertNode], registered: None, carrier: Peer, tmp_path: Path
):
    cluster[0].divert("forward", "add", ALICE, "--when", "always", "--to", mobile(62))
    try:
        for index, node in enumerate(cluster):
            node.wait_store(lambda r: forwards_always(r, ALICE), "the new forward")
            before = len(carrier.received())
            caller = call(
                tmp_path, f"caller-{index}", node.listen, ALICE, 200, f"{CALLER}:{7410 + index}"
            )
            assert caller.wait() == 0, caller.diagnostics() + node.tail()
            time.sleep(0.3)
            invite = carrier.received()[before]
            assert invite.ruri_user == mobile(62)
            assert "reason=unconditional" in invite.header("Diversion")[0]
    finally:
        (forward_id,) = forward_ids(cluster[0].portal, mobile(62))
        cluster[0].divert("forward", "delete", str(forward_id))
    for node in cluster:
        node.wait_store(lambda r: not forwards_always(r, ALICE), "the forward gone")
    phone = call_alice(tmp_path, cluster[2], "after-delete", 7415)
    assert len(phone.received()) == 1


def test_a_feature_code_dialled_at_one_node_routes_on_every_node(
    cluster: list[DivertNode], registered: None, carrier: Peer, tmp_path: Path
):
    status = dial(cluster[1], tmp_path, f"*72{mobile(63)}", 480, 7460, password=PASSWORD)
    assert status == f"SIP/2.0 480 Forwarding Activated (always) to {mobile(63)}"
    try:
        for index in (2, 0):
            node = cluster[index]
            node.wait_store(lambda r: forwards_always(r, ALICE), "alice's own forward")
            before = len(carrier.received())
            caller = call(
                tmp_path,
                f"caller-code-{index}",
                node.listen,
                ALICE,
                200,
                f"{CALLER}:{7461 + index}",
            )
            assert caller.wait() == 0, caller.diagnostics() + node.tail()
            time.sleep(0.3)
            assert carrier.received()[before].ruri_user == mobile(63)
    finally:
        assert dial(cluster[2], tmp_path, "*73", 480, 7465, password=PASSWORD).startswith(
            "SIP/2.0 480 All Forwarding Cancelled"
        )
    for node in cluster:
        node.wait_store(lambda r: not forwards_always(r, ALICE), "alice's forward cancelled")


def forwards_always(reader: StoreReader, key: str) -> bool:
    table = reader.table(key)
    return table is not None and any(rule.condition.value == "always" for rule in table.rules)


def forward_ids(portal: str, destination: str) -> list[int]:
    engine = open_portal(portal)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id FROM forwards WHERE dest_value = :d"), {"d": destination}
        ).all()
    engine.dispose()
    return [row[0] for row in rows]


def test_a_node_killed_and_restarted_routes_to_the_phone_without_a_new_registration(
    cluster: list[DivertNode], registered: None, tmp_path: Path
):
    first = cluster[0]
    kill_node(first)  # its registrations: from its file (written every 5 s) and its peers
    first.start()
    wait_joined(cluster)
    wait_contact(first, present=True)
    for index in (1, 0):  # through node 2 (the Path to node 1), and node 1 itself
        phone = call_alice(tmp_path, cluster[index], f"after-kill-{index}", 7420 + index)
        assert len(phone.received()) == 1


def test_a_node_starting_with_no_registrations_gets_them_from_its_peers(
    cluster: list[DivertNode], registered: None, tmp_path: Path
):
    third = cluster[2]
    third.stop()
    for stored in third.state.glob("registrations.sqlite*"):
        stored.unlink()
    third.start()
    wait_contact(third, present=True, timeout=20)
    phone = call_alice(tmp_path, third, "synced", 7430)
    assert len(phone.received()) == 1


def test_a_node_lost_costs_only_its_calls_in_flight(
    cluster: list[DivertNode], registered: None, carrier: Peer, tmp_path: Path
):
    second, third = cluster[1], cluster[2]
    calls = 60  # 3 s through node 3, across node 2's death
    through_third = load(tmp_path, "third", third.listen, FORWARDED, f"{CALLER}:7440", calls, RATE)
    # through node 2 until it dies and after: a call that hears nothing for
    # 3 s has failed
    through_second = load(
        tmp_path, "second", second.listen, FORWARDED, f"{CALLER}:7441", 40, RATE, 3000
    )
    time.sleep(1.5)
    killed_at = time.monotonic()
    kill_node(second)
    assert through_third.wait(timeout=60) == 0, through_third.diagnostics()
    counted = tally(tmp_path, "third")
    assert (counted.successful, counted.failed) == (calls, 0)
    through_second.wait(timeout=90)
    lost = tally(tmp_path, "second")
    # every call the carrier sent node 2 more than a second before it died
    # was completed (a call takes about 0.3 s)
    started_before = int((killed_at - through_second.started - 1.0) * RATE)
    assert lost.successful >= started_before, (lost, started_before)
    second.start()  # back for whatever runs after
    wait_joined(cluster)


def kill_node(node: DivertNode) -> None:
    """SIGKILL to every process of the node at once, as a machine lost."""
    assert node.process is not None
    for pid in {node.process.pid, *ours(node)}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    node.process.wait()
    wait_for(f"{node.listen}'s processes gone", lambda: not ours(node))


def test_a_deregistration_at_one_node_is_seen_at_every_node(
    cluster: list[DivertNode], registered: None, carrier: Peer, tmp_path: Path
):
    leaves = register(
        tmp_path,
        "unregister",
        NODES[0],
        "alice",
        "acme",
        PHONE,
        0,
        PASSWORD,
        behind_nat=NAT_CONTACT,
    )
    assert leaves.wait() == 0, leaves.diagnostics()
    for node in cluster:
        wait_contact(node, present=False)
    before = len(carrier.received())
    caller = call(tmp_path, "caller-gone", NODES[2], ALICE, 200, f"{CALLER}:7450")
    assert caller.wait() == 0, caller.diagnostics()
    time.sleep(0.3)
    assert carrier.received()[before].ruri_user == mobile(60)  # not registered: her mobile
