"""What single kamailio.cfg statements cost: nanoseconds each, in a real Kamailio.

    .venv/bin/python bench/cfg_costs.py [--net 127.0.9] [--loops 20000]

perf says how much of a loaded node's CPU is Kamailio's interpreter, not
which statements of kamailio.cfg it is spent on.  This starts one Kamailio
(one SIP worker, TLSF memory as `divert run` has it: the default manager
checks every allocation and made string work look eight times dearer) on a
configuration generated here: for one INVITE, each statement below runs
`--loops` times in a `while` loop, timed with the clock, minus the empty
loop, twice; the lower figure is printed.  The statements are those of
divert's per-call routes (kamailio-cfg/kamailio.cfg), with the alternatives
weighed against them.  Loopback only; Kamailio is stopped by its PID.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGEX_GROUPS = ROOT / "kamailio-cfg" / "regex-groups"
STEP = (
    "E~1~8~sip:+393351000000@divert.invalid~120000~divert:forwards_always~0~"
    "Diversion: <sip:+390200000000@divert.invalid>;reason=unconditional;counter=1;"
    "privacy=off\\r\\n~leg~~~~~~~"
)

# (name, statement): one per line of the printed table
STATEMENTS: tuple[tuple[str, str], ...] = (
    ("assign an int", "$var(x) = 1;"),
    ("if on an int", "if ($var(x) == 1) { $var(x) = 1; }"),
    ("route() of an empty route", "route(EMPTY);"),
    ("is_method", 'if (is_method("INVITE")) { $var(x) = 1; }'),
    ("has_totag", "if (has_totag()) { $var(x) = 1; }"),
    ("is_present_hf", 'if (is_present_hf("Route")) { $var(x) = 1; }'),
    ("sanity_check 4071/7", 'if (!sanity_check("4071", "7")) { $var(x) = 1; }'),
    ("PCRE: Call-ID and tags", 'if (!pcre_match_group("$ci $ft $tt", "0")) { $var(x) = 1; }'),
    ("PCRE: From and To users", 'if (!pcre_match_group("$fU$tU", "1")) { $var(x) = 1; }'),
    ("=~ (glibc regex)", 'if ($ru =~ ";alias=") { $var(x) = 1; }'),
    ("is_myself", 'if (is_myself("$ru")) { $var(x) = 1; }'),
    ("two $shv compared", "if ($shv(plans) ne $shv(store)) { $var(x) = 1; }"),
    ("$sht read of a plan", "$var(s) = $sht(plans=>$var(key));"),
    ("s.select of a field", "$var(s) = $(var(step){s.select,7,~});"),
    ("s.select then s.int", "$var(s) = $(var(step){s.select,1,~}{s.int});"),
    ("update_stat, a name", 'update_stat("divert:native_plans", "+1");'),
    ("update_stat, a $var", 'update_stat("$var(stat)", "+1");'),
    (
        "join 6 parts with +",
        '$var(s) = $var(key) + ":dialog:" + $(ft{s.len}) + ":" + $ft + ":" + $ci;',
    ),
    ("format 6 parts, $_s", "$var(s) = $_s($var(key):dialog:$(ft{s.len}):$ft:$ci);"),
    ("s.sha256 of 100 bytes", "$var(s) = $(var(text){s.sha256});"),
    ("log_prefix's format", "$var(s) = $_s({$si:$sp $mt $hdr(CSeq) $ci} );"),
    (
        "dialog signature, +",
        '$var(s) = $var(key) + ":dialog:" + $(ft{s.len}) + ":" + $ft + ":" + $ci; '
        '$var(s) = $var(key) + ":" + $(var(s){s.sha256}); '
        "$var(s) = $(var(s){s.sha256}{s.substr,0,24});",
    ),
    (
        "dialog signature, $_s",
        "$var(s) = $_s($var(key):dialog:$(ft{s.len}):$ft:$ci); "
        "$var(s) = $_s($var(key):$(var(s){s.sha256})); "
        "$var(s) = $(var(s){s.sha256}{s.substr,0,24});",
    ),
)


def clock() -> str:
    # $TV(sn) and $TV(un) read the clock apart: the seconds modulo 1000 keep
    # the microseconds within an int
    return "(($TV(sn) mod 1000) * 1000000 + $TV(un))"


def configuration(listen: str, loops: int) -> str:
    timed = []
    for index, (_, statement) in enumerate(STATEMENTS):
        timed.append(
            f"\t$var(t0) = {clock()}; $var(i) = 0;\n"
            f"\twhile ($var(i) < {loops}) {{ $var(i) = $var(i) + 1; {statement} }}\n"
            f"\t$var(t1) = {clock()};\n"
            f'\txinfo("COST {index} $var(t1) $var(t0) $var(empty)\\n");\n'
        )
    body = "".join(timed)
    return f"""#!KAMAILIO
