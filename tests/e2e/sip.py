"""sipp peers for end-to-end tests: rendered scenarios, run by PID, bounded.

Every peer has its own loopback address and port, a call count (-m), a
global timeout and -timeout_error, and answers OPTIONS probes (-aa).  What a
peer received is parsed from its -trace_msg file, so tests assert on the
Request-URI and headers that reached the far end.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "sipp-scenarios"

ACK_FAILURE = """<send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      [last_From:]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>"""

ACK_AND_BYE = """<send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: {cseq} ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="200"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: {bye_cseq} BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>"""

_REPLY = """<send>
    <![CDATA[
      SIP/2.0 {code} {reason}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [$cseq] INVITE
      [last_Record-Route:]
      Contact: <sip:callee@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>"""

UAS_BODIES = {
    "answer": _REPLY.format(code=180, reason="Ringing")
    + """
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [$cseq] INVITE
      [last_Record-Route:]
      Contact: <sip:callee@[local_ip]:[local_port]>
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
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>""",
    "reply": _REPLY
    + """
  <recv request="ACK"/>""",
    "ring": _REPLY.format(code=180, reason="Ringing")
    + """
  <recv request="CANCEL"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [$cseq] INVITE
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>""",
    "silent": """<nop><action><log message="INVITE CSeq [$cseq] left unanswered"/></action></nop>
  <recv request="CANCEL" timeout="30000"/>""",
}


@dataclass
class Received:
    """A request as it reached a peer."""

    request_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ruri_user(self) -> str:
        uri = self.request_line.split()[1]
        return uri.split(":", 1)[1].split("@", 1)[0]

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


class Peer:
    """One sipp process, started now, stopped by PID."""

    running: list[Peer] = []  # noqa: RUF012 - stopped after each test (conftest)

    def __init__(self, workdir: Path, name: str, args: list[str], scenario: str) -> None:
        self.name = name
        self.messages = workdir / f"{name}.messages.log"
        self.errors = workdir / f"{name}.errors.log"
        self.output = workdir / f"{name}.out"
        scenario_file = workdir / f"{name}.xml"
        scenario_file.write_text(scenario)
        port = int(args[args.index("-p") + 1])
        self.address = f"{args[args.index('-i') + 1]}:{port}"
        command = [
            "sipp",
            *args,
            "-mp",
            str(port + 10_000),
            "-sf",
            str(scenario_file),
            "-nostdin",
            "-aa",
            "-trace_msg",
            "-message_file",
            str(self.messages),
            "-trace_err",
            "-error_file",
            str(self.errors),
        ]
        self.started = time.monotonic()
        self.ended: float | None = None
        with open(self.output, "w") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        Peer.running.append(self)
        self._wait_bound(args[args.index("-i") + 1], port)

    def listening_for(self) -> float:
        """Seconds this peer has been running."""
        return time.monotonic() - self.started

    def _wait_bound(self, host: str, port: int) -> None:
        """Until this sipp listens: a test that goes on sooner races the
        node's probes (a trunk still marked up from an earlier test, and no
        one there yet to answer the call)."""
        deadline = time.monotonic() + 10
        while not _udp_bound(host, port):
            if self.process.poll() is not None:
                return  # done already (a caller's short call), or failed: `wait` says
            if time.monotonic() > deadline:
                raise AssertionError(f"sipp {self.name} not listening on {host}:{port}")
            time.sleep(0.02)

    def wait(self, timeout: float = 60) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"sipp {self.name} still running after {timeout} s") from None
        if self.ended is None:
            self.ended = time.monotonic()
        return code

    def lasted(self) -> float:
        """Seconds from starting this sipp to seeing it exit in `wait`: a
        caller's whole call, without the time other peers take to stop."""
        assert self.ended is not None, f"sipp {self.name} not waited for"
        return self.ended - self.started

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def received(self, method: str = "INVITE") -> list[Received]:
        if not self.messages.exists():
            return []
        found = []
        for block in re.split(r"\n-{20,}[^\n]*\n", "\n" + self.messages.read_text()):
            if "message received" not in block.split("\n", 1)[0]:
                continue  # one this peer sent
            lines = [line.rstrip("\r") for line in block.strip("\n").splitlines()]
            start = next(
                (i for i, line in enumerate(lines) if line.startswith(f"{method} sip:")), None
            )
            if start is None:
                continue
            request = Received(lines[start])
            for line in lines[start + 1 :]:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                request.headers.append((name.strip(), value.strip()))
            found.append(request)
        return found

    def replies(self) -> list[str]:
        """Status lines of the replies this peer received, in order."""
        if not self.messages.exists():
            return []
        lines = self.messages.read_text().splitlines()
        return [
            lines[i + 2].strip()
            for i, line in enumerate(lines[:-2])
            if "message received" in line and lines[i + 2].startswith("SIP/2.0")
        ]

    def aborted(self) -> list[str]:
        """Calls sipp gave up on (an unexpected message, a timeout)."""
        if not self.errors.exists():
            return []
        return [line for line in self.errors.read_text().splitlines() if "Aborting call" in line]

    def diagnostics(self) -> str:
        parts = []
        for path in (self.output, self.errors):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text()[-3000:]}")
        return "\n".join(parts)


