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
