"""divert.readiness: the sd_notify datagram and the OPTIONS readiness probe,
against sockets the tests make themselves (no systemd, no Kamailio)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from divert.readiness import is_reply_to, notify, sip_answers, wait_ready

Answer = Callable[[bytes, int], bytes | None]  # request, how many came before -> reply


# -- notify ---------------------------------------------------------------------------------


@contextmanager
def notify_socket(address: str | bytes) -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(2)
    try:
        yield server
    finally:
        server.close()


def test_notify_sends_one_datagram_to_a_socket_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify.sock"
    with notify_socket(str(path)) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1\nSTATUS=routing on 127.0.0.1:5060") is True
        assert server.recv(4096) == b"READY=1\nSTATUS=routing on 127.0.0.1:5060"
        assert notify("STOPPING=1") is True
        assert server.recv(4096) == b"STOPPING=1"


def test_notify_reaches_an_abstract_socket_named_with_at(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"divert-test-{uuid.uuid4().hex}"
    with notify_socket(b"\0" + name.encode()) as server:
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        assert notify("STATUS=syncing the store") is True
        assert server.recv(4096) == b"STATUS=syncing the store"


def test_notify_without_notify_socket_is_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert notify("READY=1") is False


def test_notify_failures_are_false_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # systemd 253+ in a VM: not spoken
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert notify("READY=1") is False
    path = tmp_path / "notify.sock"
    with notify_socket(str(path)):
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("") is False  # sd_notify refuses an empty state too


# -- sip_answers / wait_ready ---------------------------------------------------------------


def header(request: bytes, name: str) -> str:
    for line in request.decode().split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    raise AssertionError(f"no {name} header in {request!r}")


def reply(request: bytes, call_id: str | None = None) -> bytes:
    """200 OK to `request`, with its Call-ID unless another is given."""
    lines = [
        "SIP/2.0 200 OK",
        f"Via: {header(request, 'Via')};received=127.0.0.1",
        f"From: {header(request, 'From')}",
        f"To: {header(request, 'To')};tag=responder",
        f"Call-ID: {call_id if call_id is not None else header(request, 'Call-ID')}",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


@contextmanager
def responder(answer: Answer | None) -> Iterator[tuple[str, list[bytes]]]:
    """A UDP socket on 127.0.0.1 (a free port); `answer` makes the reply to
    each request (None: stay silent).  Yields its address and the requests."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(0.05)
    received: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                request, source = server.recvfrom(65535)
            except TimeoutError:
                continue
            received.append(request)
            if answer is not None and (datagram := answer(request, len(received) - 1)):
                server.sendto(datagram, source)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}", received
    finally:
        done.set()
        thread.join(timeout=2)
        server.close()


def test_an_answering_responder_is_answered() -> None:
    with responder(lambda request, _: reply(request)) as (address, received):
        assert sip_answers(address, timeout=2) is True
    assert len(received) == 1


def test_the_request_is_a_well_formed_options() -> None:
    with responder(lambda request, _: reply(request)) as (address, received):
        assert sip_answers(address, timeout=2)
    request = received[0].decode()
    assert request.startswith(f"OPTIONS sip:{address} SIP/2.0\r\n")
    assert request.endswith("\r\n\r\n")
    via = header(received[0], "Via")
    assert via.startswith("SIP/2.0/UDP 127.0.0.1:")
    assert ";rport" in via
    assert ";branch=z9hG4bK" in via
    assert header(received[0], "Max-Forwards") == "70"
    assert ";tag=" in header(received[0], "From")
    assert header(received[0], "To") == f"<sip:{address}>"
    assert header(received[0], "Call-ID")
    assert header(received[0], "CSeq") == "1 OPTIONS"
    assert header(received[0], "Content-Length") == "0"


def test_any_reply_code_counts() -> None:
    def forbidden(request: bytes, _: int) -> bytes:
        return reply(request).replace(b"SIP/2.0 200 OK", b"SIP/2.0 403 Forbidden", 1)

    with responder(forbidden) as (address, _):
        assert sip_answers(address, timeout=2) is True


def test_a_silent_socket_is_false_within_the_timeout_after_retries() -> None:
    with responder(None) as (address, received):
        started = time.monotonic()
        assert sip_answers(address, timeout=0.7) is False
        took = time.monotonic() - started
    assert 0.7 <= took < 1.2
    assert len(received) >= 3  # sent again every 0.2 s
    assert len({header(r, "Call-ID") for r in received}) == 1  # retransmissions, not new calls
    assert len({header(r, "Via") for r in received}) == 1


def test_a_reply_with_another_call_id_does_not_count() -> None:
    with responder(lambda request, _: reply(request, call_id="someone-else@x")) as (address, _):
        assert sip_answers(address, timeout=0.5) is False


def test_junk_before_the_reply_is_skipped() -> None:
    def junk_then_reply(request: bytes, n: int) -> bytes:
        return b"hello" if n == 0 else reply(request)

    with responder(junk_then_reply) as (address, received):
        assert sip_answers(address, timeout=2) is True
    assert len(received) == 2


def test_a_responder_that_answers_a_retransmission_is_answered() -> None:
    with responder(lambda request, n: reply(request) if n >= 2 else None) as (address, received):
        assert sip_answers(address, timeout=2) is True
    assert len(received) == 3


def test_a_closed_port_is_false_within_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    started = time.monotonic()
    assert sip_answers(address, timeout=0.5) is False
    assert time.monotonic() - started < 1.0


def test_a_malformed_address_is_a_value_error() -> None:
    for address in ("localhost:5060", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:x", "1.2.3:5060"):
        with pytest.raises(ValueError):
            sip_answers(address, timeout=0.1)


def test_the_compact_call_id_header_counts() -> None:
    datagram = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1:1\r\ni: abc@h\r\nl: 0\r\n\r\n"
    assert is_reply_to(datagram, "abc@h")
    assert not is_reply_to(datagram, "abc@other")
    assert not is_reply_to(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: abc@h\r\n\r\n", "abc@h")


def test_wait_ready_is_true_once_answered() -> None:
    with responder(lambda request, _: reply(request)) as (address, _):
        assert wait_ready(address, timeout=5, alive=lambda: True) is True


def test_wait_ready_gives_up_at_the_timeout() -> None:
    with responder(None) as (address, _):
        started = time.monotonic()
        assert wait_ready(address, timeout=1.5, alive=lambda: True) is False
        assert 1.5 <= time.monotonic() - started < 2.2


def test_wait_ready_stops_when_the_node_dies() -> None:
    checks: list[float] = []

    def alive() -> bool:
        checks.append(time.monotonic())
        return len(checks) < 3

    with responder(None) as (address, _):
        started = time.monotonic()
        assert wait_ready(address, timeout=30, alive=alive) is False
        assert time.monotonic() - started < 3.5  # asked every second, not after 30 s
    assert len(checks) == 3
