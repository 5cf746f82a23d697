"""The README's tour of `divert` works as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tour() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"```sh tour\n(.*?)```", readme, re.S)
    assert match, "README.md has no ```sh tour block"
    return match.group(1)


def test_tour_runs_top_to_bottom(tmp_path: Path):
    # in a folder of its own: the tour's var/tour/portal.db is made there
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = dict(os.environ, PATH=path)
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", tour()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "refused, as it should be" in out
    assert "would close a loop for external callers: +390212345678 -> +390287654321" in (
        result.stderr
    )
    assert "2. after busy: forward 1 (busy -> +393351112233)" in out
    assert "forward 1 now goes to +393351119999" in out
    assert "allowed countries: 39,41" in out
