"""`divert run` refuses to start, in one line, when it cannot work."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from divert import node
from divert.cli import main
from divert.errors import DivertError
from divert.kemi.signing import ensure_key, load_key


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_a_taken_port_is_one_line(sqlite_url: str, tmp_path: Path, capsys):
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        code, err = run(
            capsys,
            "--portal",
            sqlite_url,
            "run",
            "--listen",
            f"127.0.0.1:{port}",
            "--state-dir",
            str(tmp_path / "state"),
        )
    finally:
        taken.close()
    assert code == 2
    expected = (
        f"cannot listen on 127.0.0.1:{port}: Address already in use; is another node running?"
    )
    assert err == f"divert: {expected}\n"


def test_an_unreachable_portal_without_a_store_is_one_line(tmp_path: Path, capsys):
    code, err = run(
        capsys,
        "--portal",
        "postgresql://divert:divert@127.0.0.1:9/none",
        "run",
        "--listen",
        "127.0.0.1:5199",
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert code == 1
    assert err.count("\n") == 1 and "portal is unreachable and this node has no store" in err


def test_missing_kamailio_is_one_line(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(node.shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(DivertError, match="Kamailio is not installed: run 'make deps'"):
        node.kamailio_binary()


def test_a_bad_listen_address_is_one_line(sqlite_url: str, tmp_path: Path, capsys):
    code, err = run(
        capsys,
        "--portal",
        sqlite_url,
        "run",
        "--listen",
        "localhost",
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert code == 2 and "must be IPv4:PORT" in err


def test_a_bad_shared_memory_size_is_one_line(sqlite_url: str, tmp_path: Path, capsys):
    code, err = run(
        capsys,
        "--portal",
        sqlite_url,
        "run",
        "--shm",
        "8",
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert code == 2 and "--shm must be 32-65536 MB" in err


def test_a_bad_cache_size_is_one_line(sqlite_url: str, tmp_path: Path, capsys):
    code, err = run(
        capsys, "--portal", sqlite_url, "run", "--cache", "0", "--state-dir", str(tmp_path)
    )
    assert code == 2 and "--cache must be 100-10000000 entries" in err


def test_the_cache_size_reaches_each_sip_worker(
    sqlite_url: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    started: list[node.NodeConfig] = []
    monkeypatch.setattr(node, "run_node", lambda config, _reachable: started.append(config) or 0)
    code, _ = run(
        capsys, "--portal", sqlite_url, "run", "--cache", "200000", "--state-dir", str(tmp_path)
    )
    ensure_key(tmp_path)  # as the node's start makes it
    # kemi.adapter.AdapterConfig reads it in each worker
    environment = node.Node(started[0])._kamailio_environment()
    assert code == 0 and environment["DIVERT_CACHE_SIZE"] == "200000"
    # the native routes check dialog signatures with the key (kamailio.cfg)
    assert environment["DIVERT_NODE_KEY"] == load_key(tmp_path).hex()


def test_the_plan_table_is_sized_to_the_store():
    assert [node.plan_slot_bits(n) for n in (0, 1_000, 100_000, 1_000_000, 10**8)] == [
        12,
        12,
        18,
        20,
        20,
    ]


@pytest.mark.parametrize(
    ("peers", "message"),
    [
        (["127.0.0.1:5070"], "a peer needs an address other than this node's (127.0.0.1)"),
        (["10.0.0.2:5060", "10.0.0.2:5060"], "--peer 10.0.0.2:5060 is given twice"),
        (["peer-b"], "--peer 'peer-b' must be IPv4:PORT"),
        ([f"10.0.0.{i}:5060" for i in range(2, 10)], "at most 7 --peer: a cluster of 8 nodes"),
    ],
)
def test_bad_peers_are_one_line(
    sqlite_url: str, tmp_path: Path, capsys, peers: list[str], message: str
):
    options = [option for peer in peers for option in ("--peer", peer)]
    code, err = run(capsys, "--portal", sqlite_url, "run", "--state-dir", str(tmp_path), *options)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_peers_make_a_cluster_node(
    sqlite_url: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    """Each peer: DMQ's, and dispatcher set 2 (heard, never probed nor
    chosen); Python adds a Path to REGISTERs.  Without peers: none of it."""
    started: list[node.NodeConfig] = []
    monkeypatch.setattr(node, "run_node", lambda config, _reachable: started.append(config) or 0)
    peers = ("--peer", "127.0.0.2:5060", "--peer", "127.0.0.3:5060")
    for options in (peers, ()):
        code, _ = run(capsys, "--portal", sqlite_url, "run", "--state-dir", str(tmp_path), *options)
        assert code == 0
    ensure_key(tmp_path)
    clustered, alone = (node.Node(config) for config in started)
    monkeypatch.setattr(node.Node, "_numbers", lambda _self: 0)
    command = " ".join(clustered._kamailio_command())
    for define in (
        "CLUSTER=1",
        'DMQ_SERVER="sip:127.0.0.1:5060"',
        'DMQ_PEER_1="sip:127.0.0.2:5060"',
        'DMQ_PEER_2="sip:127.0.0.3:5060"',
    ):
        assert f"-A {define}" in command
    assert "CLUSTER" not in " ".join(alone._kamailio_command())
    assert clustered._kamailio_environment()["DIVERT_CLUSTER"] == "1"
    assert alone._kamailio_environment()["DIVERT_CLUSTER"] == ""


def test_peers_are_in_the_dispatcher_list_as_set_2(tmp_path: Path):
    from divert.sync.worker import SyncWorker, WorkerConfig

    url = f"sqlite:///{tmp_path / 'portal.db'}"
    assert main(["--portal", url, "db", "upgrade"]) == 0
    worker = SyncWorker(WorkerConfig(url, tmp_path))
    worker.sync_once()
    worker.close()
    listing = node.dispatcher_list(tmp_path, ("127.0.0.9:5060",), ("127.0.0.2:5060",))
    assert listing.splitlines() == ["1 sip:127.0.0.9:5060 8 10", "2 sip:127.0.0.2:5060 4 0"]
