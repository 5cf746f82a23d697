"""An installed wheel runs a node, with no checkout in sight (issue 13).

The wheel is built from a copy of the source (offline: setuptools and wheel
from the test environment), installed into a fresh virtual environment
made with /usr/bin/python3 (the Python Kamailio embeds), and driven from a
folder outside the checkout.  Its dependencies come from the test
environment's site-packages through a .pth file, not from the network; the
`divert` package itself is only the installed one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import CALLER, CARRIER_1, options_ping
from tests.e2e.net import NET
from tests.e2e.sip import call, callee

ROOT = Path(__file__).resolve().parents[2]
LISTEN = f"{NET}.14:5160"
NUMBER, TARGET = "+390211110001", "+393351110001"
SKIPPED = (".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the built wheel installed; its prefix."""
    folder = tmp_path_factory.mktemp("installed")
    source = folder / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*SKIPPED))
    pip = [sys.executable, "-m", "pip", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(folder / "wheel"), source],
        check=True,
        capture_output=True,
    )
    (wheel,) = (folder / "wheel").glob("divert-*.whl")
    venv = folder / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = venv / "lib" / version / "site-packages"
    here = Path(sys.prefix) / "lib" / version / "site-packages"
    (site_packages / "test_dependencies.pth").write_text(f"{here}\n")
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(site_packages), str(wheel)],
        check=True,
        capture_output=True,
    )
    # the console script pip would write (not with --target): divert.cli:main
    (venv / "bin" / "divert").write_text(
        f"#!{venv / 'bin' / 'python3'}\nimport sys\nfrom divert.cli import main\nsys.exit(main())\n"
    )
    (venv / "bin" / "divert").chmod(0o755)
    return venv


def run_divert(venv: Path, cwd: Path, *args: str) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [str(venv / "bin" / "divert"), *args], cwd=cwd, env=environment, capture_output=True
    )
    assert result.returncode == 0, result.stderr.decode()


Running = tuple[Path, subprocess.Popen[bytes]]


@pytest.fixture
def installed_node(installed: Path, tmp_path: Path) -> Iterator[Running]:
    portal = f"sqlite:///{tmp_path / 'portal.db'}"
    for args in (
        ("db", "upgrade"),
        ("tenant", "add", "inst", "--region", "IT"),
        ("subscriber", "add", "ivan", "--tenant", "inst", "--password", "ivan-secret-1"),
        ("number", "add", NUMBER, "--tenant", "inst", "--subscriber", "ivan"),
        ("forward", "add", NUMBER, "--when", "always", "--to", TARGET),
    ):
        run_divert(installed, tmp_path, "--portal", portal, *args)
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115 -- closed below
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    options = ["--state-dir", str(tmp_path / "state"), "--carrier", CARRIER_1]
    options += ["--metrics", f"{LISTEN.split(':')[0]}:9161"]  # not 127.0.0.1's default
    node = subprocess.Popen(
        [
            str(installed / "bin" / "divert"),
            "--portal",
            portal,
            "run",
            "--listen",
            LISTEN,
            *options,
        ],
        cwd=tmp_path,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not options_ping(LISTEN):
            assert node.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.2)
        yield tmp_path, node
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
        log.close()


def carrier_up(folder: Path) -> bool:
    listing = subprocess.run(
        ["kamcmd", "-s", f"unix:{folder / 'state' / 'run' / 'kamailio_ctl'}", "dispatcher.list"],
        capture_output=True,
        text=True,
    ).stdout
    return f"URI: sip:{CARRIER_1}" in listing and "FLAGS: AP" in listing


def test_an_installed_wheel_runs_a_node_that_routes_a_call(
    installed: Path, installed_node: Running, workdir: Path
):
    folder, _ = installed_node
    main = int((folder / "state" / "run" / "kamailio.pid").read_text())
    command = Path(f"/proc/{main}/cmdline").read_bytes().split(b"\0")
    config = command[command.index(b"-f") + 1].decode()
    assert config.startswith(str(installed)) and config.endswith("kamailio_cfg/kamailio.cfg")
    assert not any(str(ROOT).encode() in part for part in command)  # nothing of the checkout

    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    deadline = time.monotonic() + 10
    while (
        CARRIER_1.encode()
        not in subprocess.run(  # the carrier is probed up
            [
                "kamcmd",
                "-s",
                f"unix:{folder / 'state' / 'run' / 'kamailio_ctl'}",
                "dispatcher.list",
            ],
            capture_output=True,
        ).stdout
        or b"FLAGS: AP"
        not in subprocess.run(
            [
                "kamcmd",
                "-s",
                f"unix:{folder / 'state' / 'run' / 'kamailio_ctl'}",
                "dispatcher.list",
            ],
            capture_output=True,
        ).stdout
    ):
        assert time.monotonic() < deadline, "the carrier is not probed up"
        time.sleep(0.2)
    caller = call(workdir, "caller", LISTEN, NUMBER, 200, f"{CALLER}:7200")
    assert caller.wait() == 0, caller.diagnostics() + (folder / "run.log").read_text()[-3000:]
    carrier.stop()
    assert carrier.received()[0].ruri_user == TARGET
