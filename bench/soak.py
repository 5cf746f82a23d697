"""Soak test: one divert node under steady call load for minutes, its memory watched.

    make soak                                       # 100 calls/s for 5 minutes
    .venv/bin/python bench/soak.py --seconds 20     # a short run while developing
    .venv/bin/python bench/soak.py [--rate 100] [--seconds 300] [--keep]

Why: `make bench` says how fast a node routes; this says whether it stays
well over time.  A leak shows as growth from the start to the end of a run at
the same load: Kamailio's shared memory (transactions, dispatcher state) in
`core.shmmem`, a SIP worker's own memory (the embedded Python, the KEMI
scripts' objects and caches) in its RSS and PSS.  Failed calls and
retransmissions that appear only minutes into a run show the same trouble
from the outside.

What runs, on loopback only, in a fresh folder under var/soak/ (git-ignored;
removed after a clean run unless --keep, kept when something failed):

- a SQLite portal made with the `divert` command: one tenant (region IT), one
  number (owned by a subscriber, so that no PBX trunk is probed) forwarded
  unconditionally to an external mobile number;
- the node: `divert run --listen 127.0.0.50:5260 --state-dir <dir>/state
  --carrier 127.0.0.51:5280`, PID in <dir>/node.pid;
- the carrier: sipp UAS on 127.0.0.51:5280 (bench/sipp/answer.xml), answering
  the forwarded INVITEs 200 and their BYEs, and with `-aa` Kamailio's OPTIONS
  probes (unanswered, the carrier would be marked down and calls get 503);
  bounded by time only, not by a call count;
- the caller: sipp UAC from 127.0.0.51:5290 (the carrier's address, which the
  node trusts, on another port) calling the number at --rate calls/s for
  --seconds: INVITE, 200, ACK, a pause of HOLD_MS, BYE, 200 (CALLER_SCENARIO
  below, written to <dir>/caller.xml).  Bounded by `-m rate*seconds` and a
  global `-timeout`.

Memory is sampled 5 s into the load (after a warm-up: Python workers import
lazily, caches fill), in the middle, at the end of the load, and once more
SETTLE_S after the last call (transactions gone: shared memory should be back
near the start).  Per Kamailio process (every descendant of `divert run`
named kamailio) RSS and PSS from /proc/<pid>/smaps_rollup, and the shared
memory from `kamcmd -s unix:<state>/run/kamailio_ctl core.shmmem`.  Reading
them: RSS counts the pages of the shared memory segment a process has
touched (the timers' RSS grows as they walk more of it: not a leak); PSS
shares such pages out among the processes mapping them, and the pages of
libpython and Kamailio's modules among every program on the machine that
maps them too (another node, a test run), so it moves when they start or
stop; the pages a process wrote and shares with no one (Private_Dirty: its
heap, Python's objects; "own" in the table) are the steadiest sign of a
leak in a worker.

At the end a short table (calls attempted, successful, failed,
retransmissions, average and peak call rate, memory per process and shared)
is printed and every figure is written to var/soak/soak.json.  Exit status 0
when the run completed, failed calls included (they are reported); 2 with a
one-line error when the node or a sipp could not start or the node died.

Every process started is stopped by its PID: SIGTERM, then SIGKILL after 20 s.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from divert.readiness import sip_answers

ROOT = Path(__file__).resolve().parent.parent
SOAK_DIR = ROOT / "var" / "soak"
RESULTS = SOAK_DIR / "soak.json"
DIVERT = ROOT / ".venv" / "bin" / "divert"
ANSWER = ROOT / "bench" / "sipp" / "answer.xml"

NODE = "127.0.0.50:5260"
CARRIER = "127.0.0.51:5280"
CALLER_IP = "127.0.0.51"  # the carrier's address: the node trusts it, any port
CALLER_PORT = 5290
CARRIER_MEDIA_PORT = 16280  # sipp's media ports, away from other sipps' default 6000
CALLER_MEDIA_PORT = 16290

NUMBER = "+390299990001"  # the customer's number, forwarded unconditionally to
MOBILE = "+393359990001"  # an external number, through the carrier

HOLD_MS = 1000  # between ACK and BYE
WARMUP_S = 5.0  # load before the first memory sample
SETTLE_S = 10.0  # after the last call, before the idle sample (tm's timers)
STOP_GRACE_S = 20.0
NODE_START_S = 120.0
CARRIER_UP_S = 30.0
MB = 1024 * 1024

# The caller: INVITE the number given with -s; Kamailio's 100 and divert's
# 181 (call forwarded) come first.  rtd 1: INVITE to 200 (call set-up); rtd 2:
# BYE to 200.
CALLER_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="divert soak caller">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "soak" <sip:+441234567890@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:+441234567890@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="181" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true" rtd="1"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="HOLD_MS"/>
  <send retrans="500" start_rtd="2">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" rtd="2"/>
</scenario>
"""