def _udp_bound(host: str, port: int) -> bool:
    """Is a UDP socket bound to host:port (from /proc/net/udp)?"""
    wanted = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/udp") as table:
        return any(line.split()[1] == wanted for line in list(table)[1:])


def callee(
    workdir: Path,
    name: str,
    address: str,
    behaviour: str,
    code: int = 486,
    reason: str = "Busy Here",
    calls: int = 1,
    timeout: int = 60,
    behind_nat: str = "",
    contact: str = "",
) -> Peer:
    """A called party; `behind_nat` names the address its Contact gives
    instead of the one it answers from; `contact` replaces its Contact
    header's value (a 3xx's targets: ``reply`` with code 302)."""
    host, port = address.split(":")
    body = (
        UAS_BODIES[behaviour].format(code=code, reason=reason)
        if behaviour == "reply"
        else (UAS_BODIES[behaviour])
    )
    if behind_nat:
        body = body.replace("[local_ip]:[local_port]>", f"{behind_nat}>")
    if contact:
        body = body.replace("Contact: <sip:callee@[local_ip]:[local_port]>", f"Contact: {contact}")
    scenario = (SCENARIOS / "uas.xml").read_text().replace("{body}", body)
    # Dispatcher OPTIONS probes, answered by -aa, count as calls too: the
    # budget is generous and the test stops the peer by PID when done.
    args = ["-i", host, "-p", port, "-m", str(100 * calls), "-timeout", f"{timeout}s"]
    return Peer(workdir, name, args, scenario)


def call(
    workdir: Path,
    name: str,
    node: str,
    number: str,
    final: int,
    source: str,
    timeout_ms: int = 20000,
    max_forwards: int = 70,
    extra_header: str = "",
    caller: str = "+441234567890",
) -> Peer:
    host, port = source.split(":")
    scenario = (SCENARIOS / "uac-call.xml").read_text()
    if not extra_header:
        scenario = scenario.replace("      {extra_header}\n", "")
    for key, value in {
        "{final}": str(final),
        "{timeout_ms}": str(timeout_ms),
        "{max_forwards}": str(max_forwards),
        "{extra_header}": extra_header,
        "{caller}": caller,
        "{after_final}": after_final(final, 1),
    }.items():
        scenario = scenario.replace(key, value)
    args = [
        node,
        "-s",
        number,
        "-i",
        host,
        "-p",
        port,
        "-m",
        "1",
        "-timeout",
        f"{timeout_ms // 1000 + 10}s",
        "-timeout_error",
    ]
    return Peer(workdir, name, args, scenario)


def after_final(final: int, cseq: int) -> str:
    """What a caller sends once the final reply is in: ACK (and BYE on 200)."""
    if final == 200:
        return ACK_AND_BYE.replace("{cseq}", str(cseq)).replace("{bye_cseq}", str(cseq + 1))
    return ACK_FAILURE.replace("{cseq}", str(cseq))


