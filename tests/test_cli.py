"""The `divert` command against a real portal: SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from divert.cli import main
from divert.db import open_portal
from divert.schema.tables import change_journal
from tests.sync_helpers import ACME


@dataclass
class Result:
    code: int
    out: str
    err: str


Divert = Callable[..., Result]


@pytest.fixture
def divert(portal_url: str, capsys: pytest.CaptureFixture[str]) -> Divert:
    def run(*args: str) -> Result:
        code = main(["--portal", portal_url, *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def acme(divert: Divert) -> Divert:
    """A tenant with a PBX trunk, two subscribers and three numbers."""
    for args in ACME:
        result = divert(*args)
        assert result.code == 0, result.err
    return divert


def journal_size(portal_url: str) -> int:
    engine = open_portal(portal_url)
    with engine.connect() as connection:
        size = connection.scalar(select(func.count()).select_from(change_journal)) or 0
    engine.dispose()
    return size


def forward_ids(result: Result) -> list[int]:
    return [int(line.split()[0]) for line in result.out.splitlines()[1:]]


# -- the tour ------------------------------------------------------------------


def test_national_numbers_are_stored_in_e164(acme: Divert):
    listing = acme("number", "list", "--tenant", "acme")
    assert listing.code == 0
    assert "+390212345678" in listing.out
    assert "trunk pbx" in listing.out and "subscriber alice" in listing.out


def test_forward_of_each_kind_is_listed_as_active(acme: Divert):
    for args in [
        ("+390212345678", "--when", "always", "--to", "+393351112233", "--callers", "external"),
        ("+390212345678", "--when", "busy", "--to", "ext:201"),
        ("+390212345678", "--when", "no-answer", "--to", "voicemail", "--timeout", "20"),
        ("+390287654321", "--when", "not-registered", "--to", "0212345678"),
        ("+390212345678", "--when", "trunk-down", "--to", "+393351112244"),
        ("+390211112222", "--when", "busy", "--to", "reject:486"),
    ]:
        result = acme("forward", "add", *args)
        assert result.code == 0, result.err
    listing = acme("forward", "list")
    assert listing.code == 0
    lines = listing.out.splitlines()
    assert lines[0].split()[:6] == ["ID", "TENANT", "OWNER", "WHEN", "CALLERS", "TO"]
    rows = {tuple(line.split()[2:6]) for line in lines[1:]}
    assert rows == {
        ("+390212345678", "always", "external", "+393351112233"),
        ("+390212345678", "busy", "any", "ext:201"),
        ("+390212345678", "no-answer", "any", "voicemail"),
        ("+390287654321", "not-registered", "any", "+390212345678"),
        ("+390212345678", "trunk-down", "any", "+393351112244"),
        ("+390211112222", "busy", "any", "reject:486"),
    }


def test_change_and_delete_a_forward(acme: Divert):
    assert (
        acme("forward", "add", "+390212345678", "--when", "busy", "--to", "+393351112233").code == 0
    )
    (forward_id,) = forward_ids(acme("forward", "list"))
    changed = acme("forward", "set", str(forward_id), "--to", "+393359998877")
    assert changed.code == 0, changed.err
    assert "+393359998877" in acme("forward", "list").out
    assert acme("forward", "delete", str(forward_id)).code == 0
    assert forward_ids(acme("forward", "list")) == []


def test_subscriber_forward_applies_to_all_its_numbers(acme: Divert):
    result = acme(
        "forward",
        "add",
        "--subscriber",
        "alice",
        "--tenant",
        "acme",
        "--when",
        "always",
        "--to",
        "+393351112233",
    )
    assert result.code == 0, result.err
    explained = json.loads(acme("explain", "+390287654321", "--json").out)
    assert explained["steps"][0]["relay"]["target"] == "+393351112233"
    assert explained["steps"][0]["relay"]["diversions"] == [
        {"from": "+390287654321", "reason": "always", "counter": 1}
    ]


def test_the_operator_chooses_a_subscribers_caller_id_among_its_numbers(acme: Divert):
    def shown() -> str:
        (alice,) = [line for line in acme("subscriber", "list").out.splitlines() if "alice" in line]
        return alice.split()[-2]  # CALLER ID, then PRESENCE

    assert shown() == "+390287654321"
    assert (
        acme("number", "add", "02 3333 4444", "--tenant", "acme", "--subscriber", "alice").code == 0
    )
    chosen = acme("subscriber", "set", "alice", "--tenant", "acme", "--caller-id", "02 3333 4444")
    assert chosen.code == 0, chosen.err
    assert chosen.out == "subscriber alice: calls to the carriers show +390233334444\n"
    assert shown() == "+390233334444"
    bob = acme("subscriber", "set", "alice", "--tenant", "acme", "--caller-id", "+390211112222")
    assert bob.code == 2
    assert bob.err.startswith("divert: +390211112222 is not a number of subscriber alice: ")
    assert acme("number", "delete", "+390233334444").code == 0
    assert shown() == "+390287654321"  # back to the default with its number gone
    cleared = acme("subscriber", "set", "alice", "--tenant", "acme", "--caller-id", "")
    assert (
        cleared.out
        == "subscriber alice: calls to the carriers show the number it was given first\n"
    )


def test_presence_is_set_listed_and_shown_with_not_present_forwards(acme: Divert):
    added = acme(
        "forward", "add", "--subscriber", "alice", "--tenant", "acme",
        "--when", "not-present", "--to", "+393351112233",
    )  # fmt: skip
    assert added.code == 0, added.err
    assert "not-present (present now)" in acme("forward", "list").out
    away = acme("subscriber", "set", "alice", "--tenant", "acme", "--away")
    assert away.out == "subscriber alice: away\n"
    assert "not-present (away now)" in acme("forward", "list").out
    (alice,) = [line for line in acme("subscriber", "list").out.splitlines() if "alice" in line]
    assert alice.split()[-1] == "away"
    assert acme("subscriber", "set", "alice", "--tenant", "acme", "--present").code == 0
    both = acme("subscriber", "set", "alice", "--tenant", "acme", "--away", "--present")
    assert both.code == 2 and "not allowed with argument" in both.err
    nothing = acme("subscriber", "set", "alice", "--tenant", "acme")
    assert (nothing.code, nothing.err) == (
        2,
        "divert: nothing to change: give --caller-id, --away or --present\n",
    )


def test_expired_forward_is_not_listed(acme: Divert):
    result = acme(
        "forward",
        "add",
        "+390212345678",
        "--when",
        "always",
        "--to",
        "+393351112233",
        "--until",
        "2099-01-01T00:00",
    )
    assert result.code == 0, result.err
    assert len(forward_ids(acme("forward", "list"))) == 1


def test_explain_walks_a_chain_of_three(acme: Divert):
    acme("forward", "add", "+390212345678", "--when", "busy", "--to", "+390211112222")
    acme(
        "forward",
        "add",
        "+390211112222",
        "--when",
        "no-answer",
        "--to",
        "+390287654321",
        "--timeout",
        "15",
    )
    acme("forward", "add", "+390287654321", "--when", "no-answer", "--to", "voicemail")
    result = acme("explain", "+390212345678", "--after", "busy", "no-answer", "--json")
    assert result.code == 0, result.err
    steps = json.loads(result.out)["steps"]
    assert [s["relay"]["target"] for s in steps] == [
        "+390212345678",
        "+390211112222",
        "+390287654321",
    ]
    assert steps[0]["relay"]["endpoint"]["kind"] == "trunk"
    assert steps[1]["relay"]["ring_timeout"] == 15
    assert steps[2]["relay"]["endpoint"] == {"kind": "subscriber", "ref": "alice@acme"}
    assert [d["reason"] for d in steps[2]["relay"]["diversions"]] == ["busy", "no-answer"]
    final = json.loads(
        acme("explain", "+390212345678", "--after", "busy", "no-answer", "no-answer", "--json").out
    )["steps"][-1]
    assert final["relay"]["endpoint"] == {
        "kind": "voicemail",
        "ref": "sip:alice@127.0.0.1:5090",
    }


def test_explain_text_names_the_forward_and_the_reply(acme: Divert):
    acme("forward", "add", "+390212345678", "--when", "busy", "--to", "+393351112233")
    result = acme("explain", "+390212345678", "--from", "+441234567890", "--after", "busy", "busy")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "(external caller)" in lines[0]
    assert lines[1].startswith("1. ring +390212345678 at trunk")
    assert "forward 1 (busy -> +393351112233)" in lines[2]
    assert lines[3].strip() == "diversion 1: from +390212345678 (busy)"
    assert lines[4] == "3. after busy: reply 486 Busy Here"


def test_explain_internal_caller_takes_internal_rules(acme: Divert):
    acme(
        "forward",
        "add",
        "+390212345678",
        "--when",
        "always",
        "--to",
        "ext:202",
        "--callers",
        "internal",
    )
    internal = json.loads(acme("explain", "+390212345678", "--from", "201", "--json").out)
    external = json.loads(acme("explain", "+390212345678", "--from", "+441234567890", "--json").out)
    assert internal["internal"] is True
    assert internal["steps"][0]["relay"]["target"] == "sub:bob@acme"
    assert external["steps"][0]["relay"]["target"] == "+390212345678"


def test_explain_trunk_down_reaches_the_trunk_emergency_number(acme: Divert):
    result = json.loads(acme("explain", "+390212345678", "--after", "trunk-down", "--json").out)
    relay = result["steps"][1]["relay"]
    assert relay["target"] == "+393331234567"
    assert relay["via"] == "trunk pbx emergency"


def test_policy_refuses_denied_prefix_and_other_countries(acme: Divert):
    assert acme("policy", "set", "--allow-countries", "39", "--deny-prefixes", "+39335").code == 0
    denied = acme("forward", "add", "+390212345678", "--when", "always", "--to", "+393351112233")
    assert denied.code == 2 and "prefix +39335 is denied" in denied.err
    abroad = acme("forward", "add", "+390212345678", "--when", "always", "--to", "+33612345678")
    assert abroad.code == 2 and "its country is not among the allowed (+39)" in abroad.err
    assert (
        acme("forward", "add", "+390212345678", "--when", "always", "--to", "+393471112233").code
        == 0
    )


# -- loops ---------------------------------------------------------------------


def test_loop_across_tenants_is_refused_and_named(acme: Divert, portal_url: str):
    assert acme("tenant", "add", "beta", "--region", "FR").code == 0
    assert acme("trunk", "add", "pabx", "--tenant", "beta", "--address", "127.0.0.30").code == 0
    assert acme("number", "add", "01 23 45 67 89", "--tenant", "beta", "--trunk", "pabx").code == 0
    assert (
        acme("forward", "add", "+390212345678", "--when", "always", "--to", "+33123456789").code
        == 0
    )
    before = journal_size(portal_url)
    refused = acme("forward", "add", "+33123456789", "--when", "always", "--to", "+390212345678")
    assert refused.code == 2
    assert refused.err.count("\n") == 1
    assert "loop" in refused.err
    assert "+33123456789 -> +390212345678 -> +33123456789" in refused.err
    assert journal_size(portal_url) == before


def test_loop_through_a_changed_destination_is_refused(acme: Divert):
    acme("forward", "add", "+390212345678", "--when", "always", "--to", "+390211112222")
    acme("forward", "add", "+390211112222", "--when", "always", "--to", "+393351112233")
    ids = forward_ids(acme("forward", "list"))
    refused = acme("forward", "set", str(max(ids)), "--to", "+390212345678")
    assert refused.code == 2 and "loop" in refused.err
    assert "+393351112233" in acme("forward", "list").out


def test_loop_through_a_subscriber_and_its_extension_is_refused(acme: Divert):
    refused = acme(
        "forward",
        "add",
        "--subscriber",
        "alice",
        "--tenant",
        "acme",
        "--when",
        "always",
        "--to",
        "+390287654321",
    )
    assert refused.code == 2 and "loop" in refused.err
    self_forward = acme(
        "forward", "add", "+390212345678", "--when", "always", "--to", "+390212345678"
    )
    assert self_forward.code == 2 and "+390212345678 -> +390212345678" in self_forward.err


def test_conditional_mutual_cover_is_allowed(acme: Divert):
    assert (
        acme("forward", "add", "+390212345678", "--when", "busy", "--to", "+390211112222").code == 0
    )
    assert (
        acme("forward", "add", "+390211112222", "--when", "busy", "--to", "+390212345678").code == 0
    )


def test_unconditional_forwards_for_different_callers_do_not_loop(acme: Divert):
    assert (
        acme(
            "forward",
            "add",
            "+390212345678",
            "--when",
            "always",
            "--to",
            "+390211112222",
            "--callers",
            "internal",
        ).code
        == 0
    )
    assert (
        acme(
            "forward",
            "add",
            "+390211112222",
            "--when",
            "always",
            "--to",
            "+390212345678",
            "--callers",
            "external",
        ).code
        == 0
    )
    refused = acme(
        "forward",
        "add",
        "+390211112222",
        "--when",
        "always",
        "--to",
        "+390212345678",
        "--callers",
        "internal",
    )
    assert refused.code == 2 and "internal callers" in refused.err


# -- bad input: one line, exit 2, nothing written ------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("forward", "add", "+390299999999", "--when", "busy", "--to", "+393351112233"),
            "unknown number +390299999999",
        ),
        (("explain", "+390299999999"), "unknown number +390299999999"),
        (
            ("number", "add", "abc", "--tenant", "acme", "--trunk", "pbx"),
            "'abc' is not a phone number",
        ),
        (
            ("number", "add", "12", "--tenant", "acme", "--trunk", "pbx"),
            "is not a valid phone number",
        ),
        (
            ("number", "add", "+390212345678", "--tenant", "acme", "--trunk", "pbx"),
            "already belongs to tenant acme",
        ),
        (
            ("number", "add", "+390233334444", "--tenant", "nope", "--trunk", "pbx"),
            "unknown tenant 'nope'",
        ),
        (
            (
                "subscriber",
                "add",
                "carol",
                "--tenant",
                "acme",
                "--password",
                "carol-secret",
                "--extension",
                "201",
            ),
            "extension 201 is already used by alice",
        ),
        (
            ("subscriber", "add", "carol", "--tenant", "acme", "--password", "short"),
            "at least 8 characters",
        ),
        (
            (
                "subscriber",
                "add",
                "carol",
                "--tenant",
                "acme",
                "--password",
                "carol-secret",
                "--name",
                'Carol "the boss"',
            ),
            "no quotes",
        ),
        (("explain", "+390212345678", "--at", "yesterday-ish"), "is not an ISO 8601 time"),
        (
            (
                "forward",
                "add",
                "+390212345678",
                "--when",
                "always",
                "--to",
                "+393351112233",
                "--until",
                "soon",
            ),
            "is not ISO 8601",
        ),
        (
            ("forward", "add", "+390212345678", "--when", "always", "--to", "+39899123456"),
            "premium-rate",
        ),
        (
            (
                "forward",
                "add",
                "+390212345678",
                "--when",
                "busy",
                "--to",
                "+393351112233",
                "--timeout",
                "20",
            ),
            "use it with --when no-answer",
        ),
        (
            ("forward", "add", "+390212345678", "--when", "busy", "--to", "ext:209"),
            "extension 209 does not exist",
        ),
        (
            ("forward", "add", "+390212345678", "--when", "busy", "--to", "operator"),
            "has no operator",
        ),
        (
            ("forward", "add", "+390212345678", "--when", "busy", "--to", "reject:200"),
            "SIP failure code",
        ),
        (
            ("forward", "add", "+390212345678", "--when", "sometimes", "--to", "voicemail"),
            "invalid choice",
        ),
        (("forward", "set", "999", "--to", "+393351112233"), "unknown forward 999"),
        (("forward", "delete", "999"), "unknown forward 999"),
        (("tenant", "add", "acme", "--region", "IT"), "tenant 'acme' already exists"),
        (("tenant", "add", "gamma", "--region", "XX"), "region 'XX'"),
        (("tenant", "delete", "acme"), "still has"),
        (
            ("trunk", "add", "pbx2", "--tenant", "acme", "--address", "pbx.example.net"),
            "must be IPv4",
        ),
        (("trunk", "delete", "pbx", "--tenant", "acme"), "still carries 1 number"),
        (("subscriber", "delete", "bob", "--tenant", "acme"), "still owns 1 number"),
        (("explain", "+390212345678", "--from", "299"), "extension 299 does not exist"),
        (("explain", "+390212345678", "--after", "busy", "busy"), "drop the extra --after"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    acme: Divert, portal_url: str, args: tuple[str, ...], message: str
):
    before = journal_size(portal_url)
    result = acme(*args)
    assert result.code == 2, result
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("divert: ")
    assert message in result.err
    assert "Traceback" not in result.err
    assert journal_size(portal_url) == before


def test_unreachable_portal_is_exit_1_with_what_to_do(capsys: pytest.CaptureFixture[str]):
    code = main(["--portal", "postgresql://divert:divert@127.0.0.1:9/nothing", "tenant", "list"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert "cannot use the portal at postgresql+psycopg://divert:***@127.0.0.1:9/nothing" in err
    assert "check --portal or DIVERT_PORTAL" in err


def test_unmigrated_portal_says_to_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    sqlite3.connect(tmp_path / "empty.db").close()  # a file, but no schema
    code = main(["--portal", f"sqlite:///{tmp_path / 'empty.db'}", "forward", "list"])
    err = capsys.readouterr().err
    assert code == 1
    assert "run 'divert db upgrade'" in err


def test_default_portal_is_a_sqlite_file_under_var(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "DIVERT_PORTAL"}
    command = [str(Path(sys.executable).with_name("divert"))]
    upgraded = subprocess.run(
        [*command, "db", "upgrade"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert (tmp_path / "var" / "portal.db").is_file()
    bad = subprocess.run(
        [*command, "tenant", "add", "x", "--region", "QQ"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


# -- time modes ------------------------------------------------------------------------


def test_schedules_and_mode_restricted_forwards(acme: Divert):
    added = acme(
        "schedule",
        "add",
        "--tenant",
        "acme",
        "--mode",
        "night",
        "--days",
        "mon-fri",
        "--from",
        "18:00",
        "--to",
        "08:00",
    )
    assert added.code == 0, added.err
    listing = acme("schedule", "list", "--tenant", "acme")
    assert listing.out.splitlines()[1].split()[2:] == [
        "night",
        "mon,tue,wed,thu,fri",
        "18:00",
        "08:00",
    ]
    forward = acme(
        "forward",
        "add",
        "+390212345678",
        "--when",
        "always",
        "--to",
        "+393351112233",
        "--modes",
        "night",
    )
    assert forward.code == 0, forward.err
    assert acme("forward", "list").out.splitlines()[1].split()[-1] == "night"
    # Monday 2026-11-23 in Rome: 20:00 is night, 10:00 is no mode at all
    at_night = json.loads(
        acme("explain", "+390212345678", "--at", "2026-11-23T20:00", "--json").out
    )
    assert at_night["mode"] == "night"
    assert at_night["steps"][0]["relay"]["target"] == "+393351112233"
    by_day = json.loads(acme("explain", "+390212345678", "--at", "2026-11-23T10:00", "--json").out)
    assert by_day["mode"] is None
    assert by_day["steps"][0]["relay"]["target"] == "+390212345678"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (
                "schedule",
                "add",
                "--tenant",
                "acme",
                "--mode",
                "Night!",
                "--days",
                "mon",
                "--from",
                "18:00",
                "--to",
                "08:00",
            ),
            "mode 'Night!'",
        ),
        (
            (
                "schedule",
                "add",
                "--tenant",
                "acme",
                "--mode",
                "night",
                "--days",
                "weekdays",
                "--from",
                "18:00",
                "--to",
                "08:00",
            ),
            "is not a list of weekdays",
        ),
        (
            (
                "schedule",
                "add",
                "--tenant",
                "acme",
                "--mode",
                "night",
                "--days",
                "mon",
                "--from",
                "6pm",
                "--to",
                "08:00",
            ),
            "is not a time like 08:00",
        ),
        (("schedule", "delete", "99"), "unknown schedule 99"),
        (
            (
                "forward",
                "add",
                "+390212345678",
                "--when",
                "always",
                "--to",
                "+393351112233",
                "--modes",
                "nite",
            ),
            "has no schedule for mode(s) nite",
        ),
    ],
)
def test_bad_schedule_input_is_one_line_and_exit_2(
    acme: Divert, portal_url: str, args: tuple[str, ...], message: str
):
    before = journal_size(portal_url)
    result = acme(*args)
    assert result.code == 2 and result.err.count("\n") == 1
    assert message in result.err
    assert journal_size(portal_url) == before


def test_help_loads_no_database_library():
    """`divert --help` starts fast: the commands import what they need when
    they run (the command registry, issue 13)."""
    probe = (
        "import contextlib, io, sys\n"
        "from divert.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    code = main(['--help'])\n"
        "heavy = ('sqlalchemy', 'psycopg', 'alembic', 'phonenumbers')\n"
        "print(code, [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "0 []", result.stderr


@pytest.mark.parametrize("command", [["sync", "status"], ["tenant", "list"], ["db", "upgrade"]])
def test_a_portal_url_that_is_no_database_url_is_one_line_for_every_command(
    command: list[str], capsys: pytest.CaptureFixture[str]
):
    code = main(["--portal", "notaurl", *command])
    err = capsys.readouterr().err
    assert code == 2 and err == "divert: portal URL 'notaurl' is not a database URL\n"


def test_every_option_of_every_command_has_help_text():
    from divert.cli import _subparsers, build_parser

    parser = build_parser()
    missing = [
        f"{command.prog} {action.option_strings[-1]}"
        for command in [parser, *_subparsers(parser)]
        for action in command._actions
        if action.option_strings and not action.help
    ]
    assert missing == []


def test_portal_is_taken_before_or_after_the_command(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    assert main(["db", "upgrade", "--portal", url]) == 0
    assert main(["tenant", "add", "acme", "--region", "IT", "--portal", url]) == 0
    assert main(["--portal", url, "tenant", "list"]) == 0
    assert main(["--portal", "sqlite:////nonexistent/x.db", "tenant", "list", "--portal", url]) == 0


def test_a_missing_sqlite_portal_is_one_line_and_never_made(tmp_path: Path, capsys):
    url = f"sqlite:///{tmp_path / 'none' / 'p.db'}"
    assert main(["--portal", url, "tenant", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no portal file" in err and "db upgrade" in err
    assert not (tmp_path / "none").exists()


def test_version_and_bad_listen_are_one_line(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("divert ")
    for listen, said in [
        ("127.0.0.1:99999", "the port must be 1-65535"),
        ("localhost:5060", "must be IPv4:PORT"),
        ("127.0.0.1", "must be IPv4:PORT"),
    ]:
        assert main(["run", "--listen", listen]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, err


def test_times_are_shown_in_the_tenants_zone_and_trunks_by_name(acme: Divert):
    on_trunk = "+390212345678"  # answered by the trunk named pbx
    added = acme("forward", "add", on_trunk, "--when", "always", "--to", "+393351112299",
                 "--until", "2031-12-01T10:00")  # fmt: skip
    assert added.code == 0, added.err
    assert "2031-12-01T10:00 Europe/Rome" in acme("forward", "list").out
    explained = acme("explain", on_trunk, "--at", "2031-11-30T12:00", "--after", "trunk-down").out
    assert "at 2031-11-30T12:00:00+01:00 (Europe/Rome)" in explained
    after_expiry = acme("explain", on_trunk, "--at", "2031-12-02T12:00").out
    assert f"ring {on_trunk} at trunk pbx (ring timer:" in after_expiry
    plain = acme("explain", "+390287654321", "--at", "2031-11-30T12:00").out
    assert "ring timer: 120 s, the node's default" in plain


def test_a_trunk_address_belongs_to_one_trunk_of_one_tenant(acme: Divert):
    assert acme("tenant", "add", "beta", "--region", "IT").code == 0
    taken = acme("trunk", "add", "pbx2", "--tenant", "beta", "--address", "127.0.0.20:5060")
    assert taken.code == 2
    assert taken.err == (
        "divert: address 127.0.0.20:5060 is already trunk pbx of tenant acme: one address, "
        "one trunk (calls from it could not be told apart)\n"
    )
    assert acme("trunk", "add", "pbx2", "--tenant", "beta", "--address", "127.0.0.21").code == 0
