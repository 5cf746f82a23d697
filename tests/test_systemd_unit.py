"""deploy/divert.service: systemd accepts it, and it keeps the settings the
node relies on (Type=notify, KillMode=mixed) and its hardening.

`systemd-analyze verify` runs on a copy whose ExecStart is this checkout's
own `divert` and whose user is root: the shipped unit names /opt/divert and
user divert, which a test machine need not have, and verify complains
about a missing binary.  Only lines naming the unit file count: verify may
also warn about unrelated units of the machine it runs on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "divert.service"
ENV_EXAMPLE = ROOT / "deploy" / "divert.env.example"
INSTALLED_DIVERT = "/opt/divert/.venv/bin/divert"

Settings = dict[tuple[str, str], list[str]]

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ReadWritePaths": "/var/lib/divert",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "RemoveIPC": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
}


def parse_unit(text: str) -> Settings:
    """(section, key) -> every value given, in order; comments and
    backslash continuations handled as systemd does."""
    settings: Settings = {}
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, equals, value = line.partition("=")
        assert equals, f"not key=value in [{section}]: {line!r}"
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


@pytest.fixture(scope="module")
def unit() -> Settings:
    return parse_unit(UNIT.read_text())


def one(settings: Settings, key: str, section: str = "Service") -> str:
    values = settings.get((section, key))
    assert values is not None, f"{key}= missing from [{section}] of {UNIT.name}"
    assert len(values) == 1, f"{key}= given {len(values)} times in [{section}]: {values}"
    return values[0]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    divert = Path(sys.prefix) / "bin" / "divert"
    assert divert.is_file(), f"{divert} missing: run 'make deps'"
    text = UNIT.read_text()
    assert text.count(f"ExecStart={INSTALLED_DIVERT} ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(
        re.sub(
            r"^(User|Group)=divert$",
            r"\1=root",
            text.replace(f"ExecStart={INSTALLED_DIVERT} ", f"ExecStart={divert} "),
            flags=re.MULTILINE,
        )
    )
    result = subprocess.run(
        [analyze, "verify", "--man=no", "--recursive-errors=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    ours = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if UNIT.name in line or str(copy) in line
    ]
    assert ours == [], "\n".join(ours)
    assert result.returncode == 0, result.stderr


def test_the_node_is_started_and_stopped_the_way_divert_run_expects(unit: Settings) -> None:
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"  # READY=1 comes from divert run itself
    assert one(unit, "KillMode") == "mixed"  # SIGTERM to divert run alone
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "RestartSec")
    assert one(unit, "TimeoutStopSec")
    assert one(unit, "StartLimitIntervalSec", section="Unit") == "0"  # never gives up
    assert one(unit, "User") == "divert"
    assert one(unit, "Group") == "divert"
    assert one(unit, "StateDirectory") == "divert"
    assert one(unit, "EnvironmentFile") == "-/etc/divert/divert.env"
    command = one(unit, "ExecStart").split()
    assert command[:2] == [INSTALLED_DIVERT, "run"]
    assert command[command.index("--state-dir") + 1] == "/var/lib/divert"
    assert not INSTALLED_DIVERT.startswith(("/home/", "/root/"))  # ProtectHome=yes hides those
    assert one(unit, "WantedBy", section="Install") == "multi-user.target"


def test_the_unit_keeps_its_hardening(unit: Settings) -> None:
    for key, value in HARDENING.items():
        assert one(unit, key) == value, f"{key}={value} expected"
    families = one(unit, "RestrictAddressFamilies").split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"]
    assert "AmbientCapabilities" not in {key for _, key in unit}  # no port below 1024


def test_no_memory_limit_below_kamailios_shared_memory(unit: Settings) -> None:
    """Kamailio maps --shm (512 MB by default) at start: a MemoryMax= under
    that, plus the processes' own memory, would OOM-kill the node."""
    for key in ("MemoryMax", "MemoryHigh", "MemoryLimit"):
        assert ("Service", key) not in unit, f"{key}= set: see the comment in {UNIT.name}"


def test_every_variable_the_unit_uses_is_documented_in_the_example(unit: Settings) -> None:
    used = set(re.findall(r"\$\{?(\w+)", one(unit, "ExecStart")))
    assert used == {"DIVERT_LISTEN", "DIVERT_RUN_OPTIONS"}
    example = ENV_EXAMPLE.read_text()
    for name in [*used, "DIVERT_PORTAL"]:
        assert re.search(rf"^{name}=", example, flags=re.MULTILINE), f"{name} not in the example"