def subscriber_call(
    workdir: Path,
    name: str,
    node: str,
    called: str,
    final: int,
    source: str,
    user: str,
    domain: str,
    password: str,
    extra_headers: tuple[str, ...] = (),
    behind_nat: str = "",
    compact: bool = False,
) -> Peer:
    """A subscriber's call; `behind_nat` names the address its Via and
    Contact give instead of the one it sends from; `compact` sends the
    compact header names (RFC 3261 7.3.3: v, f, t, i, m, l)."""
    host, port = source.split(":")
    scenario = (SCENARIOS / "uac-subscriber-call.xml").read_text()
    if compact:
        scenario = compact_headers(scenario)
    if not extra_headers:
        scenario = scenario.replace("      {extra_headers}\n", "")
    for key, value in {
        "{user}": user,
        "{domain}": domain,
        "{password}": password,
        "{final}": str(final),
        "{after_final}": after_final(final, 2),
        "{extra_headers}": "\n      ".join(extra_headers),
        "{via}": behind_nat or "[local_ip]:[local_port]",
        "{contact}": behind_nat or "[local_ip]:[local_port]",
    }.items():
        scenario = scenario.replace(key, value)
    args = [
        node,
        "-s",
        called,
        "-i",
        host,
        "-p",
        port,
        "-m",
        "1",
        "-timeout",
        "30s",
        "-timeout_error",
    ]
    return Peer(workdir, name, args, scenario)


COMPACT = {
    "Via": "v",
    "From": "f",
    "To": "t",
    "Call-ID": "i",
    "Contact": "m",
    "Content-Length": "l",
}


def compact_headers(scenario: str) -> str:
    """A scenario's header lines with their compact names."""
    for name, short in COMPACT.items():
        scenario = scenario.replace(f"\n      {name}: ", f"\n      {short}: ")
    return scenario


def subscriber_cancel(
    workdir: Path,
    name: str,
    node: str,
    called: str,
    source: str,
    user: str,
    domain: str,
    password: str,
    pause_ms: int,
) -> Peer:
    """A subscriber who dials `called` and hangs up `pause_ms` after 100 Trying."""
    host, port = source.split(":")
    scenario = (SCENARIOS / "uac-subscriber-cancel.xml").read_text()
    for key, value in {
        "{user}": user,
        "{domain}": domain,
        "{password}": password,
        "{pause_ms}": str(pause_ms),
    }.items():
        scenario = scenario.replace(key, value)
    args = [node, "-s", called, "-i", host, "-p", port, "-m", "1", "-timeout", "30s"]
    return Peer(workdir, name, [*args, "-timeout_error"], scenario)


def cancel(workdir: Path, name: str, node: str, number: str, source: str, pause_ms: int) -> Peer:
    host, port = source.split(":")
    scenario = (SCENARIOS / "uac-cancel.xml").read_text().replace("{pause_ms}", str(pause_ms))
    args = [
        node,
        "-s",
        number,
        "-i",
        host,
        "-p",
        port,
        "-m",
        "1",
        "-timeout",
        "30s",
        "-timeout_error",
    ]
    return Peer(workdir, name, args, scenario)


def register(
    workdir: Path,
    name: str,
    node: str,
    user: str,
    domain: str,
    source: str,
    expires: int,
    password: str,
    final: int = 200,
    behind_nat: str = "",
) -> Peer:
    host, port = source.split(":")
    scenario = (SCENARIOS / "uac-register.xml").read_text()
    for key, value in {
        "{user}": user,
        "{domain}": domain,
        "{expires}": str(expires),
        "{password}": password,
        "{final}": str(final),
        "{via}": behind_nat or "[local_ip]:[local_port]",
        "{contact}": behind_nat or "[local_ip]:[local_port]",
    }.items():
        scenario = scenario.replace(key, value)
    args = [node, "-i", host, "-p", port, "-m", "1", "-timeout", "10s", "-timeout_error"]
    return Peer(workdir, name, args, scenario)


def settle(seconds: float) -> None:
    time.sleep(seconds)


# -- dialogs that live on: re-INVITE, UPDATE, INFO and BYE from either side --

_SENDS = {
    "caller": (
        'From: "caller" <{caller_uri}>;tag=[pid]SIPpTag00[call_number]',
        "To: <{request_uri}>;[$peer_tag]",
        "Contact: <{contact_uri}>",
    ),
    "callee": (
        "From: [$me];tag=[pid]SIPpTag01[call_number]",
        "To: [$peer]",
        "Contact: <sip:callee@{contact}>",
    ),
}

_SDP = """Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000"""


