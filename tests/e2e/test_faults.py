"""A node that keeps routing through faults, and leaves nothing behind (issue 12).

One `divert run` per test on NET.7 (tests/e2e/net.py), beside the session's node.  Each
fault is injected while a bounded sipp load (carrier -> node -> carrier,
an unconditional forward) runs: the calls placed before, during and after
it are counted, the node must repair itself, log one line about it, and
leave no process outside its own tree (checked from /proc).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from divert.kemi.store.format import STORE_FILE
from tests.conftest import portal_reachable
from tests.e2e.conftest import (
    ALICE_PASSWORD,
    CALLER,
    CARRIER_1,
    CARRIER_2,
    PHONE,
    SEED,
    DivertNode,
    mobile,
    numbered,
    options_ping,
)
from tests.e2e.net import NET
from tests.e2e.sip import Peer, call, callee, exchange, load, raw_request, register, tally
from tests.e2e.test_native_plans import plans_ready, settled

LISTEN = f"{NET}.7:5160"
RATE = 20  # calls a second
FORWARDED = numbered(1)  # always -> mobile(1), through the carriers


def seeded_node(workdir: Path, portal: str | None = None) -> DivertNode:
    running = DivertNode(workdir, portal=portal, listen=LISTEN)
    if portal is None:
        running.divert("db", "upgrade")
    for args in SEED:
        running.divert(*args)
    return running


@pytest.fixture
def fault_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DivertNode]:
    running = seeded_node(tmp_path_factory.mktemp("fault-node"))
    running.start()
    yield running
    running.stop()
    assert ours(running) == [], "processes left after divert run stopped"


@pytest.fixture
def carriers(workdir: Path, fault_node: DivertNode) -> Iterator[list[Peer]]:
    """Both carriers answering every call (and the probes)."""
    peers = [
        callee(workdir, "carrier-1", CARRIER_1, "answer", calls=400),
        callee(workdir, "carrier-2", CARRIER_2, "answer", calls=400),
    ]
    fault_node.wait_trunk(CARRIER_1, active=True)
    yield peers


# -- what /proc says ------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def ours(node: DivertNode) -> list[int]:
    """Live processes (zombies excluded) whose command line names the node's state folder."""
    marker = str(node.state).encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in entry.read_bytes():
                stat = _stat(int(entry.parent.name))
                if stat is not None and stat[0] != "Z":
                    found.append(int(entry.parent.name))
        except OSError:
            continue
    return sorted(found)


def strays(node: DivertNode) -> list[int]:
    """The node's processes that are not descendants of its `divert run`."""
    assert node.process is not None
    root = node.process.pid
    lost = []
    for pid in ours(node):
        ancestor = pid
        while ancestor not in (root, 0, 1):
            stat = _stat(ancestor)
            if stat is None:
                break
            ancestor = int(stat[1])
        if ancestor != root:
            lost.append(pid)
    return lost


def group(leader: int) -> list[int]:
    return [
        int(stat.parent.name)
        for stat in Path("/proc").glob("[0-9]*/stat")
        if (fields := _stat(int(stat.parent.name))) is not None and int(fields[2]) == leader
    ]


def pid_of(node: DivertNode, name: str) -> int:
    return int((node.state / "run" / f"{name}.pid").read_text())


def sip_workers(node: DivertNode) -> list[int]:
    """PIDs of Kamailio's UDP receivers (its SIP workers), from core.psx."""
    listing = node.kamcmd("core.psx")
    return [
        int(pid)
        for pid, description in re.findall(r"IDX: \d+\s+PID: (\d+)\s+DSC: ([^\n]*)", listing)
        if "receiver" in description
    ]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not seen within {timeout} s: {what}")


def logged(node: DivertNode, pattern: str) -> list[str]:
    text = node.log.read_text(errors="replace")
    return [line for line in text.splitlines() if re.search(pattern, line)]


def wait_logged(node: DivertNode, pattern: str, timeout: float = 15) -> str:
    wait_for(f"log line /{pattern}/\n{node.tail()}", lambda: bool(logged(node, pattern)), timeout)
    return logged(node, pattern)[0]


def answering_again(node: DivertNode, old_kamailio: int) -> int:
    """Until a new Kamailio answers SIP; its PID."""
    wait_for(
        "a new Kamailio answering",
        lambda: pid_of(node, "kamailio") != old_kamailio and options_ping(node.listen),
        timeout=20,
    )
    return pid_of(node, "kamailio")


