"""Telling systemd how a node is doing, and finding out when it routes.

Under systemd (deploy/divert.service, ``Type=notify``) `divert run` says
``READY=1`` only once Kamailio answers SIP: a node whose processes exist but
whose SIP socket is not yet served would drop calls, and `systemctl start`,
units ordered after divert and monitoring would all take it for up.  So
readiness is judged from the outside, the way a carrier sees the node: an
OPTIONS request to the listen address and any SIP reply back.

Both halves are deliberately small and dependency-free:

- `notify` speaks the sd_notify datagram protocol itself (one AF_UNIX
  datagram to ``$NOTIFY_SOCKET``) instead of pulling in python-systemd, a
  C extension that is not on PyPI for every Python the node may embed.  It
  is a no-op returning False outside systemd, so `divert run` in a terminal
  calls it unconditionally.  With ``NotifyAccess=main`` systemd only accepts
  the datagram from the unit's main process: call it from `divert run`
  itself, never from a child.
- `sip_answers` / `wait_ready` send OPTIONS from a socket on the node's own
  host.  The node treats that source as a stranger (neither carrier nor
  customer trunk): Kamailio's pike module ignores a stranger that sends more
  than 30 requests in 2 s, and a retry every 0.2 s stays far below that.  A
  stranger's OPTIONS with no Route gets 200 OK (kemi/adapter.py), but any
  reply counts: a 4xx still proves that Kamailio and the KEMI adapter run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable

RETRY_SECONDS = 0.2  # between OPTIONS retransmissions in `sip_answers`
POLL_SECONDS = 1.0  # longest `wait_ready` goes without asking `alive()`
MAX_DATAGRAM = 65535


def notify(state: str) -> bool:
    """Send `state` to systemd's notification socket; True when it was sent.

    `state` is newline-separated assignments, e.g. ``"READY=1\\nSTATUS=routing
    on 127.0.0.1:5060"``, ``"STOPPING=1"`` or ``"STATUS=..."``.  False, and
    never an exception, when ``$NOTIFY_SOCKET`` is unset (not under systemd,
    or a unit that is not ``Type=notify``), names an address family this
    does not speak (``vsock:``), or the send fails: a node must not stop
    routing because its supervisor could not be told about it.

    A leading ``@`` names a socket in Linux's abstract namespace, which the
    protocol spells that way because a NUL byte cannot be in an environment
    variable.
    """
    target = os.environ.get("NOTIFY_SOCKET", "")
    if not state or not target.startswith(("/", "@")):
        return False
    address = b"\0" + os.fsencode(target[1:]) if target[0] == "@" else os.fsencode(target)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except (OSError, ValueError):
        return False
    return True


def sip_answers(address: str, timeout: float) -> bool:
    """True when something at `address` ("IPv4:PORT") answers a SIP OPTIONS
    within `timeout` seconds.

    The request is retransmitted unchanged every 0.2 s (same Call-ID and
    branch, as a SIP client does over UDP), so a late reply to an earlier
    copy counts too; only a reply carrying this request's Call-ID does, so a
    stray datagram or another client's reply cannot make a dead node look
    alive.  The socket is bound to the address's own host, port 0: the
    request comes from the node's machine, and the reply finds its way back
    whatever the node's Via handling.  For ``0.0.0.0`` (Kamailio on every
    interface) the request goes to 127.0.0.1.

    False, not an exception, when nothing answers in time, nobody listens
    (ICMP port unreachable) or the host is not one of this machine's
    addresses.  A malformed `address` is a caller's bug: ValueError.
    """
    host, port = _split(address)
    call_id = f"{secrets.token_hex(12)}@divert.readiness"
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            # connected: replies from anywhere else are dropped by the kernel,
            # and a closed port shows up as ConnectionRefusedError
            sock.connect((host, port))
            local_host, local_port = sock.getsockname()
            request = options_request(host, port, local_host, local_port, call_id)
            while time.monotonic() < deadline:
                resend_at = min(time.monotonic() + RETRY_SECONDS, deadline)
                # ConnectionRefusedError: an ICMP error about the last copy
                with contextlib.suppress(ConnectionRefusedError):
                    sock.send(request)
                if _reply_until(sock, call_id, resend_at):
                    return True
    except OSError:
        return False
    return False


def wait_ready(address: str, timeout: float, alive: Callable[[], bool]) -> bool:
    """Poll `sip_answers` until it is True (True), `timeout` seconds pass or
    `alive()` turns false (False).

    `alive` is how the caller says the node is still worth waiting for
    (typically: Kamailio's process has not exited), so a Kamailio that dies
    at start-up is reported at once rather than after the whole timeout.
    It is asked at least every second.
    """
    deadline = time.monotonic() + timeout
    while alive():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if sip_answers(address, min(left, POLL_SECONDS)):
            return True
    return False


def options_request(host: str, port: int, local_host: str, local_port: int, call_id: str) -> bytes:
    """A minimal well-formed OPTIONS (RFC 3261) that passes Kamailio's
    sanity checks: ``rport`` so the reply comes back to the port it came
    from, a magic-cookie branch, and a From tag."""
    branch = f"z9hG4bK{secrets.token_hex(10)}"
    tag = secrets.token_hex(6)
    lines = [
        f"OPTIONS sip:{host}:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {local_host}:{local_port};rport;branch={branch}",
        "Max-Forwards: 70",
        f"From: <sip:readiness@{local_host}>;tag={tag}",
        f"To: <sip:{host}:{port}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "User-Agent: divert-readiness",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def is_reply_to(datagram: bytes, call_id: str) -> bool:
    """Whether `datagram` is a SIP reply (any status) with this Call-ID; the
    compact form ``i:`` counts, as a proxy may use it."""
    if not datagram.startswith(b"SIP/2.0 "):
        return False
    head = datagram.split(b"\r\n\r\n", 1)[0]
    for line in head.splitlines()[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"call-id", b"i"):
            return value.strip() == call_id.encode()
    return False


def _reply_until(sock: socket.socket, call_id: str, until: float) -> bool:
    """Read datagrams until `until`: True at the first reply to `call_id`."""
    while (left := until - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            datagram = sock.recv(MAX_DATAGRAM)
        except TimeoutError:
            return False
        except ConnectionRefusedError:  # nobody listens (yet): sit out the interval
            time.sleep(max(0.0, until - time.monotonic()))
            return False
        if is_reply_to(datagram, call_id):
            return True
    return False


def _split(address: str) -> tuple[str, int]:
    host, colon, port = address.rpartition(":")
    try:
        socket.inet_aton(host)
        number = int(port)
    except (OSError, ValueError):
        number = -1
    if not colon or host.count(".") != 3 or not 0 < number < 65536:
        raise ValueError(f"address {address!r} must be IPv4:PORT, e.g. 127.0.0.1:5060")
    return ("127.0.0.1" if host == "0.0.0.0" else host), number