def _invite(cseq: int, authentication: str = "") -> str:
    auth = f"\n      {authentication}" if authentication else ""
    return f"""<send retrans="500">
    <![CDATA[
      INVITE {{request_uri}} SIP/2.0
      Via: SIP/2.0/[transport] {{via}};branch=[branch]
      From: "caller" <{{caller_uri}}>;tag=[pid]SIPpTag00[call_number]
      To: <{{request_uri}}>
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Contact: <{{contact_uri}}>{auth}
      Max-Forwards: 70
      {_SDP}
    ]]>
  </send>"""


def _opening(subscriber: tuple[str, str] | None) -> str:
    """The caller's INVITE; a subscriber (user, password) answers a challenge first."""
    if subscriber is None:
        return _invite(1)
    user, password = subscriber
    return (
        _invite(1)
        + """
  <recv response="100" optional="true"/>
  <recv response="407" auth="true"/>
  <send>
    <![CDATA[
      ACK {request_uri} SIP/2.0
      [last_Via:]
      [last_From:]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  """
        + _invite(2, f"[authentication username={user} password={password}]")
    )


def sends(role: str, method: str, cseq: int) -> str:
    """`role` ("caller" or "callee") sends `method` within the dialog and
    expects 200 (and ACKs it, for a re-INVITE)."""
    from_, to, contact = _SENDS[role]
    via = "{via}" if role == "caller" else "[local_ip]:[local_port]"

    def request(name: str, retrans: bool) -> str:
        return f"""<pause milliseconds="100"/>
  <send{' retrans="500"' if retrans else ""}>
    <![CDATA[
      {name} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] {via};branch=[branch]
      {from_}
      {to}
      [routes]
      Call-ID: [call_id]
      CSeq: {cseq} {name}
      {contact}
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>"""

    text = request(method, True) + '\n  <recv response="100" optional="true"/>'
    text += '\n  <recv response="200"/>'
    if method == "INVITE":
        text += "\n  " + request("ACK", False)
    return text


def answers(role: str, method: str) -> str:
    """`role` receives `method` within the dialog and answers 200."""
    contact = _SENDS[role][2]
    text = f"""<recv request="{method}"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      {contact}
      Content-Length: 0

    ]]>
  </send>"""
    if method == "INVITE":
        text += '\n  <recv request="ACK"/>'
    return text


IN_DIALOG = ("INVITE", "UPDATE", "INFO")


def dialog_pair(
    workdir: Path,
    name: str,
    node: str,
    number: str,
    caller_source: str,
    callee_address: str,
    active: str,
    callee_contact: str = "[local_ip]:[local_port]",
    subscriber: tuple[str, str, str] | None = None,
    caller_behind_nat: str = "",
    callee_ready: Callable[[], None] = lambda: time.sleep(0.2),
) -> tuple[Peer, Peer]:
    """A caller and a callee whose call is answered, then the `active` side
    ("caller" or "callee") sends a re-INVITE, an UPDATE and an INFO, and the
    other side hangs up.  The caller is a carrier, or `subscriber` (user,
    domain, password); its Via and Contact name `caller_behind_nat` if given,
    the callee's Contact `callee_contact`.  The caller starts once
    `callee_ready` returns (say, once probing sees the callee's trunk up).
    Returns (callee, caller)."""
    passive = "callee" if active == "caller" else "caller"
    first = 3 if subscriber is not None else 2  # CSeq after the INVITE's
    steps = {
        role: "\n  ".join(
            sends(role, method, cseq) if role == active else answers(role, method)
            for cseq, method in enumerate(IN_DIALOG, start=first)
        )
        for role in ("caller", "callee")
    }
    endings = {passive: sends(passive, "BYE", 10), active: answers(active, "BYE")}
    if subscriber is not None:
        user, domain, _ = subscriber
        caller_uri, request_uri = f"sip:{user}@{domain}", f"sip:[service]@{domain}"
    else:
        user, caller_uri = "+441234567890", "sip:+441234567890@[local_ip]:[local_port]"
        request_uri = "sip:[service]@[remote_ip]:[remote_port]"
    own = caller_behind_nat or "[local_ip]:[local_port]"
    values = {
        "{opening}": _opening(None if subscriber is None else (user, subscriber[2])),
        "{caller_uri}": caller_uri,
        "{request_uri}": request_uri,
        "{via}": own,
        "{contact_uri}": f"sip:{user}@{own}",
    }
    peers = {}
    for role, template, address in (
        ("callee", "uas-dialog.xml", callee_address),
        ("caller", "uac-dialog.xml", caller_source),
    ):
        scenario = (SCENARIOS / template).read_text()
        scenario = scenario.replace("{in_dialog}", steps[role]).replace("{ending}", endings[role])
        for key, value in values.items():
            scenario = scenario.replace(key, value)
        scenario = scenario.replace("{contact}", callee_contact)
        host, port = address.split(":")
        args = ["-i", host, "-p", port, "-m", "1", "-timeout", "30s", "-timeout_error"]
        if role == "caller":
            args = [node, "-s", number, *args]
        else:
            args[args.index("-m") + 1] = "100"  # OPTIONS probes count as calls (-aa)
        peers[role] = Peer(workdir, f"{name}-{role}", args, scenario)
        if role == "callee":
            callee_ready()
    return peers["callee"], peers["caller"]


