"""The loopback range of this test process's peers and nodes.

`make test` runs the suite in parallel worker processes (pytest-xdist), each
with its own session node.  Every address an end-to-end test uses is
`f"{NET}.<host>"`, so that two workers never meet on a socket, a dispatcher
entry or a pike counter: worker gw0 (and a run without workers) uses
127.0.0.x, worker gwN uses 127.0.(40 + N).x.  127.0.1-3.x belong to the
benchmarks and the cluster demo, 127.0.200.x to addresses where nothing
listens.  DIVERT_TEST_NET moves gw0's range elsewhere (three octets, e.g.
127.0.50; gwN's follow it), to run end-to-end tests beside other SIP
traffic on the machine.  Not a second whole suite: the demo test keeps
`make run`'s fixed addresses (127.0.0.1:5060 and :9161, 127.0.0.2:5060).
"""

from __future__ import annotations

import ipaddress
import os

_EXTRA = 40  # gwN's third octet is gw0's + 40 + N


def _net() -> str:
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    base = os.environ.get("DIVERT_TEST_NET", "127.0.0")
    octets = base.split(".")
    if len(octets) != 3 or not ipaddress.ip_address(f"{base}.1").is_loopback:
        raise ValueError(f"DIVERT_TEST_NET={base!r}: three octets of 127.0.0.0/8, e.g. 127.0.50")
    if worker == 0:
        return base
    third = int(octets[2]) + _EXTRA + worker
    if third > 255:
        raise ValueError(f"DIVERT_TEST_NET={base!r}: no room for worker gw{worker}")
    return f"{octets[0]}.{octets[1]}.{third}"


NET = _net()
