"""The README's demo section, walked as written, slowly (issue 15): the
node as `make run` starts it, the carrier and the call as the README gives
them, and a minute between the two, as a newcomer reading along takes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from divert.readiness import sip_answers

ROOT = Path(__file__).resolve().parents[2]
PAUSE = 60  # seconds between starting the carrier and the call


def demo_commands() -> tuple[str, str]:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"```sh demo\n(.*?)```", readme, re.S)
    assert found, "README.md has no ```sh demo block"
    carrier, call = found.group(1).split("\n", 1)
    return carrier, call


def test_make_run_recipe_is_the_one_this_test_starts():
    makefile = (ROOT / "Makefile").read_text()
    assert "run --listen 127.0.0.1:5060" in makefile
    assert "--state-dir var --carrier 127.0.0.2:5060" in makefile


def test_the_readme_demo_call_is_answered_after_a_minute(tmp_path: Path):
    portal = f"sqlite:///{tmp_path / 'portal.db'}"
    env = {**os.environ, "DIVERT_PORTAL": portal}
    made = subprocess.run([str(ROOT / "scripts" / "demo-portal")], env=env, capture_output=True)
    assert made.returncode == 0, made.stderr.decode()
    divert = str(Path(sys.executable).with_name("divert"))
    with open(tmp_path / "node.log", "wb") as node_log:
        node = subprocess.Popen(
            [divert, "run", "--listen", "127.0.0.1:5060", "--state-dir", str(tmp_path / "var"),
             "--carrier", "127.0.0.2:5060"],
            env=env, stdout=subprocess.DEVNULL, stderr=node_log,
        )  # fmt: skip
    carrier_pid = None
    try:
        assert sip_answers("127.0.0.1:5060", 30), (tmp_path / "node.log").read_text()[-3000:]
        carrier_command, call_command = demo_commands()
        started = subprocess.run(
            ["bash", "-c", carrier_command], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
        pid = re.search(r"PID=\[(\d+)\]", started.stdout + started.stderr)
        assert pid, started.stdout + started.stderr
        carrier_pid = int(pid.group(1))
        time.sleep(PAUSE)
        call = subprocess.run(
            ["bash", "-c", call_command], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        log = (tmp_path / "node.log").read_text()[-3000:]
        assert call.returncode == 0, f"{call.stdout[-2000:]}\n{log}"
    finally:
        if carrier_pid is not None:
            os.kill(carrier_pid, signal.SIGTERM)
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=30)