def one_call_routes(node: DivertNode, workdir: Path, name: str, number: str = FORWARDED) -> None:
    caller = call(workdir, name, node.listen, number, 200, f"{CALLER}:7190")
    assert caller.wait() == 0, caller.diagnostics() + node.tail() + node.kamcmd("dispatcher.list")


def all_calls_route(node: DivertNode, workdir: Path, name: str, source: str, calls: int) -> None:
    """A bounded load to the forwarded number; every call must be answered."""
    caller = load(workdir, name, node.listen, FORWARDED, source, calls=calls, rate=RATE)
    assert caller.wait() == 0, caller.diagnostics() + node.tail()
    assert tally(workdir, name).failed == 0


# -- the faults -----------------------------------------------------------------------


def test_a_killed_sync_worker_comes_back_while_calls_route(
    fault_node: DivertNode, carriers: list[Peer], workdir: Path
):
    kamailio = pid_of(fault_node, "kamailio")
    sync = pid_of(fault_node, "sync")
    caller = load(workdir, "load", LISTEN, FORWARDED, f"{CALLER}:7100", calls=60, rate=RATE)
    time.sleep(1.0)
    os.kill(sync, signal.SIGKILL)
    assert caller.wait() == 0, caller.diagnostics()
    assert tally(workdir, "load").failed == 0

    wait_logged(fault_node, rf"sync \(pid {sync}\) was killed by SIGKILL.*restarting in")
    wait_for("a new sync worker", lambda: pid_of(fault_node, "sync") != sync)
    assert pid_of(fault_node, "kamailio") == kamailio  # Kamailio kept routing throughout
    # the new worker syncs: a portal change reaches the store
    fault_node.divert("forward", "add", numbered(4), "--when", "always", "--to", mobile(44))
    fault_node.wait_store(lambda r: r.table(numbered(4)) is not None, "the new forward")
    assert strays(fault_node) == []
    # the portal's URL (a password, on PostgreSQL) is on no child's command line
    assert fault_node.process is not None
    children = [pid for pid in ours(fault_node) if pid != fault_node.process.pid]
    assert children and not [
        pid
        for pid in children
        if fault_node.portal.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


@pytest.mark.parametrize("victim", ["a SIP worker", "the main process"])
def test_killed_kamailio_restarts_losing_only_calls_in_flight(
    fault_node: DivertNode, carriers: list[Peer], workdir: Path, victim: str
):
    main = pid_of(fault_node, "kamailio")
    old_group = group(main)
    assert len(old_group) > 4
    target = sip_workers(fault_node)[0] if victim == "a SIP worker" else main
    caller = load(workdir, "load", LISTEN, FORWARDED, f"{CALLER}:7101", calls=120, rate=RATE)
    time.sleep(2.0)
    os.kill(target, signal.SIGKILL)
    new_main = answering_again(fault_node, main)
    caller.wait()
    counted = tally(workdir, "load")

    print(f"kill -9 of {victim}: {counted}")  # the README's figures: pytest -s
    assert counted.successful + counted.failed == 120
    # at 20 calls/s a call lasts ~0.3 s: a second of calls is more than were in flight
    assert counted.failed <= RATE, (counted, caller.diagnostics())
    ending = "exited with status" if victim == "a SIP worker" else "was killed by SIGKILL"
    wait_logged(fault_node, rf"kamailio \(pid {main}\) {ending}.*restarting in")
    # reaped, no zombie: nothing is left in the old group (a PID may be reused
    # by now, pid_max is small here, but never with the old group's number)
    assert group(main) == []
    assert new_main != main
    assert strays(fault_node) == []
    one_call_routes(fault_node, workdir, "after")


def test_registrations_survive_a_kamailio_crash(
    fault_node: DivertNode, carriers: list[Peer], workdir: Path
):
    registers = register(workdir, "register", LISTEN, "alice", "acme", PHONE, 300, ALICE_PASSWORD)
    assert registers.wait() == 0, registers.diagnostics()
    stored = fault_node.state / "registrations.sqlite"
    phone = callee(workdir, "phone-before", PHONE, "answer")
    caller = call(workdir, "caller-before", LISTEN, numbered(8), 200, f"{CALLER}:7107")
    assert caller.wait() == 0, caller.diagnostics() + fault_node.tail()
    phone.stop()

    def written() -> bool:  # usrloc writes back every 5 s
        with sqlite3.connect(f"file:{stored}?mode=ro", uri=True) as db:
            return (
                db.execute("SELECT count(*) FROM location WHERE username = 'alice'").fetchone()[0]
                == 1
            )

    wait_for("alice's contact in registrations.sqlite", written, timeout=10)
    main = pid_of(fault_node, "kamailio")
    os.kill(main, signal.SIGKILL)  # no clean stop: only what was written survives
    answering_again(fault_node, main)

    phone = callee(workdir, "phone", PHONE, "answer")
    caller = call(workdir, "caller", LISTEN, numbered(8), 200, f"{CALLER}:7102")
    assert caller.wait() == 0, caller.diagnostics() + fault_node.tail()
    phone.stop()
    assert phone.received()[0].request_line.startswith(f"INVITE sip:alice@{NET}.30:5070")


def test_a_killed_supervisor_leaves_no_process_and_the_node_starts_again(
    fault_node: DivertNode, carriers: list[Peer], workdir: Path
):
    assert fault_node.process is not None
    all_calls_route(fault_node, workdir, "before", f"{CALLER}:7105", 20)
    children = ours(fault_node)
    assert len(children) > 6  # divert run, sync, Kamailio and its workers
    fault_node.process.kill()
    fault_node.process.wait()
    wait_for(f"no process of the node left, {ours(fault_node)}", lambda: not ours(fault_node))

    fault_node.start()  # the port is free, the state folder's lock too
    fault_node.wait_trunk(CARRIER_1, active=True)
    all_calls_route(fault_node, workdir, "after", f"{CALLER}:7106", 20)


def test_a_deleted_store_is_rebuilt_while_calls_route(
    fault_node: DivertNode, carriers: list[Peer], workdir: Path
):
    caller = load(workdir, "load", LISTEN, FORWARDED, f"{CALLER}:7103", calls=80, rate=RATE)
    time.sleep(1.0)
    (fault_node.state / STORE_FILE).unlink()
    assert caller.wait() == 0, caller.diagnostics()
    assert tally(workdir, "load").failed == 0  # readers route from the file they have open

    wait_logged(fault_node, r"store .* was deleted; rebuilding it from the portal")
    wait_logged(fault_node, r"store rebuilt as store\.2\.sqlite")
    assert (fault_node.state / STORE_FILE).resolve().name == "store.2.sqlite"
    # a new Kamailio opens the rebuilt store
    main = pid_of(fault_node, "kamailio")
    os.kill(main, signal.SIGKILL)
    answering_again(fault_node, main)
    one_call_routes(fault_node, workdir, "after")


def test_native_plans_come_back_after_a_deleted_store_and_a_killed_kamailio(
    fault_node: DivertNode, carriers: list[Peer], workdir: Path
):
    """The plan table follows the store into its rebuilt file, and a new
    Kamailio fills it again; meanwhile calls route through Python."""
    planned = numbered(40)  # tenant gamma: always -> mobile(40), from a plan
    before = settled(fault_node)
    one_call_routes(fault_node, workdir, "planned", planned)
    assert settled(fault_node) == before + 1

    (fault_node.state / STORE_FILE).unlink()
    one_call_routes(fault_node, workdir, "store-gone", planned)  # from the open file
    wait_logged(fault_node, r"store rebuilt as store\.2\.sqlite")
    wait_for("plans of the rebuilt store", lambda: plans_ready(fault_node))
    counted = settled(fault_node)
    one_call_routes(fault_node, workdir, "rebuilt", planned)
    assert settled(fault_node) == counted + 1

    main = pid_of(fault_node, "kamailio")
    os.kill(main, signal.SIGKILL)
    answering_again(fault_node, main)
    wait_for("plans in the new Kamailio", lambda: plans_ready(fault_node))
    counted = settled(fault_node)  # a new Kamailio counts from 0
    one_call_routes(fault_node, workdir, "restarted", planned)
    assert settled(fault_node) == counted + 1


def test_a_damaged_store_answers_503_then_is_rebuilt(
    fault_node: DivertNode, carriers: list[Peer], workdir: Path
):
    wait_logged(fault_node, r"sync worker started")  # it damages no file it has not opened
    store = (fault_node.state / STORE_FILE).resolve()

    def checkpointed() -> bool:  # every page in the file, none left in the WAL to read instead
        with sqlite3.connect(store) as db:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return bool(busy == 0)

    wait_for("a complete checkpoint", checkpointed)
    with open(store, "r+b") as file:  # every page but the first: junk
        file.seek(4096)
        file.write(os.urandom(store.stat().st_size - 4096))

    codes: list[str] = []
    rejected = f"sip:{numbered(9)}@{LISTEN}"  # always -> reject:603, no carrier involved
    for index in range(40):  # a number no worker has cached: every try reads the store
        invite = raw_request("INVITE", rejected, f"{CALLER}:{7110 + index}")
        codes += [
            c
            for c in exchange(LISTEN, f"{CALLER}:{7110 + index}", invite, 0.5)
            if " 1" not in c[7:9]
        ]
        if logged(fault_node, r"store rebuilt as"):
            break
    assert "SIP/2.0 503 Service Unavailable" in codes, codes
    wait_logged(fault_node, r"store .* is damaged .*; rebuilding it from the portal")
    wait_logged(fault_node, r"store rebuilt as store\.2\.sqlite")
    assert len(logged(fault_node, r"rebuilding it from the portal")) == 1
    one_call_routes(fault_node, workdir, "after")
    assert strays(fault_node) == []


@pytest.fixture
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 4 MB tmpfs for the node's state folder, unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    folder = tmp_path_factory.mktemp("small-disk")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=False)


def test_a_full_disk_keeps_the_last_store_and_recovers(
    small_disk: Path, tmp_path_factory: pytest.TempPathFactory, workdir: Path
):
    running = seeded_node(tmp_path_factory.mktemp("full-disk-node"))
    running.state = small_disk / "state"
    running.start()
    try:
        callee(workdir, "carrier-1", CARRIER_1, "answer", calls=400)
        running.wait_trunk(CARRIER_1, active=True)
        filler = small_disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        running.divert("forward", "add", numbered(4), "--when", "always", "--to", mobile(44))
        wait_logged(running, r"store write failed \(database or disk is full\)")

        caller = load(workdir, "load", LISTEN, FORWARDED, f"{CALLER}:7104", calls=40, rate=RATE)
        assert caller.wait() == 0, caller.diagnostics()  # routing from the last good store
        assert tally(workdir, "load").failed == 0

        filler.unlink()
        running.wait_store(lambda r: r.table(numbered(4)) is not None, "the new forward", 20)
        wait_logged(running, r"the store is writable again")
        assert len(logged(running, r"store write failed")) == 1
        carrier = callee(workdir, "carrier-2", CARRIER_2, "answer", calls=10)
        one_call_routes(running, workdir, "after", numbered(4))
        carrier.stop()
    finally:
        running.stop()
    assert ours(running) == []


@pytest.mark.postgres
def test_a_node_restarted_while_the_portal_is_down_routes_from_its_store(
    pg_url: str, tmp_path_factory: pytest.TempPathFactory, workdir: Path
):
    running = seeded_node(tmp_path_factory.mktemp("portal-down-node"), portal=pg_url)
    callee(workdir, "carrier-1", CARRIER_1, "answer", calls=400)
    running.start()
    try:
        running.wait_trunk(CARRIER_1, active=True)
        all_calls_route(running, workdir, "before", f"{CALLER}:7108", 20)
        running.stop()
        portal_reachable(pg_url, False)
        running.start()
        running.wait_trunk(CARRIER_1, active=True)
        all_calls_route(running, workdir, "during", f"{CALLER}:7109", 40)
        assert len(logged(running, r"unreachable")) == 1, running.tail()
        assert logged(running, r"portal unreachable: routing from the store synced at")

        portal_reachable(pg_url, True)
        wait_logged(running, r"portal reachable again", timeout=40)
        running.divert("forward", "add", numbered(4), "--when", "always", "--to", mobile(44))
        running.wait_store(lambda r: r.table(numbered(4)) is not None, "the new forward")
    finally:
        portal_reachable(pg_url, True)
        running.stop()
    assert ours(running) == []


def test_divert_run_tells_systemd_it_is_ready_once_sip_is_answered(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
):
    import socket

    folder = tmp_path_factory.mktemp("notify")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(folder / "notify.sock"))
    systemd.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(folder / "notify.sock"))
    running = seeded_node(folder)
    running.start()
    try:
        ready = systemd.recv(4096).decode()
        assert ready.startswith("READY=1\n") and f"STATUS=routing on {LISTEN}" in ready
        assert options_ping(LISTEN)
    finally:
        running.stop()
        stopping = systemd.recv(4096).decode()
        systemd.close()
    assert stopping == "STOPPING=1"
