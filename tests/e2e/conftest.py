"""A whole divert node for end-to-end tests: `divert run` with a real
Kamailio, a SQLite portal seeded through `divert`, peers on 127.0.0.x
(NET.x in a parallel worker: tests/e2e/net.py).

Addresses (each peer its own): Kamailio NET.1:5160; carriers NET.11:5080
and NET.12:5080; callers send from NET.11; customer PBXs NET.20-25:5060;
phones NET.30:5070; voicemail NET.40:5060.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from divert.cli import main
from divert.db import open_portal
from divert.kemi.store.reader import StoreReader
from tests.e2e.net import NET
from tests.e2e.sip import Peer, subscriber_call

NODE = f"{NET}.1:5160"
CARRIER_1 = f"{NET}.11:5080"
CARRIER_2 = f"{NET}.12:5080"
CALLER = f"{NET}.11"
PBX_A = f"{NET}.20:5060"
PBX_DEAD = f"{NET}.21:5060"
PBX_SILENT = f"{NET}.22:5060"
PBX_B = f"{NET}.23:5060"
PBX_G = f"{NET}.24:5060"  # tenant gamma's: no schedule, so its numbers get native plans
PBX_G_DEAD = f"{NET}.25:5060"  # gamma's trunk that never answers, with an emergency number
PROBE_SETTLE_S = 2.3  # the node's fail timer for a probe, and a margin
PHONE = f"{NET}.30:5070"
VOICEMAIL = f"{NET}.40:5060"
PHONE_SOURCE = f"{NET}.37"  # alice's phone dialling codes
ALICE_PASSWORD = "alice-secret"
CAROL_PASSWORD = "carol-secret"
DAVE_PASSWORD = "dave-secret1"
OPERATOR = "+393351000099"
EMERGENCY_DEAD = "+393330000912"
EMERGENCY_SILENT = "+393330000913"
EMERGENCY_G = "+393330000914"


def numbered(index: int) -> str:
    return f"+3902000000{index:02d}"


def mobile(index: int) -> str:
    return f"+3933510000{index:02d}"


SEED = [
    ("tenant", "add", "acme", "--region", "IT", "--voicemail-uri", "sip:{mailbox}@" + VOICEMAIL),
    ("tenant", "set", "acme", "--operator", OPERATOR),
    ("trunk", "add", "pbx-a", "--tenant", "acme", "--address", PBX_A),
    (
        "trunk",
        "add",
        "pbx-b",
        "--tenant",
        "acme",
        "--address",
        PBX_B,
        "--diversion-style",
        "history-info",
    ),
    (
        "trunk",
        "add",
        "pbx-dead",
        "--tenant",
        "acme",
        "--address",
        PBX_DEAD,
        "--emergency",
        EMERGENCY_DEAD,
    ),
    (
        "trunk",
        "add",
        "pbx-silent",
        "--tenant",
        "acme",
        "--address",
        PBX_SILENT,
        "--emergency",
        EMERGENCY_SILENT,
    ),
    (
        "subscriber",
        "add",
        "alice",
        "--tenant",
        "acme",
        "--password",
        ALICE_PASSWORD,
        "--extension",
        "201",
    ),
    ("number", "add", numbered(1), "--tenant", "acme", "--trunk", "pbx-a"),
    ("number", "add", numbered(2), "--tenant", "acme", "--trunk", "pbx-a"),
    ("number", "add", numbered(3), "--tenant", "acme", "--trunk", "pbx-a"),
    ("number", "add", numbered(4), "--tenant", "acme", "--trunk", "pbx-dead"),
    ("number", "add", numbered(5), "--tenant", "acme", "--trunk", "pbx-silent"),
    ("number", "add", numbered(6), "--tenant", "acme", "--trunk", "pbx-a"),
    ("number", "add", numbered(7), "--tenant", "acme", "--trunk", "pbx-b"),
    ("number", "add", numbered(8), "--tenant", "acme", "--subscriber", "alice"),
    ("number", "add", numbered(9), "--tenant", "acme", "--trunk", "pbx-a"),
    ("number", "add", numbered(10), "--tenant", "acme", "--trunk", "pbx-a"),
    ("number", "add", numbered(11), "--tenant", "acme", "--trunk", "pbx-a"),
    ("number", "add", numbered(12), "--tenant", "acme", "--trunk", "pbx-b"),
    ("number", "add", numbered(13), "--tenant", "acme", "--trunk", "pbx-a"),
    (
        "subscriber",
        "add",
        "carol",
        "--tenant",
        "acme",
        "--password",
        CAROL_PASSWORD,
        "--extension",
        "203",
        "--name",
        "Carol",
    ),
    ("number", "add", numbered(15), "--tenant", "acme", "--subscriber", "carol"),
    ("number", "add", numbered(16), "--tenant", "acme", "--trunk", "pbx-a"),
    (
        "schedule",
        "add",
        "--tenant",
        "acme",
        "--mode",
        "night",
        "--days",
        "all",
        "--from",
        "00:00",
        "--to",
        "00:00",
    ),
    ("forward", "add", numbered(16), "--when", "always", "--to", mobile(16), "--modes", "night"),
    ("tenant", "add", "beta", "--region", "IT", "--code-profile", "vpbx"),
    ("subscriber", "add", "dave", "--tenant", "beta", "--password", DAVE_PASSWORD),
    ("number", "add", numbered(17), "--tenant", "beta", "--subscriber", "dave"),
    (
        "schedule",
        "add",
        "--tenant",
        "beta",
        "--mode",
        "closed",
        "--days",
        "mon",
        "--from",
        "00:00",
        "--to",
        "00:01",
    ),
    ("forward", "add", numbered(17), "--when", "always", "--to", mobile(17), "--modes", "closed"),
    ("forward", "add", numbered(15), "--when", "no-answer", "--to", mobile(15), "--timeout", "2"),
    ("number", "add", numbered(14), "--tenant", "acme", "--trunk", "pbx-a"),
    *[
        ("number", "add", numbered(20 + i), "--tenant", "acme", "--trunk", "pbx-a")
        for i in range(8)
    ],
    ("forward", "add", numbered(1), "--when", "always", "--to", mobile(1)),
    ("forward", "add", numbered(2), "--when", "busy", "--to", mobile(2)),
    ("forward", "add", numbered(3), "--when", "no-answer", "--to", mobile(3), "--timeout", "2"),
    ("forward", "add", numbered(6), "--when", "busy", "--to", numbered(7)),
    ("forward", "add", numbered(7), "--when", "no-answer", "--to", "voicemail", "--timeout", "2"),
    ("forward", "add", numbered(8), "--when", "not-registered", "--to", mobile(8)),
    # tenant gamma: no time modes, so kamailio.cfg routes its calls from
    # native plans (tests/e2e/test_native_plans.py)
    ("tenant", "add", "gamma", "--region", "IT"),
    ("trunk", "add", "pbx-g", "--tenant", "gamma", "--address", PBX_G),
    *[
        ("number", "add", numbered(40 + i), "--tenant", "gamma", "--trunk", "pbx-g")
        for i in range(6)
    ],
    (
        "trunk",
        "add",
        "pbx-g-dead",
        "--tenant",
        "gamma",
        "--address",
        PBX_G_DEAD,
        "--emergency",
        EMERGENCY_G,
    ),
    ("number", "add", numbered(46), "--tenant", "gamma", "--trunk", "pbx-g-dead"),
    # no forward: the self-care page adds one (tests/e2e/test_self_care.py)
    ("number", "add", numbered(47), "--tenant", "gamma", "--trunk", "pbx-g"),
    ("forward", "add", numbered(40), "--when", "always", "--to", mobile(40)),
    ("forward", "add", numbered(41), "--when", "busy", "--to", mobile(41)),
    ("forward", "add", numbered(42), "--when", "no-answer", "--to", mobile(42), "--timeout", "2"),
    ("forward", "add", numbered(43), "--when", "always", "--to", "reject:603"),
    ("forward", "add", numbered(44), "--when", "busy", "--to", numbered(45)),
    ("forward", "add", numbered(45), "--when", "always", "--to", mobile(45)),
    ("forward", "add", numbered(9), "--when", "always", "--to", "reject:603"),
    ("forward", "add", numbered(11), "--when", "busy", "--to", numbered(12)),
    ("forward", "add", numbered(12), "--when", "busy", "--to", numbered(11)),
    (
        "forward",
        "add",
        numbered(13),
        "--when",
        "always",
        "--to",
        mobile(13),
        "--callers",
        "internal",
    ),
    ("forward", "add", numbered(14), "--when", "busy", "--to", "operator", "--callers", "external"),
    *[
        ("forward", "add", numbered(20 + i), "--when", "always", "--to", numbered(21 + i))
        for i in range(7)
    ],
]


class DivertNode:
    """`divert run` on `listen` (the session's node: NODE, a SQLite portal)."""

    def __init__(self, workdir: Path, portal: str | None = None, listen: str = NODE) -> None:
        self.workdir = workdir
        self.portal = portal or f"sqlite:///{workdir / 'portal.db'}"
        self.listen = listen
        self.state = workdir / "state"
        self.log = workdir / "divert-run.log"
        self.process: subprocess.Popen[bytes] | None = None
        # each node on its own address; not the default port, 9161: the demo
        # test's node (make run's command) takes 127.0.0.1:9161 beside gw0's
        self.metrics = f"{listen.split(':')[0]}:9162"
        self.options: tuple[str, ...] = ()  # more `divert run` options

    def scrape(self) -> str:
        """The node's Prometheus page."""
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=10) as page:
            return str(page.read().decode())

    def divert(self, *args: str) -> None:
        code = main(["--portal", self.portal, *args])
        assert code == 0, f"divert {' '.join(args)} -> {code}"

    def start(self) -> None:
        command = [
            str(Path(sys.executable).with_name("divert")),
            "--portal",
            self.portal,
            "run",
            "--listen",
            self.listen,
            "--state-dir",
            str(self.state),
            "--carrier",
            CARRIER_1,
            "--carrier",
            CARRIER_2,
            "--probe-interval",
            "1",
            "--children",
            "4",
            "--metrics",
            self.metrics,
            *self.options,
        ]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"divert run exited:\n{self.log.read_text()[-4000:]}")
            if options_ping(self.listen):
                return
            time.sleep(0.2)
        self.stop()  # never left running for the next test to find on its port
        raise AssertionError(
            f"node did not answer OPTIONS in 30 s:\n{self.log.read_text()[-4000:]}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def subscriber_forwards(self, username: str) -> list[tuple[str, str]]:
        """(condition, destination) of a subscriber's own forwards, from the portal."""
        return [(condition, value) for _, condition, value in self._forwards_of(username)]

    def subscriber_forward_ids(self, username: str) -> list[int]:
        return [forward_id for forward_id, _, _ in self._forwards_of(username)]

    def _forwards_of(self, username: str) -> list[tuple[int, str, str]]:
        from sqlalchemy import text

        engine = open_portal(self.portal)
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT f.id, f.condition, f.dest_value FROM forwards f JOIN subscribers s "
                    "ON s.id = f.subscriber_id WHERE s.username = :u ORDER BY f.id"
                ),
                {"u": username},
            ).all()
        engine.dispose()
        return [(forward_id, condition, value) for forward_id, condition, value in rows]

    def kamcmd(self, *args: str) -> str:
        socket_path = f"unix:{self.state / 'run' / 'kamailio_ctl'}"
        return subprocess.run(
            ["kamcmd", "-s", socket_path, *args], capture_output=True, text=True, timeout=10
        ).stdout

    def trunk_flags(self, address: str) -> str | None:
        """The dispatcher's flags of `address` ("AP": active and probed)."""
        return _flags_of(self.kamcmd("dispatcher.list"), f"sip:{address}")

    def wait_trunk(self, address: str, active: bool, timeout: float = 10) -> None:
        """Until the dispatcher's probing sees `address` up (or down).

        Up, and answered by a peer started just now: a probe sent before
        it listened still times out (after the node's 2 s fail timer) and
        marks the trunk down again, so "up" counts once the peer has
        listened for longer than that."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.trunk_flags(address)
            if state is not None and (state.startswith("A") == active):
                young = [
                    PROBE_SETTLE_S - peer.listening_for()
                    for peer in Peer.running
                    if peer.address == address and peer.listening_for() < PROBE_SETTLE_S
                ]
                if not active or not young:
                    return
                time.sleep(max(young))
                continue
            time.sleep(0.2)
        raise AssertionError(f"trunk {address} not {'up' if active else 'down'} in {timeout} s")

    def tail(self) -> str:
        return self.log.read_bytes()[-6000:].decode(errors="replace")

    def wait_store(
        self, shows: Callable[[StoreReader], bool], what: str, timeout: float = 10
    ) -> None:
        """Until the node's store `shows` something (a synced change), with a
        fresh reader each look; fail naming `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reader = StoreReader(self.state, cache_size=10)
            try:
                if shows(reader):
                    return
            finally:
                reader.close()
            time.sleep(0.1)
        raise AssertionError(f"the node's store does not show {what} after {timeout} s")

    def kamailio_pids(self) -> set[int]:
        """Kamailio's main process and its children."""
        main = int((self.state / "run" / "kamailio.pid.main").read_text())
        found = {main}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == main:
                found.add(int(stat.parent.name))
        return found


def _flags_of(listing: str, uri: str) -> str | None:
    lines = listing.splitlines()
    for index, line in enumerate(lines):
        if f"URI: {uri}" in line:
            for following in lines[index + 1 : index + 4]:
                if "FLAGS:" in following:
                    return following.split("FLAGS:", 1)[1].strip()
    return None


def options_ping(address: str) -> bool:
    host, port = address.split(":")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.settimeout(0.5)
    try:
        probe.bind((f"{NET}.99", 0))
        port_here = probe.getsockname()[1]
        request = "\r\n".join(
            [
                f"OPTIONS sip:{host}:{port} SIP/2.0",
                f"Via: SIP/2.0/UDP {NET}.99:{port_here};branch=z9hG4bK-probe",
                f"From: <sip:probe@{NET}.99>;tag=1",
                f"To: <sip:probe@{host}>",
                f"Call-ID: probe-{time.monotonic()}",
                "CSeq: 1 OPTIONS",
                "Max-Forwards: 5",
                "Content-Length: 0",
                "",
                "",
            ]
        )
        probe.sendto(request.encode(), (host, int(port)))
        reply = probe.recv(4096).decode(errors="replace")
        return reply.startswith("SIP/2.0 200")
    except OSError:
        return False
    finally:
        probe.close()


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DivertNode]:
    workdir = tmp_path_factory.mktemp("node")
    running = DivertNode(workdir)
    running.divert("db", "upgrade")
    for args in SEED:
        running.divert(*args)
    running.start()
    yield running
    running.stop()
    if os.environ.get("DIVERT_KEEP_E2E_LOGS"):
        print(running.tail())


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A test's folder; every sipp peer the test started is stopped after it."""
    yield tmp_path
    while Peer.running:
        Peer.running.pop().stop()


def dial(
    node: DivertNode,
    workdir: Path,
    code: str,
    final: int,
    port: int,
    password: str = ALICE_PASSWORD,
    compact: bool = False,
) -> str:
    """Alice dials `code`; returns the reply's status line."""
    phone = subscriber_call(
        workdir,
        f"dial-{port}",
        node.listen,
        code,
        final,
        f"{PHONE_SOURCE}:{port}",
        "alice",
        "acme",
        password,
        compact=compact,
    )
    code_ = phone.wait()
    assert code_ == 0, f"{phone.diagnostics()}\n{node.tail()}"
    return phone.replies()[-1]


def wait_for_store(node: DivertNode, wanted: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Alice's rules in the node's store, once they match (or after 3 s)."""
    deadline = time.monotonic() + 3
    rules = store_rules(node)
    while rules != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
        rules = store_rules(node)
    return rules


def store_rules(node: DivertNode) -> list[tuple[str, str]]:
    from divert.kemi.store.reader import StoreReader

    reader = StoreReader(node.state, cache_size=10)
    try:
        found = reader.table("sub:alice@acme")
        return (
            [] if found is None else [(r.condition.value, r.destination.key) for r in found.rules]
        )
    finally:
        reader.close()