# -- raw datagrams, for requests no well-behaved peer would send --


def raw_request(
    method: str,
    ruri: str,
    source: str,
    *headers: str,
    to_tag: str = "",
    call_id: str = "",
    from_tag: str = "",
    body: bytes = b"",
) -> bytes:
    """A request from `source` (host:port) with the usual headers and `headers`."""
    host = source.split(":")[0]
    tag = f";tag={to_tag}" if to_tag else ""
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {source};rport;branch=z9hG4bK-{time.monotonic_ns()}",
        f"From: <sip:+441234567890@{host}>;tag={from_tag or f'f{time.monotonic_ns()}'}",
        f"To: <{ruri}>{tag}",
        f"Call-ID: {call_id or f'raw-{time.monotonic_ns()}@{host}'}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:+441234567890@{source}>",
        "Max-Forwards: 70",
        *headers,
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def exchange(node: str, source: str, message: bytes, wait: float = 1.0) -> list[str]:
    """Send `message` from `source` to `node`; the status lines of the replies
    that came back within `wait` seconds (provisional ones included)."""
    host, port = source.split(":")
    target_host, target_port = node.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.1)
    try:
        sock.bind((host, int(port)))
        sock.sendto(message, (target_host, int(target_port)))
        replies = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65535)
            except TimeoutError:
                continue
            replies.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
        return replies
    finally:
        sock.close()


@dataclass(frozen=True)
class Tally:
    """What a caller's load came to, from sipp's statistics file."""

    successful: int
    failed: int
    retransmissions: int


def load(
    workdir: Path,
    name: str,
    node: str,
    number: str,
    source: str,
    calls: int,
    rate: int,
    recv_timeout_ms: int = 10000,
) -> Peer:
    """`calls` calls at `rate` a second to `number`, each answered, ACKed
    and hung up; sipp writes its counters to ``<name>.stat.csv`` at the end.
    A call that hears nothing for `recv_timeout_ms` fails."""
    host, port = source.split(":")
    scenario = (SCENARIOS / "uac-call.xml").read_text()
    scenario = scenario.replace("      {extra_header}\n", "")
    for key, value in {
        "{final}": "200",
        "{timeout_ms}": "20000",
        "{max_forwards}": "70",
        "{caller}": "+441234567890",
        "{after_final}": after_final(200, 1),
    }.items():
        scenario = scenario.replace(key, value)
    seconds = calls // rate + 40
    args = [node, "-s", number, "-i", host, "-p", port, "-m", str(calls), "-r", str(rate)]
    # every wait of a call is bounded (a call in flight when Kamailio died may
    # never hear back): it fails after 10 s rather than keep sipp running
    args += ["-recv_timeout", str(recv_timeout_ms), "-timeout", f"{seconds}s"]
    args += ["-trace_stat", "-stf", str(workdir / f"{name}.stat.csv")]
    return Peer(workdir, name, args, scenario)


def tally(workdir: Path, name: str) -> Tally:
    """The final counters of `load` `name` (call after its sipp exited)."""
    lines = (workdir / f"{name}.stat.csv").read_text().splitlines()
    header, last = lines[0].split(";"), lines[-1].split(";")
    row = dict(zip(header, last, strict=False))
    return Tally(
        int(row["SuccessfulCall(C)"]), int(row["FailedCall(C)"]), int(row["Retransmissions(C)"])
    )