FAILURE_COLUMNS = (
    "FailedCannotSendMessage(C)",
    "FailedMaxUDPRetrans(C)",
    "FailedTcpConnect(C)",
    "FailedTcpClosed(C)",
    "FailedUnexpectedMessage(C)",
    "FailedCallRejected(C)",
    "FailedCmdNotSent(C)",
    "FailedRegexpDoesntMatch(C)",
    "FailedRegexpShouldntMatch(C)",
    "FailedRegexpHdrNotFound(C)",
    "FailedOutboundCongestion(C)",
    "FailedTimeoutOnRecv(C)",
    "FailedTimeoutOnSend(C)",
    "OutOfCallMsgs(C)",
    "DeadCallMsgs(C)",
)


class SoakError(Exception):
    """Why the run could not be made; printed as one line."""


# -- processes --------------------------------------------------------------------------


@dataclass
class Child:
    """A process this script started, its output in `log`, its PID in <name>.pid."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    # descendants seen while it ran, (pid, start time): stopped by PID if it is killed
    descendants: list[tuple[int, int]] = field(default_factory=list)

    def running(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 1) -> str:
        """The last distinct non-empty lines of its errors (sipp: <name>.err,
        its screens being in the log) or else its output, on one line."""
        text = ""
        for path in (self.log.with_suffix(".err"), self.log):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
            if text.strip():
                break
        kept: list[str] = []
        for line in text.splitlines():
            # sipp stamps its errors "date<TAB>time<TAB>epoch: message"
            line = line.split(": ", 1)[-1] if "\t" in line else line
            if line.strip() and line.strip() not in kept:
                kept.append(line.strip())
        return " | ".join(kept[-lines:])

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after STOP_GRACE_S (and its orphans by PID)."""
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                print(f"soak: {self.name} ignored SIGTERM; killing pid {self.popen.pid}")
                self.popen.kill()
                self.popen.wait()
        for pid, started in self.descendants:
            if process_start(pid) == started:  # still the same process
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def start(name: str, command: list[str], work: Path, errors_apart: bool = False) -> Child:
    """Start `command` in `work`, its output in <name>.log (its standard
    error in <name>.err if `errors_apart`), its PID in <name>.pid."""
    log = work / f"{name}.log"
    with open(log, "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        popen = subprocess.Popen(
            command,
            stdout=out,
            stderr=err if errors_apart else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=work,
        )
    (work / f"{name}.pid").write_text(f"{popen.pid}\n")
    return Child(name, popen, log)


