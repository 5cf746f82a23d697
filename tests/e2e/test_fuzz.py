"""A bounded fuzz of the SIP edge (issue 11): 1,200 hostile or malformed
datagrams from strangers and from a carrier's address, then the node must
be the same processes, have answered no 500, logged at most a line a
message, and still route a valid call.  The strangers are twenty addresses
taking turns, so that flood protection (30 requests in 2 s from one
address) lets most of their datagrams in."""

from __future__ import annotations

import re
import select
import socket
import time
from pathlib import Path

from tests.e2e.conftest import CALLER, CARRIER_1, NODE, DivertNode, mobile, numbered
from tests.e2e.fuzz import datagrams
from tests.e2e.net import NET
from tests.e2e.sip import call, callee

PER_SOURCE = 600
RATE = 400  # datagrams a second, from both sources together
STRANGERS = tuple(f"{NET}.{64 + i}:6400" for i in range(20))
FROM_CARRIER = f"{CALLER}:6401"
SOURCES = (*STRANGERS, FROM_CARRIER)
KAMAILIO_LINE = re.compile(rb"\s*\d+\(\d+\) [A-Z]+: ")


def test_a_thousand_hostile_datagrams_change_nothing(node: DivertNode, workdir: Path):
    before = node.kamailio_pids()
    mark = len(node.log.read_bytes())
    sockets = {}
    for source in SOURCES:
        host, port = source.split(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, int(port)))
        sock.setblocking(False)
        sockets[source] = sock
    target = NODE.split(":")[0], int(NODE.split(":")[1])
    replies: list[bytes] = []

    def collect(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(sockets.values()), [], [], left)
            for sock in ready:
                replies.append(sock.recv(65535).split(b"\r\n", 1)[0])

    strangers = [
        (STRANGERS[index % len(STRANGERS)], datagram)
        for index, datagram in enumerate(datagrams(11, PER_SOURCE, STRANGERS[0], NODE))
    ]
    from_carrier = [(FROM_CARRIER, d) for d in datagrams(12, PER_SOURCE, FROM_CARRIER, NODE)]
    sent = 0
    try:
        for pair in zip(strangers, from_carrier, strict=True):
            for source, datagram in pair:
                # the stranger's datagrams name the first stranger's address
                datagram = datagram.replace(STRANGERS[0].encode(), source.encode())
                sockets[source].sendto(datagram, target)
                sent += 1
            collect(2 / RATE)
        collect(3.0)  # the last replies, and retransmissions of final ones
    finally:
        for sock in sockets.values():
            sock.close()

    assert sent == 2 * PER_SOURCE
    assert len(replies) >= sent // 5  # most were answered (about 420 in 1,200), not all dropped
    assert node.kamailio_pids() == before
    assert [r for r in replies if r.startswith(b"SIP/2.0 500")] == []
    logged = [
        line for line in node.log.read_bytes()[mark:].splitlines() if KAMAILIO_LINE.match(line)
    ]
    assert len(logged) <= sent, logged[-20:]
    for source in SOURCES:  # parser noise: one line a minute per source
        host = source.split(":")[0].encode()
        limited = [line for line in logged if b"malformed messages from " + host + b" " in line]
        assert len(limited) <= 1, limited
    assert not [line for line in logged if b" ERROR: " in line], logged[-20:]

    carrier = callee(workdir, "carrier", CARRIER_1, "answer")
    node.wait_trunk(CARRIER_1, active=True)
    caller = call(workdir, "caller", NODE, numbered(1), 200, f"{CALLER}:6402")
    code = caller.wait()
    time.sleep(0.3)
    carrier.stop()
    assert code == 0, f"{caller.diagnostics()}\n{node.tail()}"
    assert [r.ruri_user for r in carrier.received()] == [mobile(1)]