debug=2
log_stderror=yes
children=1
max_while_loops={loops + 1}
listen=udp:{listen}
auto_aliases=no
dns=no
rev_dns=no
disable_tcp=yes
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "sanity.so"
loadmodule "statistics.so"
loadmodule "htable.so"
loadmodule "regex.so"
modparam("statistics", "variable", "divert:native_plans")
modparam("htable", "htable", "plans=>size=8;")
modparam("regex", "file", "{REGEX_GROUPS}")
modparam("pv", "shvset", "plans=s:1:2")
modparam("pv", "shvset", "store=s:1:2")

request_route {{
	$var(key) = "{"5eed" * 16}";
	$var(step) = "{STEP}";
	$var(text) = $_s($var(key):dialog:0::$ci);
	$var(stat) = "divert:native_plans";
	$sht(plans=>$var(key)) = $var(step);
	$var(t0) = {clock()}; $var(i) = 0;
	while ($var(i) < {loops}) {{ $var(i) = $var(i) + 1; }}
	$var(empty) = {clock()} - $var(t0);
{body}	sl_send_reply("200", "OK");
	exit;
}}

route[EMPTY] {{
	return 1;
}}
"""


def invite(listen: str, source: tuple[str, int]) -> bytes:
    host, port = source
    return (
        f"INVITE sip:+390200000000@{listen} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-cfg-costs\r\n"
        f"From: <sip:+441234567890@{host}>;tag=cfg-costs-from\r\n"
        f"To: <sip:+390200000000@{listen}>\r\n"
        f"Call-ID: cfg-costs-{time.monotonic_ns()}@{host}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@{host}:{port}>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answered(
    listen: str, source: tuple[str, int], timeout: float, running: subprocess.Popen[bytes]
) -> bool:
    """Send the INVITE (again every 2 s: the first may beat the socket) until
    200, while Kamailio runs."""
    host, port = listen.split(":")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(source)
        sock.settimeout(2.0)
        deadline = time.monotonic() + timeout
        sent = False
        while time.monotonic() < deadline and running.poll() is None:
            if not sent:
                sock.sendto(invite(listen, source), (host, int(port)))
                sent = True
            try:
                if sock.recv(65535).startswith(b"SIP/2.0 200"):
                    return True
            except TimeoutError:
                sent = False  # nothing yet: say it again (Kamailio absorbs a repeat)
    return False


def measure(net: str, loops: int, work: Path) -> dict[str, list[float]]:
    listen = f"{net}.1:5060"
    config = work / "costs.cfg"
    config.write_text(configuration(listen, loops))
    log = work / "kamailio.log"
    figures: dict[str, list[float]] = {name: [] for name, _ in STATEMENTS}
    for _ in range(2):
        with open(log, "w") as out:
            kamailio = subprocess.Popen(
                ["kamailio", "-f", str(config), "-DD", "-E", "-x", "tlsf", "-X", "tlsf"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            if not answered(listen, (f"{net}.2", 5999), 300, kamailio):
                tail = log.read_text()[-2000:]
                raise SystemExit(f"Kamailio did not answer (log: {log}):\n{tail}")
        finally:
            kamailio.terminate()
            kamailio.wait(timeout=10)
        for line in log.read_text().splitlines():
            found = re.search(r"COST (\d+) (-?\d+) (-?\d+) (-?\d+)", line)
            if found:
                index, end, start, empty = map(int, found.groups())
                name = STATEMENTS[index][0]
                figures[name].append((end - start - empty) * 1000 / loops)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="127.0.9", help="loopback prefix (Kamailio on NET.1)")
    parser.add_argument("--loops", type=int, default=20_000)
    args = parser.parse_args()
    if not re.fullmatch(r"127\.\d{1,3}\.\d{1,3}", args.net):
        raise SystemExit(f"--net {args.net!r}: three octets of loopback, e.g. 127.0.9")
    with tempfile.TemporaryDirectory(prefix="divert-cfg-costs-") as scratch:
        figures = measure(args.net, args.loops, Path(scratch))
    print(f"{'statement':32s} ns (the lower of 2 runs of {args.loops:,} each)")
    for name, values in figures.items():
        shown = f"{min(values):8.0f}" if values else "       ?"
        print(f"{name:32s} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
