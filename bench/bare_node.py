"""divert without the checks its native routes make and the wire-equivalent
does not: what those checks cost, measured by bench/sip_bench.py.

    .venv/bin/python bench/bare_node.py CFG -- [divert options] run [run options]

runs `divert` (as `divert ...` would) with the Kamailio configuration CFG
instead of the package's kamailio.cfg.  sip_bench writes CFG with
`bare_config`: kamailio.cfg with each edit of EDITS made.  Every check
removed is a behaviour divert promises (README), and none puts a message on
the wire, so on the benchmark's calls the bare node answers as divert does:
the CPU per call of divert, the bare node and the wire-equivalent side by
side says how much of divert's gap to the equivalent they are.

A bench tool only: a node without these checks relays what it must refuse.
"""

from __future__ import annotations

import sys
from pathlib import Path

# (the check, kamailio.cfg's text, what the bare node has instead): each
# text must be in kamailio.cfg exactly once
EDITS: tuple[tuple[str, str, str], ...] = (
    (
        "Call-ID and tags printable",
        'if (!pcre_match_group("$ci $ft $tt", "0")) {',
        "if (0) {",
    ),
    (
        "plans equal to the store (on arrival)",
        "\tif ($shv(divert_plans) ne $shv(divert_store)) {\n\t\treturn -1;\n\t}\n"
        "\tif ($(rU{s.substr,0,1})",
        "\tif ($(rU{s.substr,0,1})",
    ),
    (
        "no Diversion yet, From and To users printable",
        '\tif (is_present_hf("Diversion") || !pcre_match_group("$fU$tU", "1")) {\n'
        "\t\treturn -1;\n\t}\n",
        "",
    ),
    ("counters", '\tupdate_stat("divert:native_plans", "+1");\n', ""),
    ("counters", '\tupdate_stat("divert:decisions_relay", "+1");\n', ""),
    (
        "counters",
        '\t\t$var(stat) = $(var(step){s.select,5,~});\n\t\tupdate_stat("$var(stat)", "+1");\n'
        '\t\tif ($(var(step){s.select,6,~}) eq "1") {\n'
        '\t\t\tupdate_stat("divert:emergency_forwards", "+1");\n\t\t}\n',
        "",
    ),
    (
        "the Route names this node",
        '\tif ($route_uri != $null && is_myself("$route_uri")) {',
        "\tif ($route_uri != $null) {",
    ),
    (
        "a signature's length",
        "\tif ($(var(got){s.len}) != 24) {\n\t\treturn -1;\n\t}\n",
        "",
    ),
    (
        "the node key's length",
        '\tif ($(var(node_key){s.len}) != 64) {\n\t\t$var(sig) = "no key";\n\t\treturn;\n\t}\n',
        "",
    ),
    (
        "a signature that did not fit",
        '\tif ($(var(sig){s.len}) < 75) {\n\t\t$var(sig) = "unsigned";\n\t\treturn;\n\t}\n',
        "",
    ),
    # (restoring is uac's default: "none" turns it off)
    (
        "From restored (uac)",
        'modparam("uac", "restore_mode", "auto")\n',
        'modparam("uac", "restore_mode", "none")\n',
    ),
)


def checks() -> list[str]:
    """The checks the bare node lacks, each named once."""
    return list(dict.fromkeys(name for name, _old, _new in EDITS))


def bare_config(text: str) -> str:
    """kamailio.cfg's `text` without the checks; SystemExit naming the edit
    when kamailio.cfg no longer has its text (update EDITS)."""
    for name, old, new in EDITS:
        found = text.count(old)
        if found != 1:
            raise SystemExit(
                f"bench/bare_node.py: the text of {name!r} is in kamailio.cfg {found} times, "
                "not once: bring EDITS up to date with kamailio.cfg"
            )
        text = text.replace(old, new)
    return text


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        raise SystemExit("usage: bare_node.py CFG -- [divert arguments]")
    import divert.node
    from divert.cli import main as divert_main

    divert.node.CONFIG = Path(sys.argv[1])
    return divert_main(sys.argv[3:])


if __name__ == "__main__":
    sys.exit(main())