def process_table() -> dict[int, tuple[str, int, int]]:
    """Every process: pid -> (comm, parent pid, start time in ticks)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            head, rest = (entry / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue  # gone meanwhile
        fields = rest.split()
        table[int(entry.name)] = (head.split("(", 1)[1], int(fields[1]), int(fields[19]))
    return table


def process_start(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def descendants(root: int) -> list[tuple[int, str, int]]:
    """(pid, comm, start time) of every process under `root`."""
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (_comm, parent, _start) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        comm, _parent, started = table[pid]
        found.append((pid, comm, started))
    return sorted(found)


def kamcmd(ctl: Path, *args: str) -> str:
    try:
        return subprocess.run(
            ["kamcmd", "-s", f"unix:{ctl}", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return ""


def rpc_records(text: str) -> list[dict[str, str]]:
    """kamcmd's `{ key: value ... }` records."""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line == "{":
            current = {}
        elif line == "}":
            records.append(current)
        elif ":" in line:
            key, value = line.split(":", 1)
            current[key.strip()] = value.strip()
    if not records and current:
        records.append(current)
    return records


# -- set-up -------------------------------------------------------------------------------


def seed_portal(url: str) -> None:
    """The tenant, its subscriber and number, and the unconditional forward."""
    for args in (
        ("db", "upgrade"),
        ("tenant", "add", "soak", "--region", "IT"),
        ("subscriber", "add", "soaker", "--tenant", "soak", "--password", "soak-not-used-1"),
        ("number", "add", NUMBER, "--tenant", "soak", "--subscriber", "soaker"),
        ("forward", "add", NUMBER, "--when", "always", "--to", MOBILE),
    ):
        done = subprocess.run(
            [str(DIVERT), "--portal", url, *args], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            raise SoakError(f"divert {' '.join(args[:2])} failed: {why[-1] if why else '?'}")


def wait_for(what: str, check: Callable[[], bool], timeout: float, *watched: Child) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in watched:
            if not child.running():
                raise SoakError(
                    f"{child.name} exited (code {child.popen.returncode}) before {what}: "
                    f"{child.tail(2)}"
                )
        if check():
            return
        time.sleep(0.3)
    raise SoakError(f"{what} not seen in {timeout:.0f} s")


def sipp_base(scenario: Path, port: int, media_port: int, stat: Path, period: int) -> list[str]:
    return [
        "sipp",
        "-sf",
        str(scenario),
        "-i",
        CALLER_IP,
        "-p",
        str(port),
        "-mp",
        str(media_port),
        "-nostdin",
        "-trace_stat",
        "-stf",
        str(stat),
        "-fd",
        str(period),
    ]


# -- measuring ----------------------------------------------------------------------------


def memory_sample(label: str, pids: dict[int, str], ctl: Path, t: float) -> dict[str, Any]:
    """RSS and PSS of each Kamailio process, and the shared memory, now."""
    processes: dict[str, Any] = {}
    for pid in pids:
        figures: dict[str, int] = {}
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    figures[key.lower() + "_kb"] = int(value.split()[0])
        except OSError:
            pass  # gone: reported as missing
        processes[str(pid)] = figures or None
    shm: dict[str, int] = {}
    for record in rpc_records(kamcmd(ctl, "core.shmmem")):
        for key, value in record.items():
            if value.isdigit():
                shm[key] = int(value)
    return {"label": label, "t_s": round(t, 1), "processes": processes, "shm": shm}


def stat_rows(stat: Path) -> list[dict[str, str]]:
    if not stat.exists():
        return []
    with open(stat, newline="", errors="replace") as handle:
        return list(csv.DictReader(handle, delimiter=";"))


def seconds_of(elapsed: str) -> float:
    """sipp's `HH:MM:SS:uuuuuu` response times (set in ms) as seconds."""
    parts = elapsed.strip().split(":")
    try:
        h, m, s = int(parts[0]), int(parts[1]), int(parts[2])
        fraction = float("0." + parts[3]) if len(parts) > 3 else 0.0
    except (IndexError, ValueError):
        return 0.0
    return h * 3600 + m * 60 + s + fraction


def epoch(stamp: str) -> float:
    """sipp's `date<TAB>time<TAB>epoch` stamps: the epoch (its elapsed
    columns are whole seconds only)."""
    try:
        return float(stamp.split("\t")[-1])
    except ValueError:
        return 0.0


def as_int(row: dict[str, str], key: str) -> int:
    try:
        return int(row.get(key) or 0)
    except ValueError:
        return 0


def call_figures(rows: list[dict[str, str]], rate: int) -> dict[str, Any]:
    """Totals from the last row of sipp's stat file; rates from its periods
    (one a second)."""
    if not rows:
        return {"attempted": 0}
    last = rows[-1]
    attempted = as_int(last, "OutgoingCall(C)") or as_int(last, "TotalCallCreated")
    begin = epoch(last.get("StartTime", ""))
    sending_until = begin
    rates, setup_ms = [], []
    for row in rows:
        now = epoch(row.get("CurrentTime", ""))
        period = now - epoch(row.get("LastResetTime", ""))
        created = as_int(row, "OutgoingCall(P)")
        if created:
            sending_until = now
            if period >= 0.9:  # a full period, not the sliver sipp writes at its end
                rates.append(created / period)
        if as_int(row, "SuccessfulCall(P)"):
            setup_ms.append(seconds_of(row.get("ResponseTime1(P)", "")) * 1000)
    # the first and last periods with calls may be cut short: leave them out
    steady = rates[1:-1] or rates
    sending = sending_until - begin
    return {
        "target_rate": rate,
        "attempted": attempted,
        "successful": as_int(last, "SuccessfulCall(C)"),
        "failed": as_int(last, "FailedCall(C)"),
        "retransmissions": as_int(last, "Retransmissions(C)"),
        "failures": {
            key.removesuffix("(C)"): as_int(last, key)
            for key in FAILURE_COLUMNS
            if as_int(last, key)
        },
        "sending_s": round(sending, 1),
        "elapsed_s": round(epoch(last.get("CurrentTime", "")) - begin, 1),
        "rate_avg": round(attempted / sending, 1) if sending > 0 else None,
        "rate_peak": round(max(steady), 1) if steady else None,
        "rate_min": round(min(steady), 1) if steady else None,
        # sipp times in whole ms: on loopback these are mostly 0
        "setup_ms_avg": round(seconds_of(last.get("ResponseTime1(C)", "")) * 1000, 1),
        "setup_ms_worst_second": round(max(setup_ms), 1) if setup_ms else None,
        "bye_ms_avg": round(seconds_of(last.get("ResponseTime2(C)", "")) * 1000, 1),
    }


# -- the run --------------------------------------------------------------------------------


@dataclass
class Run:
    work: Path
    rate: int
    seconds: int
    children: dict[str, Child] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ctl(self) -> Path:
        return self.work / "state" / "run" / "kamailio_ctl"

    def stop_all(self) -> None:
        for name in ("caller", "carrier", "node"):
            if name in self.children:
                self.children[name].stop()

    def check_alive(self, *names: str) -> None:
        for name in names:
            child = self.children[name]
            if not child.running():
                raise SoakError(
                    f"{name} exited (code {child.popen.returncode}) during the run: {child.tail(2)}"
                )

    def setup(self) -> dict[int, str]:
        """Portal, carrier and node up, the carrier seen up by the node's probes;
        returns the Kamailio processes (pid -> role)."""
        portal = f"sqlite:///{self.work / 'portal.db'}"
        seed_portal(portal)
        margin = NODE_START_S + CARRIER_UP_S + SETTLE_S + 120
        carrier = self.children["carrier"] = start(
            "carrier",
            [
                *sipp_base(
                    ANSWER,
                    int(CARRIER.split(":")[1]),
                    CARRIER_MEDIA_PORT,
                    self.work / "carrier.csv",
                    10,
                ),
                "-aa",  # answers OPTIONS (the node's probes) 200
                "-timeout",
                f"{int(self.seconds + margin)}s",
            ],
            self.work,
            errors_apart=True,
        )
        node = self.children["node"] = start(
            "node",
            [
                str(DIVERT),
                "--portal",
                portal,
                "run",
                "--listen",
                NODE,
                "--state-dir",
                str(self.work / "state"),
                "--carrier",
                CARRIER,
            ],
            self.work,
        )
        wait_for(
            "the node answering OPTIONS",
            lambda: sip_answers(NODE, 0.5),
            NODE_START_S,
            node,
            carrier,
        )
        wait_for(
            "the carrier up in the node's dispatcher",
            lambda: "FLAGS: AP" in kamcmd(self.ctl, "dispatcher.list"),
            CARRIER_UP_S,
            node,
            carrier,
        )
        under = descendants(node.popen.pid)
        node.descendants = [(pid, started) for pid, _comm, started in under]
        roles = {
            # "udp receiver child=0 sock=127.0.0.50:5260": the socket is the same for all
            int(record["PID"]): record.get("DSC", "?").split(" sock=")[0]
            for record in rpc_records(kamcmd(self.ctl, "core.psx"))
            if record.get("PID", "").isdigit()
        }
        kamailio = {pid: roles.get(pid, "?") for pid, comm, _ in under if comm == "kamailio"}
        if not kamailio:
            raise SoakError("no Kamailio process found under divert run")
        return kamailio

    def load(self, kamailio: dict[int, str]) -> dict[str, Any]:
        """The caller at `rate` for `seconds`; memory samples along the way."""
        scenario = self.work / "caller.xml"
        scenario.write_text(CALLER_SCENARIO.replace("HOLD_MS", str(HOLD_MS)))
        calls = self.rate * self.seconds
        caller = self.children["caller"] = start(
            "caller",
            [
                *sipp_base(scenario, CALLER_PORT, CALLER_MEDIA_PORT, self.work / "caller.csv", 1),
                NODE,
                "-s",
                NUMBER,
                "-r",
                str(self.rate),
                "-m",
                str(calls),
                "-l",
                str(max(100, self.rate * (HOLD_MS // 1000 + 1) * 5)),
                "-timeout",
                f"{self.seconds + 60}s",
                "-timeout_error",
                "-trace_screen",
                "-screen_file",
                str(self.work / "caller-screen.log"),
            ],
            self.work,
            errors_apart=True,
        )
        started = time.monotonic()
        plan = (
            ("start", WARMUP_S),
            ("middle", self.seconds / 2),
            ("end", self.seconds - 1.0),
        )
        for label, at in plan:
            while caller.running() and time.monotonic() - started < at:
                self.check_alive("node", "carrier")
                time.sleep(0.2)
            if not caller.running():
                made = call_figures(stat_rows(self.work / "caller.csv"), self.rate)
                if not made["attempted"]:
                    raise SoakError(
                        f"sipp caller could not start (code {caller.popen.returncode}): "
                        f"{caller.tail()}"
                    )
            t = time.monotonic() - started
            self.samples.append(memory_sample(label, kamailio, self.ctl, t))
            print(f"  {label:6} sample at {t:5.1f} s: {short(self.samples[-1])}", flush=True)
        deadline = started + self.seconds + 90
        while caller.running() and time.monotonic() < deadline:
            self.check_alive("node", "carrier")
            time.sleep(0.5)
        if caller.running():
            print("soak: sipp caller past its timeout; stopping it")
            caller.stop()
        rows = stat_rows(self.work / "caller.csv")
        figures = call_figures(rows, self.rate)
        if not figures["attempted"]:
            raise SoakError(
                f"sipp caller made no call (code {caller.popen.returncode}): {caller.tail()}"
            )
        figures["sipp_exit_code"] = caller.popen.returncode
        time.sleep(SETTLE_S)
        self.check_alive("node")
        t = time.monotonic() - started
        self.samples.append(memory_sample("after", kamailio, self.ctl, t))
        print(f"  after  sample at {t:5.1f} s: {short(self.samples[-1])}", flush=True)
        return figures


def short(sample: dict[str, Any]) -> str:
    pss = sum((p or {}).get("pss_kb", 0) for p in sample["processes"].values())
    shm = sample["shm"]
    return (
        f"Kamailio PSS {pss / 1024:.1f} MB, shm used {shm.get('used', 0) / MB:.2f} MB "
        f"(max {shm.get('max_used', 0) / MB:.2f} MB)"
    )


def carrier_figures(stat: Path) -> dict[str, Any]:
    rows = stat_rows(stat)
    if not rows:
        return {}
    last = rows[-1]
    return {
        "answered": as_int(last, "SuccessfulCall(C)"),
        "incoming": as_int(last, "IncomingCall(C)"),
        "failed": as_int(last, "FailedCall(C)"),
        "retransmissions": as_int(last, "Retransmissions(C)"),
        "options_answered": as_int(last, "AutoAnswered(C)"),
    }


# -- the report ----------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    calls = results["calls"]
    lines = [
        "",
        f"soak: {calls['target_rate']} calls/s for {results['seconds']} s "
        f"(hold {HOLD_MS} ms) against divert run on {NODE}",
        "",
        f"  calls attempted      {calls['attempted']:>9}",
        f"  successful           {calls['successful']:>9}",
        f"  failed               {calls['failed']:>9}"
        + (f"   {calls['failures']}" if calls["failures"] else ""),
        f"  retransmissions      {calls['retransmissions']:>9}",
        f"  call rate average    {calls['rate_avg'] or 0:>9.1f} /s",
        f"  call rate peak       {calls['rate_peak'] or 0:>9.1f} /s   "
        f"(lowest full second {calls['rate_min'] or 0:.1f} /s)",
        f"  set-up time average  {ms(calls['setup_ms_avg']):>9} ms  "
        f"(worst second {ms(calls['setup_ms_worst_second'])} ms; sipp counts whole ms)",
    ]
    carrier = results.get("carrier") or {}
    if carrier:
        lines.append(
            f"  carrier answered     {carrier['answered']:>9}   "
            f"(failed {carrier['failed']}, retransmissions {carrier['retransmissions']}, "
            f"OPTIONS probes answered {carrier['options_answered']})"
        )
    lines += memory_table(results["memory"])
    lines += ["", f"  figures: {RESULTS.relative_to(ROOT)}"]
    return "\n".join(lines)


def memory_table(memory: dict[str, Any], width: int = 8) -> list[str]:
    """RSS and PSS per Kamailio process, totals, shared memory, at each sample."""
    samples = memory["samples"]
    labels = [sample["label"] for sample in samples]
    head = "".join(f"{label:>{width}}" for label in labels)

    def cell(kb: int | None) -> str:
        return f"{'gone':>{width}}" if kb is None else f"{kb / 1024:>{width}.1f}"

    def figure(sample: dict[str, Any], pid: str, key: str) -> int | None:
        figures = sample["processes"].get(pid)
        return None if not figures else int(figures[key])

    lines = [
        "",
        f"  {'Kamailio memory, MB':<41}{'RSS':<{width * len(labels) + 2}}  PSS",
        f"  {'pid':>7}  {'process':<30}{head}  {head}",
    ]
    totals: dict[str, list[int]] = {key: [] for key in ("rss_kb", "pss_kb", "private_dirty_kb")}
    for key, column in totals.items():
        for sample in samples:
            column.append(sum(p.get(key, 0) for p in sample["processes"].values() if p))
    for pid, role in memory["processes"].items():
        rss = "".join(cell(figure(sample, pid, "rss_kb")) for sample in samples)
        pss = "".join(cell(figure(sample, pid, "pss_kb")) for sample in samples)
        lines.append(f"  {pid:>7}  {role[:30]:<30}{rss}  {pss}")
    rss = "".join(cell(kb) for kb in totals["rss_kb"])
    pss = "".join(cell(kb) for kb in totals["pss_kb"])
    own = "".join(cell(kb) for kb in totals["private_dirty_kb"])
    lines += [
        f"  {'':>7}  {'all (RSS counts shared pages)':<30}{rss}  {pss}",
        f"  {'':>7}  {'all, own written pages':<30}{own}",
    ]
    shm = [sample["shm"] for sample in samples]

    def shm_row(name: str, key: str) -> str:
        return f"  {name:<39}" + "".join(f"{s.get(key, 0) / MB:>{width}.2f}" for s in shm)

    end = labels.index("end") if "end" in labels else -1
    lines += [
        "",
        f"  {'shared memory, MB':<39}{head}",
        shm_row("used", "used"),
        shm_row("max_used", "max_used"),
        f"  {'fragments':<39}" + "".join(f"{s.get('fragments', 0):>{width}}" for s in shm),
        "",
        f"  start to end: Kamailio PSS {signed(totals['pss_kb'][end] - totals['pss_kb'][0], 1024)}"
        f" MB, own {signed(totals['private_dirty_kb'][end] - totals['private_dirty_kb'][0], 1024)}"
        " MB, shm used "
        f"{signed(shm[end].get('used', 0) - shm[0].get('used', 0), MB)} MB; start to after: "
        f"shm used {signed(shm[-1].get('used', 0) - shm[0].get('used', 0), MB)} MB",
    ]
    return lines


def ms(value: float | None) -> str:
    return "<1" if not value else f"{value:.1f}"


def signed(value: float, unit: float) -> str:
    return f"{value / unit:+.2f}"


def run(rate: int, seconds: int, keep: bool) -> dict[str, Any]:
    for tool in ("sipp", "kamcmd"):
        if shutil.which(tool) is None:
            raise SoakError(f"{tool} is not installed: run 'make deps' first")
    if not DIVERT.exists():
        raise SoakError(f"{DIVERT.relative_to(ROOT)} is missing: run 'make deps' first")
    SOAK_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=SOAK_DIR))
    soak = Run(work, rate, seconds)
    print(f"soak: work folder {work.relative_to(ROOT)}", flush=True)
    clean = False
    try:
        kamailio = soak.setup()
        print(
            f"soak: node up (pid {soak.children['node'].popen.pid}, "
            f"{len(kamailio)} Kamailio processes); calling {NUMBER} at {rate}/s "
            f"for {seconds} s",
            flush=True,
        )
        began = datetime.now(UTC).isoformat(timespec="seconds")
        calls = soak.load(kamailio)
        soak.stop_all()
        results = {
            "started_at": began,
            "rate": rate,
            "seconds": seconds,
            "hold_ms": HOLD_MS,
            "node": NODE,
            "carrier_address": CARRIER,
            "caller": f"{CALLER_IP}:{CALLER_PORT}",
            "work": str(work.relative_to(ROOT)) if keep else None,
            "calls": calls,
            "carrier": carrier_figures(work / "carrier.csv"),
            "memory": {
                "processes": {str(pid): role for pid, role in kamailio.items()},
                "samples": soak.samples,
            },
        }
        clean = True
        return results
    finally:
        soak.stop_all()
        if clean and not keep:
            shutil.rmtree(work, ignore_errors=True)
        elif not clean:
            print(f"soak: logs kept in {work.relative_to(ROOT)}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300, help="load duration (default 300)")
    parser.add_argument("--rate", type=int, default=100, help="calls per second (default 100)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.seconds < 10 or args.rate < 1:
        parser.error("--seconds must be at least 10 and --rate at least 1")
    try:
        results = run(args.rate, args.seconds, args.keep)
    except SoakError as error:
        print(f"soak: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    sys.exit(main())
