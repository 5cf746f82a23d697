"""The filter between Kamailio's log and `divert run`'s: lines about
malformed messages at most once a minute per source, everything else as is.

The lines are Kamailio 5.6's own, copied from a node fed junk."""

from __future__ import annotations

import os
import threading
from io import BytesIO

from divert.logfilter import CHUNK, LogFilter, is_noise, log_socket, pump

TRUNCATED = [  # a message cut short: no prefix until the core names the source
    b" 3(812) ERROR: <core> [core/parser/parse_via.c:2059]: parse_via(): bad via: end of packet",
    b" 3(812) ERROR: <core> [core/parser/parse_via.c:2712]: parse_via(): via parse error",
    b" 3(812) ERROR: <core> [core/parser/msg_parser.c:127]: get_hdr_field(): bad via",
    b" 3(812) INFO: <core> [core/parser/msg_parser.c:749]: parse_msg(): ERROR: parse_msg: "
    b"message=<INVITE sip:+390200000001@127.0.0.1 SIP/2.0 Via: SIP/2.0/UDP>",
    b" 3(812) INFO: <core> [core/receive.c:376]: receive_msg(): core parsing of SIP message "
    b"failed (127.0.0.50:5999/1)",
]
BAD_FROM = [  # parsed, but the From header is broken: the prefix names the source
    b" 2(811) ERROR: {127.0.0.50:5999 1 1 INVITE junk-1} <core> "
    b"[core/parser/parse_addr_spec.c:695]: parse_addr_spec(): unexpected char [\x00/0]",
    b" 2(811) ERROR: {127.0.0.50:5999 1 1 INVITE junk-1} <core> "
    b"[core/parser/parse_from.c:74]: parse_from_header(): bad From header [<sip:ca]",
    b" 2(811) WARNING: {127.0.0.50:5999 1 1 INVITE junk-1} sanity [sanity.c:778]: "
    b"check_parse_uris(): invalid From header or uri",
]
ORDINARY = (
    b" 1(810) ERROR: {127.0.0.11:5080 1 1 INVITE c1} <core> [core/kemi.c:96]: "
    b"sr_kemi_core_err(): divert: store unavailable: no store"
)


def run(lines: list[tuple[float, bytes]], until: float | None = None) -> list[bytes]:
    out: list[bytes] = []
    limiter = LogFilter(out.append, window=60)
    for now, line in lines:
        pid = int(line.split(b"(", 1)[1].split(b")", 1)[0]) if b"(" in line else 0
        limiter.feed(line + b"\n", now, pid)
        limiter.tick(now)
    if until is not None:
        limiter.tick(until)
    return out


def test_a_malformed_message_is_one_line_naming_its_source():
    out = run([(0.0, line) for line in TRUNCATED])
    (only,) = out
    assert only.startswith(b" 3(812) NOTICE: <core> [core/parser/parse_via.c:2059]")
    assert b"malformed messages from 127.0.0.50 are logged once a minute]" in only


def test_a_flood_from_one_source_is_one_line_a_minute_with_the_count():
    flood = [(tick * 0.5, line) for tick in range(240) for line in BAD_FROM]
    out = run(flood, until=200.0)
    assert len(out) == 3  # at 0 s, at 60 s with the first minute's count, then a summary
    assert b"(and 359 more before)" in out[1]
    assert out[2] == (
        b"divert: 359 more lines about malformed messages from 127.0.0.50 "
        b"in the last 60 s not logged"
    )


def test_a_source_that_falls_silent_gets_its_count_a_minute_after_its_window():
    assert len(run([(0.0, line) for line in BAD_FROM], until=119.0)) == 1
    out = run([(0.0, line) for line in BAD_FROM], until=120.0)
    assert out[-1] == (
        b"divert: 2 more lines about malformed messages from 127.0.0.50 in the last 60 s not logged"
    )


def test_each_source_has_its_own_limit_and_other_lines_pass():
    other = [line.replace(b"127.0.0.50", b"127.0.0.11") for line in BAD_FROM]
    out = run([(0.0, line) for line in BAD_FROM + other + [ORDINARY, ORDINARY]])
    assert len(out) == 4
    assert out[2:] == [ORDINARY, ORDINARY]


def test_parser_lines_whose_source_never_comes_go_to_the_unknown_source():
    out = run([(0.0, TRUNCATED[0]), (0.1, TRUNCATED[1])], until=2.0)
    (only,) = out
    assert b"malformed messages from an unknown source" in only


