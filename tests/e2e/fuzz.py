"""Hostile and malformed SIP datagrams, made from a seed so a failure can be
replayed: valid requests of every kind divert handles, each broken in one
to three ways that attackers and broken peers break them."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from tests.e2e.net import NET

TEMPLATES = {
    "INVITE": "INVITE sip:{number}@{node} SIP/2.0",
    "REGISTER": "REGISTER sip:acme SIP/2.0",
    "OPTIONS": "OPTIONS sip:{node} SIP/2.0",
    "BYE": "BYE sip:{number}@{node} SIP/2.0",
    "ACK": "ACK sip:{number}@{node} SIP/2.0",
    "CANCEL": "CANCEL sip:{number}@{node} SIP/2.0",
    "MESSAGE": "MESSAGE sip:{number}@{node} SIP/2.0",
    "SUBSCRIBE": "SUBSCRIBE sip:{number}@{node} SIP/2.0",
}
NUMBERS = ("+390200000001", "+390200000002", "+39899123456", "*72+39899123456", "201", "alice")
SENDERS = ("alice", "+441234567890", "carol")
MAX_DATAGRAM = 65_000  # what one UDP datagram can carry, with room to spare
JUNK_BYTES = (b"\x00", b"\xff\xfe", b"\xc3\x28", b"\xe2\x82", b"\x1b[2J", b"\r", b"\n", b"\x7f")
BOGUS_URIS = (
    "sip:",
    "sip:@",
    "sip:@@@",
    "tel:",
    "sip:" + "9" * 300 + "@x",
    "<<sip:a@b>>",
    "sip:a b@c",
    "sip:a@[::1",
    "http://example.invalid/",
    "sip:a@b:99999",
    "sips:%00@x",
)


def request(method: str, source: str, node: str, rng: random.Random) -> list[bytes]:
    """A well-formed request as a list of lines (no CRLFs), body last."""
    number = rng.choice(NUMBERS)
    in_dialog = method in ("BYE", "ACK") or rng.random() < 0.2
    to_tag = f";tag=t{rng.randrange(10**6)}" if in_dialog else ""
    lines = [
        TEMPLATES[method].format(number=number, node=node),
        f"Via: SIP/2.0/UDP {source};rport;branch=z9hG4bK-{rng.randrange(10**9)}",
        f"From: <sip:{rng.choice(SENDERS)}@acme>;tag=f{rng.randrange(10**6)}",
        f"To: <sip:{number}@acme>{to_tag}",
        f"Call-ID: fuzz-{rng.randrange(10**12)}@{source.split(':')[0]}",
        f"CSeq: {rng.randrange(1, 100)} {method}",
        f"Contact: <sip:fuzz@{source}>",
        "Max-Forwards: 70",
    ]
    if in_dialog:
        lines.append(f"Route: <sip:{node};lr;sig={rng.randrange(16**24):024x}>")
    body = b""
    if method == "INVITE" and rng.random() < 0.5:
        body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        lines.append("Content-Type: application/sdp")
    encoded = [line.encode() for line in lines]
    encoded.append(b"Content-Length: " + str(len(body)).encode())
    return [*encoded, b"", body]


def _truncate(lines: list[bytes], rng: random.Random) -> list[bytes]:
    data = b"\r\n".join(lines)
    return [data[: rng.randrange(1, max(2, len(data)))]]


def _drop_header(lines: list[bytes], rng: random.Random) -> list[bytes]:
    index = rng.randrange(1, len(lines) - 2)
    return lines[:index] + lines[index + 1 :]


def _duplicate_header(lines: list[bytes], rng: random.Random) -> list[bytes]:
    index = rng.randrange(1, len(lines) - 2)
    copy = lines[index]
    if rng.random() < 0.5:  # the same header with another value
        copy = copy.split(b":", 1)[0] + b": <sip:other@x>;tag=dup"
    return [*lines[: index + 1], copy, *lines[index + 1 :]]


def _content_length(lines: list[bytes], rng: random.Random) -> list[bytes]:
    value = rng.choice((b"-1", b"99999", b"abc", b"", b"5000000000", b"1", b"0x10"))
    return [b"Content-Length: " + value if ln.startswith(b"Content-Length") else ln for ln in lines]


def _huge_header(lines: list[bytes], rng: random.Random) -> list[bytes]:
    size = rng.choice((20_000, 60_000))
    return [*lines[:3], b"X-Padding: " + b"a" * size, *lines[3:]]


def _junk_bytes(lines: list[bytes], rng: random.Random) -> list[bytes]:
    index = rng.randrange(0, len(lines) - 2)
    line = lines[index]
    at = rng.randrange(0, max(1, len(line)))
    return [
        *lines[:index],
        line[:at] + rng.choice(JUNK_BYTES) + line[at:],
        *lines[index + 1 :],
    ]


def _bogus_uri(lines: list[bytes], rng: random.Random) -> list[bytes]:
    uri = rng.choice(BOGUS_URIS).encode()
    target = rng.choice((0, 2, 3, 6))
    line = lines[target]
    if target == 0:
        method = line.partition(b" ")[0]
        return [method + b" " + uri + b" SIP/2.0", *lines[1:]]
    name = line.split(b":", 1)[0]
    return [*lines[:target], name + b": <" + uri + b">;tag=x", *lines[target + 1 :]]


def _forged_internal(lines: list[bytes], rng: random.Random) -> list[bytes]:
    forged = rng.choice(
        (
            b"X-Divert-Subscriber: alice@acme",
            b"X-Divert-Subscriber: alice@acme;mac=" + b"0" * 24,
            b"P-Asserted-Identity: <sip:+390200000008@acme>",
            b"Diversion: <sip:+390200000001@acme>;reason=unconditional;counter=1",
        )
    )
    return [*lines[:4], forged, *lines[4:]]


def _forged_route(lines: list[bytes], rng: random.Random) -> list[bytes]:
    route = rng.choice(
        (
            f"Route: <sip:{NET}.1:5160;lr>, <sip:+39899123456@{NET}.11:5080;lr>",
            f"Route: <sip:{NET}.11:5080;lr>",
            f"Route: <sip:{NET}.1:5160>",
            f"Route: sip:{NET}.1:5160;lr",
            f"Route: <sip:{NET}.1:5160;lr;sig=",
        )
    ).encode()
    first = lines[0]
    if rng.random() < 0.5 and b"tag=" not in lines[3]:
        lines = [*lines[:3], lines[3] + b";tag=forged", *lines[4:]]
    return [first, *lines[1:4], route, *lines[4:]]


def _flip_bytes(lines: list[bytes], rng: random.Random) -> list[bytes]:
    data = bytearray(b"\r\n".join(lines))
    for _ in range(rng.randrange(1, 8)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return [bytes(data)]


def _first_line(lines: list[bytes], rng: random.Random) -> list[bytes]:
    first = rng.choice(
        (
            b"GET / HTTP/1.1",
            b"INVITE",
            b"INVITE sip:a@b SIP/3.0",
            b"\x16\x03\x01\x02\x00",
            b"SIP/2.0 200 OK",
            b"INVITE  sip:a@b  SIP/2.0",
            b"",
        )
    )
    return [first, *lines[1:]]


def _max_forwards(lines: list[bytes], rng: random.Random) -> list[bytes]:
    value = rng.choice((b"0", b"-1", b"99999999999", b"x"))
    return [b"Max-Forwards: " + value if ln.startswith(b"Max-Forwards") else ln for ln in lines]


def _many_vias(lines: list[bytes], rng: random.Random) -> list[bytes]:
    # loopback only: a reply may follow any of them
    vias = [b"Via: SIP/2.0/UDP 127.0.%d.9;branch=z9hG4bK-%d" % (i % 250, i) for i in range(300)]
    return [lines[0], lines[1], *vias, *lines[2:]]


MUTATIONS: tuple[Callable[[list[bytes], random.Random], list[bytes]], ...] = (
    _truncate,
    _drop_header,
    _duplicate_header,
    _content_length,
    _huge_header,
    _junk_bytes,
    _bogus_uri,
    _forged_internal,
    _forged_route,
    _flip_bytes,
    _first_line,
    _max_forwards,
    _many_vias,
)


def datagrams(seed: int, count: int, source: str, node: str) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        lines = request(rng.choice(tuple(TEMPLATES)), source, node, rng)
        for mutation in rng.sample(MUTATIONS, rng.randrange(1, 4)):
            lines = mutation(lines, rng) if len(lines) > 3 else lines
        yield b"\r\n".join(lines)[:MAX_DATAGRAM]