def test_control_characters_are_shown_escaped():
    out = run([(0.0, b" 1(810) INFO: {127.0.0.11:5080 1 1 INVITE a\x1b[2Jb} <core> x")])
    assert out == [b" 1(810) INFO: {127.0.0.11:5080 1 1 INVITE a\\x1b[2Jb} <core> x"]


def test_the_pump_copies_record_by_record_until_the_writers_are_gone():
    reader, writer = log_socket()
    out = BytesIO()
    thread = threading.Thread(target=pump, args=(reader, out))
    thread.start()
    for record in [ORDINARY, *TRUNCATED]:
        os.write(writer, record + b"\n")
    long_line = b" 1(810) INFO: <core> [core/x.c:1]: f(): " + b"y" * (CHUNK + 1000)
    for start in range(0, len(long_line) + 1, CHUNK):  # as glibc writes it
        os.write(writer, (long_line + b"\n")[start : start + CHUNK])
    os.write(writer, b"no newline at the end")
    os.close(writer)
    thread.join(timeout=5)
    assert not thread.is_alive()
    lines = out.getvalue().splitlines()
    assert lines[0] == ORDINARY and b"127.0.0.50 are logged once a minute" in lines[1]
    assert lines[2:] == [  # the long line whole, the last line, then what was held back
        long_line,
        b"no newline at the end",
        b"divert: 4 more lines about malformed messages from 127.0.0.50 in the last 60 s "
        b"not logged",
    ]


def test_a_record_is_one_line_whatever_newlines_a_peer_put_in_it():
    forged = b" 1(810) INFO: {127.0.0.11:5080 1 1 INVITE a\r\n 7(999) ALERT: <core> x} <core> y"
    out: list[bytes] = []
    LogFilter(out.append).feed(forged + b"\n", 0.0, 810)
    assert out == [forged.replace(b"\r\n", b"\\x0d\\x0a")]


def test_bytes_that_are_not_utf8_are_shown_escaped_too():
    out: list[bytes] = []
    LogFilter(out.append).feed(
        b" 1(810) INFO: {127.0.0.11:5080 1 1 INVITE a\x8f\xc2\x9bz} x\n", 0, 810
    )
    assert out == [b" 1(810) INFO: {127.0.0.11:5080 1 1 INVITE a\\x8f\\xc2\\x9bz} x"]
    out[0].decode()  # valid UTF-8


def test_only_kamailios_own_words_about_parsing_are_noise():
    assert is_noise(TRUNCATED[0]) and is_noise(BAD_FROM[2])
    assert is_noise(b" 2(9) ERROR: pv [pv_core.c:2002]: pv_get_hdr_helper(): error parsing headers")
    assert not is_noise(ORDINARY)
    latency = b" 2(9) DEBUG: {127.0.0.11:5080 1 1 INVITE c} <core> [core/receive.c:523]: "
    assert not is_noise(latency + b"receive_msg(): request-route executed in: 180 usec")
    pike = b" 2(9) WARNING: pike [pike_funcs.c:135]: pike_check_ipaddr(): PIKE - BLOCKing ip x"
    assert not is_noise(pike)


def test_a_flood_from_many_sources_is_counted_past_the_limit():
    out: list[bytes] = []
    limiter = LogFilter(out.append)
    for index in range(1000):
        line = BAD_FROM[0].replace(b"127.0.0.50", f"10.0.{index // 250}.{index % 250}".encode())
        limiter.feed(line + b"\n", 1.0, 811)
    limiter.tick(61.0)
    assert len(out) == 61
    assert out[-1] == (
        b"divert: 940 more lines about malformed messages from sources beyond the limit "
        b"in the last 60 s not logged"
    )


def test_the_pump_keeps_draining_when_its_output_is_gone():
    """divert run's standard error closed (a terminal gone): Kamailio's end
    must not fill up and stall its workers, so the pump reads on."""

    class Gone(BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            raise BrokenPipeError

    reader, writer = log_socket()
    thread = threading.Thread(target=pump, args=(reader, Gone()))
    thread.start()
    for _ in range(500):
        os.write(writer, ORDINARY + b"\n")
    os.close(writer)
    thread.join(timeout=5)
    assert not thread.is_alive()
