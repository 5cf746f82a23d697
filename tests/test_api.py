"""The portal API (`divert api`) on SQLite and PostgreSQL: every resource,
every error, and who sees what.  Bad input must get the CLI's own one-line
message: several tests run the same input through both and compare."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, select

from divert.api.app import create_app
from divert.cli import main
from divert.portal import tenants
from divert.schema.tables import api_tokens

ACME_A, ACME_B, ACME_ALICE = "+390200000001", "+390200000002", "+390200000003"
BETA_X = "+390300000001"
EMERGENCY = ("--emergency", "+393331234567")


@dataclass
class Portal:
    client: TestClient
    cli: Callable[..., tuple[int, str, str]]
    operator: str
    acme: str
    beta: str

    def as_(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def get(self, path: str, token: str, **params: object) -> object:
        response = self.client.get(f"/api/v1{path}", headers=self.as_(token), params=params)
        assert response.status_code == 200, response.text
        return response.json()


def basic(login: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()}


@pytest.fixture
def api(portal_url: str, portal: Engine, capsys: pytest.CaptureFixture[str]) -> Iterator[Portal]:
    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["--portal", portal_url, *args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    for args in (
        ("tenant", "add", "acme", "--region", "IT", "--timezone", "Europe/Rome"),
        ("tenant", "add", "beta", "--region", "IT"),
        ("trunk", "add", "pbx", "--tenant", "acme", "--address", "127.0.0.20", *EMERGENCY),
        ("trunk", "add", "pbx-b", "--tenant", "beta", "--address", "127.0.0.21:5060"),
        ("subscriber", "add", "alice", "--tenant", "acme", "--password", "alice-secret"),
        ("number", "add", ACME_A, "--tenant", "acme", "--trunk", "pbx"),
        ("number", "add", ACME_B, "--tenant", "acme", "--trunk", "pbx"),
        ("number", "add", ACME_ALICE, "--tenant", "acme", "--subscriber", "alice"),
        ("number", "add", BETA_X, "--tenant", "beta", "--trunk", "pbx-b"),
        ("forward", "add", ACME_A, "--when", "busy", "--to", "+393351000001"),
        ("forward", "add", BETA_X, "--when", "always", "--to", "+393351000009"),
    ):
        assert cli(*args)[0] == 0, args

    def token(*args: str) -> str:
        code, out, _ = cli("token", "add", *args)
        assert code == 0
        return out.splitlines()[-1]

    with TestClient(create_app(portal)) as client:
        yield Portal(
            client, cli, token("--operator"), token("--tenant", "acme"), token("--tenant", "beta")
        )


# -- authentication -------------------------------------------------------------------


def test_no_wrong_or_revoked_credentials_get_401(api: Portal):
    assert api.client.get("/api/v1/forwards").status_code == 401
    for header in (
        "Bearer dvt_not-a-token",
        "Bearer " + api.acme[:-1],
        "Token abc",
        "Basic !!!",
        "Basic " + base64.b64encode(b"alice@acme:wrong-password").decode(),
        "Basic " + base64.b64encode(b"nobody@acme:alice-secret").decode(),
    ):
        response = api.client.get("/api/v1/forwards", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert list(response.json()) == ["error"] and "\n" not in response.json()["error"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    code, out, _ = api.cli("token", "list")
    assert code == 0 and "tenant acme" in out
    token_id = out.splitlines()[2].split()[0]  # the header, the operator's, acme's
    assert api.cli("token", "revoke", token_id)[0] == 0
    assert api.client.get("/api/v1/forwards", headers=api.as_(api.acme)).status_code == 401
    assert (
        api.cli("token", "revoke", token_id)[2] == f"divert: token {token_id} is already revoked\n"
    )


def test_tokens_are_kept_hashed_and_never_listed(api: Portal, portal: Engine):
    with portal.connect() as connection:
        kept = set(connection.scalars(select(api_tokens.c.token_hash)))
    assert kept and not {api.operator, api.acme, api.beta} & kept
    _, listing, _ = api.cli("token", "list")
    assert all(token not in listing for token in (api.operator, api.acme, api.beta))
    assert api.cli("token", "add")[0] == 2  # --tenant or --operator
    assert api.cli("token", "add", "--tenant", "nope")[2] == (
        "divert: unknown tenant 'nope'; see 'divert tenant list'\n"
    )


def test_the_openapi_schema_is_served(api: Portal):
    schema = api.client.get("/api/openapi.json").json()
    for path in (
        "/api/v1/forwards",
        "/api/v1/forwards/{forward_id}",
        "/api/v1/tenants",
        "/api/v1/tenants/{tenant}/trunks",
        "/api/v1/tenants/{tenant}/subscribers",
        "/api/v1/tenants/{tenant}/numbers",
        "/api/v1/tenants/{tenant}/schedules",
        "/api/v1/policy",
        "/api/v1/explain",
    ):
        assert path in schema["paths"], path


# -- forwards -------------------------------------------------------------------------


def test_a_tenant_sees_its_forwards_and_its_trunks_emergency_forward(api: Portal):
    rows = api.get("/forwards", api.acme)
    assert isinstance(rows, list)
    assert [(r["kind"], r["number"], r["trunk"], r["when"], r["to"]) for r in rows] == [
        ("forward", ACME_A, None, "busy", "+393351000001"),
        ("emergency", None, "pbx", "trunk-down", "+393331234567"),
    ]
    one = api.get("/forwards", api.acme, number="0200000001")  # national: the tenant's region
    assert [(r["kind"], r["number"], r["trunk"]) for r in one] == [  # type: ignore[union-attr,index]
        ("forward", ACME_A, None),
        ("emergency", None, "pbx"),
    ]
    alices = api.get("/forwards", api.acme, number=ACME_ALICE)
    assert alices == []  # no forward, and no trunk: no emergency forward either
    other = api.client.get("/api/v1/forwards", headers=api.as_(api.acme), params={"number": BETA_X})
    assert other.status_code == 404
    everything = api.get("/forwards", api.operator)
    assert isinstance(everything, list)
    assert {r["tenant"] for r in everything} == {"acme", "beta"}


def test_another_tenants_rows_answer_404_as_if_they_did_not_exist(api: Portal):
    (beta_forward,) = [r for r in api.get("/forwards", api.beta) if r["kind"] == "forward"]  # type: ignore[union-attr]
    path = f"/api/v1/forwards/{beta_forward['id']}"
    missing = "/api/v1/forwards/999999"
    for method, body in (("GET", None), ("PATCH", {"to": "+393351000002"}), ("DELETE", None)):
        stolen = api.client.request(method, path, headers=api.as_(api.acme), json=body)
        absent = api.client.request(method, missing, headers=api.as_(api.acme), json=body)
        assert stolen.status_code == absent.status_code == 404
    assert api.client.get("/api/v1/tenants/beta", headers=api.as_(api.acme)).status_code == 404
    assert api.client.get(
        "/api/v1/forwards", headers=api.as_(api.acme), params={"tenant": "beta"}
    ).json() == {"error": "unknown tenant 'beta'; see 'divert tenant list'"}
    stolen_number = api.client.post(
        "/api/v1/forwards",
        headers=api.as_(api.acme),
        json={"number": BETA_X, "when": "busy", "to": "+393351000002"},
    )
    assert stolen_number.status_code == 404
    assert api.get(f"/forwards/{beta_forward['id']}", api.beta)  # still there


def test_add_change_and_delete_a_forward(api: Portal):
    created = api.client.post(
        "/api/v1/forwards",
        headers=api.as_(api.acme),
        json={"number": ACME_B, "when": "no-answer", "to": "0233334444", "timeout": 15},
    )
    assert created.status_code == 201, created.text
    forward = created.json()
    assert (forward["number"], forward["when"], forward["to"], forward["timeout"]) == (
        ACME_B,
        "no-answer",
        "+390233334444",
        15,
    )
    _, listing, _ = api.cli("forward", "list", "--tenant", "acme")
    assert [line.split()[:3] for line in listing.splitlines()[1:]] == [
        ["1", "acme", ACME_A],
        [str(forward["id"]), "acme", ACME_B],
    ]
    changed = api.client.patch(
        f"/api/v1/forwards/{forward['id']}", headers=api.as_(api.acme), json={"to": "voicemail"}
    )
    assert changed.status_code == 422  # acme has no voicemail server
    changed = api.client.patch(
        f"/api/v1/forwards/{forward['id']}",
        headers=api.as_(api.acme),
        json={"to": "reject:486", "timeout": 20},
    )
    assert changed.json()["to"] == "reject:486" and changed.json()["timeout"] == 20
    deleted = api.client.delete(f"/api/v1/forwards/{forward['id']}", headers=api.as_(api.acme))
    assert deleted.status_code == 204
    assert (
        api.client.get(f"/api/v1/forwards/{forward['id']}", headers=api.as_(api.acme)).status_code
        == 404
    )


@pytest.mark.parametrize(
    ("body", "flags"),
    [
        ({"when": "busy", "to": "reject:99"}, ["--when", "busy", "--to", "reject:99"]),
        ({"when": "sometimes", "to": "+393351000001"}, ["--when", "sometimes"]),
        ({"when": "busy", "to": "+39899123456"}, ["--when", "busy", "--to", "+39899123456"]),
        (
            {"when": "busy", "to": "+393351000001", "timeout": 20},
            ["--when", "busy", "--timeout", "20"],
        ),
        ({"when": "always", "to": ACME_A}, ["--when", "always", "--to", ACME_A]),  # a loop
        ({"when": "busy", "to": "ext:299"}, ["--when", "busy", "--to", "ext:299"]),
    ],
)
def test_bad_forwards_get_the_clis_one_line_message(
    api: Portal, body: dict[str, object], flags: list[str]
):
    response = api.client.post(
        "/api/v1/forwards", headers=api.as_(api.acme), json={"number": ACME_A, **body}
    )
    assert response.status_code == 422
    message = response.json()["error"]
    assert "\n" not in message
    if flags[1] == "sometimes":  # argparse refuses it before the portal sees it
        assert message.startswith("--when must be one of always, not-present, busy")
        return
    arguments = ["forward", "add", ACME_A, *flags]
    if "--to" not in flags:
        arguments += ["--to", str(body["to"])]
    code, _, err = api.cli(*arguments)
    assert code == 2 and err == f"divert: {message}\n"


def test_a_body_of_the_wrong_shape_is_one_line_422(api: Portal):
    for body in (
        {"number": ACME_A, "when": "busy"},
        {"number": ACME_A, "when": "busy", "to": "+39", "timeout": "x"},
    ):
        response = api.client.post("/api/v1/forwards", headers=api.as_(api.acme), json=body)
        assert response.status_code == 422
        assert list(response.json()) == ["error"] and "\n" not in response.json()["error"]
    assert api.client.get("/api/v1/forwards/abc", headers=api.as_(api.acme)).status_code == 422


# -- a subscriber's own forwards ------------------------------------------------------


def test_a_subscriber_signs_in_with_its_sip_account_and_sees_only_its_own(api: Portal):
    alice = basic("alice@acme", "alice-secret")
    assert api.client.get("/api/v1/forwards", headers=alice).json() == []
    me = api.client.get("/api/v1/me", headers=alice).json()
    assert me["kind"] == "subscriber" and [o["number"] for o in me["owners"] if o["number"]] == [
        ACME_ALICE
    ]
    own = api.client.post(
        "/api/v1/forwards",
        headers=alice,
        json={"number": ACME_ALICE, "when": "not-registered", "to": "+393351000005"},
    )
    assert own.status_code == 201, own.text
    others = api.client.post(
        "/api/v1/forwards",
        headers=alice,
        json={"number": ACME_A, "when": "busy", "to": "+393351000005"},
    )
    assert others.status_code == 404
    (acme_forward,) = [r for r in api.get("/forwards", api.acme) if r["number"] == ACME_A]  # type: ignore[union-attr,index]
    assert (
        api.client.delete(f"/api/v1/forwards/{acme_forward['id']}", headers=alice).status_code
        == 404
    )
    assert [r["number"] for r in api.client.get("/api/v1/forwards", headers=alice).json()] == [
        ACME_ALICE
    ]
    assert api.client.get("/api/v1/tenants", headers=alice).status_code == 403
    assert (
        api.client.get("/api/v1/explain", headers=alice, params={"number": ACME_A}).status_code
        == 404
    )


# -- explain --------------------------------------------------------------------------


def test_explain_gives_the_chain_as_divert_explain_json(api: Portal):
    import json

    chain = api.get("/explain", api.acme, number=ACME_A, after=["busy"])
    code, out, _ = api.cli("explain", ACME_A, "--after", "busy", "--json")
    assert code == 0
    expected = json.loads(out)
    assert isinstance(chain, dict)
    assert chain["steps"] == expected["steps"] and len(chain["steps"]) == 2
    assert chain["steps"][1]["relay"]["target"] == "+393351000001"
    assert chain["trunks"] == {"1": "pbx"}  # the trunks the chain rings, named
    assert chain["default_ring_timeout"] == 120
    bad = api.client.get(
        "/api/v1/explain", headers=api.as_(api.acme), params={"number": ACME_A, "after": "later"}
    )
    assert bad.status_code == 422
    assert api.cli("explain", ACME_A, "--after", "later")[2] == f"divert: {bad.json()['error']}\n"
    assert (
        api.client.get(
            "/api/v1/explain", headers=api.as_(api.acme), params={"number": BETA_X}
        ).status_code
        == 404
    )


# -- the directory --------------------------------------------------------------------


def test_tenants(api: Portal):
    assert [t["name"] for t in api.get("/tenants", api.acme)] == ["acme"]  # type: ignore[union-attr,index]
    assert [t["name"] for t in api.get("/tenants", api.operator)] == ["acme", "beta"]  # type: ignore[union-attr,index]
    new = {"name": "gamma", "region": "DE"}
    assert (
        api.client.post("/api/v1/tenants", headers=api.as_(api.acme), json=new).status_code == 403
    )
    created = api.client.post("/api/v1/tenants", headers=api.as_(api.operator), json=new)
    assert created.status_code == 201 and created.json()["region"] == "DE"
    again = api.client.post("/api/v1/tenants", headers=api.as_(api.operator), json=new)
    assert again.status_code == 422 and again.json() == {"error": "tenant 'gamma' already exists"}
    move = {"timezone": "Europe/Paris"}
    mine = api.client.patch("/api/v1/tenants/acme", headers=api.as_(api.acme), json=move)
    assert mine.status_code == 403  # its voicemail server, its operator: the operator's
    changed = api.client.patch("/api/v1/tenants/acme", headers=api.as_(api.operator), json=move)
    assert changed.json()["timezone"] == "Europe/Paris"
    nothing = api.client.patch("/api/v1/tenants/acme", headers=api.as_(api.operator), json={})
    assert nothing.status_code == 422 and nothing.json()["error"].startswith("nothing to change")
    busy = api.client.delete("/api/v1/tenants/acme", headers=api.as_(api.operator))
    assert busy.status_code == 422 and "delete them first" in busy.json()["error"]
    assert (
        api.client.delete("/api/v1/tenants/gamma", headers=api.as_(api.operator)).status_code == 204
    )
    assert (
        api.client.delete("/api/v1/tenants/gamma", headers=api.as_(api.operator)).status_code == 404
    )


def test_trunks_and_numbers_are_the_operators_to_change(api: Portal):
    trunks = api.get("/tenants/acme/trunks", api.acme)
    assert trunks == [
        {
            "name": "pbx",
            "addresses": ["127.0.0.20:5060"],
            "emergency": "+393331234567",
            "diversion_style": "diversion",
        }
    ]
    trunk = {"name": "pbx2", "addresses": ["127.0.0.22"]}
    assert (
        api.client.post(
            "/api/v1/tenants/acme/trunks", headers=api.as_(api.acme), json=trunk
        ).status_code
        == 403
    )
    made = api.client.post("/api/v1/tenants/acme/trunks", headers=api.as_(api.operator), json=trunk)
    assert made.status_code == 201 and made.json()["addresses"] == ["127.0.0.22:5060"]
    taken = api.client.post(
        "/api/v1/tenants/beta/trunks",
        headers=api.as_(api.operator),
        json={"name": "x", "addresses": ["127.0.0.22"]},
    )
    assert taken.status_code == 422 and "already trunk pbx2" in taken.json()["error"]
    number = {"number": "0200000099", "trunk": "pbx2"}
    assert (
        api.client.post(
            "/api/v1/tenants/acme/numbers", headers=api.as_(api.acme), json=number
        ).status_code
        == 403
    )
    added = api.client.post(
        "/api/v1/tenants/acme/numbers", headers=api.as_(api.operator), json=number
    )
    assert added.status_code == 201 and added.json()["number"] == "+390200000099"
    listed = api.get("/tenants/acme/numbers", api.acme)
    assert {"number": "+390200000099", "trunk": "pbx2", "subscriber": None} in listed  # type: ignore[operator]
    both = api.client.post(
        "/api/v1/tenants/acme/numbers", headers=api.as_(api.operator), json={"number": "0200000098"}
    )
    assert both.json() == {
        "error": "a number belongs to exactly one owner: give --trunk or --subscriber"
    }
    elsewhere = api.client.delete(
        f"/api/v1/tenants/acme/numbers/{BETA_X}", headers=api.as_(api.operator)
    )
    assert elsewhere.status_code == 404
    gone = api.client.delete(
        "/api/v1/tenants/acme/numbers/+390200000099", headers=api.as_(api.operator)
    )
    assert gone.status_code == 204
    assert (
        api.client.delete(
            "/api/v1/tenants/acme/trunks/pbx2", headers=api.as_(api.operator)
        ).status_code
        == 204
    )
    assert (
        api.client.get("/api/v1/tenants/beta/trunks", headers=api.as_(api.acme)).status_code == 404
    )


def test_subscribers(api: Portal):
    new = {"username": "bob", "password": "bob-secret", "extension": "202", "display_name": "Bob"}
    made = api.client.post("/api/v1/tenants/acme/subscribers", headers=api.as_(api.acme), json=new)
    assert made.status_code == 201 and made.json()["extension"] == "202"
    short = api.client.post(
        "/api/v1/tenants/acme/subscribers",
        headers=api.as_(api.acme),
        json={"username": "carol", "password": "short"},
    )
    assert short.json() == {"error": "the password must have at least 8 characters"}
    away = api.client.patch(
        "/api/v1/tenants/acme/subscribers/bob", headers=api.as_(api.acme), json={"away": True}
    )
    assert away.json()["away"] is True
    nothing = api.client.patch(
        "/api/v1/tenants/acme/subscribers/bob", headers=api.as_(api.acme), json={}
    )
    assert nothing.json() == {"error": "nothing to change: give --caller-id, --away or --present"}
    names = [s["username"] for s in api.get("/tenants/acme/subscribers", api.acme)]  # type: ignore[union-attr,index]
    assert names == ["alice", "bob"]
    assert (
        api.client.delete(
            "/api/v1/tenants/acme/subscribers/bob", headers=api.as_(api.acme)
        ).status_code
        == 204
    )
    unknown = api.client.patch(
        "/api/v1/tenants/acme/subscribers/bob", headers=api.as_(api.acme), json={"away": False}
    )
    assert unknown.status_code == 404
    assert (
        api.client.get("/api/v1/tenants/acme/subscribers", headers=api.as_(api.beta)).status_code
        == 404
    )


def test_schedules(api: Portal):
    entry = {"mode": "night", "days": "mon-fri", "starts": "19:00", "ends": "07:00"}
    made = api.client.post("/api/v1/tenants/acme/schedules", headers=api.as_(api.acme), json=entry)
    assert made.status_code == 201, made.text
    schedule_id = made.json()["id"]
    stored = {**entry, "days": "mon,tue,wed,thu,fri"}
    assert api.get("/tenants/acme/schedules", api.acme) == [{"id": schedule_id, **stored}]
    bad = api.client.post(
        "/api/v1/tenants/acme/schedules",
        headers=api.as_(api.acme),
        json={**entry, "starts": "25:00"},
    )
    _, _, err = api.cli(
        "schedule",
        "add",
        "--tenant",
        "acme",
        "--mode",
        "night",
        "--days",
        "mon-fri",
        "--from",
        "25:00",
        "--to",
        "07:00",
    )
    assert bad.status_code == 422 and err == f"divert: {bad.json()['error']}\n"
    assert (
        api.client.delete(f"/api/v1/schedules/{schedule_id}", headers=api.as_(api.beta)).status_code
        == 404
    )
    assert (
        api.client.delete(f"/api/v1/schedules/{schedule_id}", headers=api.as_(api.acme)).status_code
        == 204
    )


def test_the_destination_policy(api: Portal):
    assert api.get("/policy", api.acme) == {"allow_countries": [], "deny_prefixes": []}
    change = {"allow_countries": "39,41"}
    assert (
        api.client.patch("/api/v1/policy", headers=api.as_(api.acme), json=change).status_code
        == 403
    )
    changed = api.client.patch("/api/v1/policy", headers=api.as_(api.operator), json=change)
    assert changed.json() == {"allow_countries": [39, 41], "deny_prefixes": []}
    refused = api.client.post(
        "/api/v1/forwards",
        headers=api.as_(api.acme),
        json={"number": ACME_B, "when": "busy", "to": "+4420794600000"},
    )
    assert refused.status_code == 422
    bad = api.client.patch(
        "/api/v1/policy", headers=api.as_(api.operator), json={"deny_prefixes": "0899"}
    )
    assert bad.json()["error"] == "denied prefixes '0899' must be E.164 prefixes like +39899,+44909"


# -- the command ----------------------------------------------------------------------


def test_divert_api_refuses_a_bad_or_taken_address_in_one_line(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
):
    import socket

    assert main(["--portal", sqlite_url, "api", "--listen", "localhost"]) == 2
    assert capsys.readouterr().err == (
        "divert: --listen 'localhost' must be IPv4:PORT, e.g. 127.0.0.1:5060\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--portal", sqlite_url, "api", "--listen", f"127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"divert: cannot listen on 127.0.0.1:{port}: ") and err.count("\n") == 1


def test_divert_api_needs_a_migrated_portal(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from divert.db import open_portal
    from divert.schema.migrate import upgrade

    portal = f"sqlite:///{tmp_path / 'old.db'}"
    engine = open_portal(portal, create=True)
    upgrade(engine, "0008")  # a portal of the divert before the API
    engine.dispose()
    assert main(["--portal", portal, "api", "--listen", "127.0.0.1:8199"]) == 1
    assert "is at schema 0008, this divert needs 0009; run 'divert db upgrade'" in (
        capsys.readouterr().err
    )


def test_explain_keeps_other_tenants_forwards_hidden(api: Portal):
    """A redirect (or a forward) to another tenant's number: to the tenant
    it is a number of the outside world; the operator sees beta's forward."""
    redirected = {"number": ACME_A, "after": [f"redirect:{BETA_X}"]}
    seen = api.get("/explain", api.acme, **redirected)
    everything = api.get("/explain", api.operator, **redirected)
    assert isinstance(seen, dict) and isinstance(everything, dict)
    hidden, known = seen["steps"][-1]["relay"], everything["steps"][-1]["relay"]
    assert (hidden["target"], hidden["endpoint"]["kind"]) == (BETA_X, "external")
    assert known["target"] == "+393351000009"  # beta's always-forward
    assert "pbx-b" not in seen["trunks"].values()


def test_odd_requests_get_one_line_json_errors(api: Portal):
    for method, path, body, status in (
        ("GET", "/api/v1/forwards/99999999999999999999999", None, 422),
        ("DELETE", "/api/v1/schedules/0", None, 422),
        ("GET", "/api/v1/nothing-here", None, 404),
        ("PUT", "/api/v1/forwards", None, 405),
        ("POST", "/api/v1/forwards", "{not json", 422),
    ):
        response = api.client.request(
            method,
            path,
            headers={**api.as_(api.acme), "Content-Type": "application/json"},
            content=body,
        )
        assert response.status_code == status, (path, response.text)
        assert list(response.json()) == ["error"] and "\n" not in response.json()["error"]


def test_a_number_of_another_tenant_is_not_deleted_by_naming_the_wrong_tenant(api: Portal):
    code, _, err = api.cli("number", "delete", BETA_X, "--tenant", "acme")
    assert code == 2 and err.startswith(f"divert: unknown number {BETA_X} in tenant acme")
    assert BETA_X in api.cli("number", "list")[1]


def test_an_expiry_past_the_last_representable_time_is_refused_in_one_line():
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from divert.errors import DivertError
    from divert.portal.forwards import parse_until

    west = SimpleNamespace(timezone="America/New_York")
    with pytest.raises(DivertError, match="is too far ahead"):
        parse_until("9999-12-31T23:59", west, datetime.now(UTC))  # type: ignore[arg-type]


@pytest.mark.postgres
def test_a_portal_outage_is_a_503_and_the_api_recovers(pg_url: str):
    from divert.db import open_portal
    from tests.conftest import portal_reachable

    engine = open_portal(pg_url)
    with TestClient(create_app(engine)) as client:
        portal_reachable(pg_url, False)
        try:
            down = client.get("/api/v1/forwards", headers={"Authorization": "Bearer dvt_x"})
        finally:
            portal_reachable(pg_url, True)
        assert down.status_code == 503
        assert down.json()["error"].startswith("cannot use the portal: ")
        again = client.get("/api/v1/forwards", headers={"Authorization": "Bearer dvt_x"})
        assert again.status_code == 401  # the portal answers again: the token is checked
    engine.dispose()


def test_a_loop_through_another_tenant_is_refused_without_naming_its_numbers(api: Portal):
    assert api.cli("forward", "add", BETA_X, "--when", "always", "--to", ACME_B)[0] == 0
    closing = {"number": ACME_B, "when": "always", "to": BETA_X}
    refused = api.client.post("/api/v1/forwards", headers=api.as_(api.acme), json=closing)
    assert refused.status_code == 422
    assert refused.json()["error"] == (
        "refused: this forward would close a loop for external callers: "
        f"{ACME_B} -> another tenant's number -> {ACME_B}"
    )
    everything = api.client.post("/api/v1/forwards", headers=api.as_(api.operator), json=closing)
    assert BETA_X in everything.json()["error"]  # the operator sees the whole loop


def test_a_row_created_by_someone_else_meanwhile_is_a_one_line_409(api: Portal, portal: Engine):
    """Two writers race: the portal's checks pass, then another session
    creates the same tenant before our INSERT.  The database's own constraint
    refuses ours and the API says so in one line (409), not a 500."""
    raced_once: list[bool] = []

    def meanwhile(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO TENANTS") and not raced_once:
            raced_once.append(True)
            with portal.begin() as other:
                tenants.add(other, "racer", "IT")

    event.listen(portal, "before_cursor_execute", meanwhile)
    try:
        raced = api.client.post(
            "/api/v1/tenants", headers=api.as_(api.operator), json={"name": "racer", "region": "DE"}
        )
    finally:
        event.remove(portal, "before_cursor_execute", meanwhile)
    assert raced.status_code == 409, raced.text
    assert raced.json()["error"].startswith("refused by the portal: ")
    assert "\n" not in raced.json()["error"]
    # the other writer's tenant stands, ours is not half made
    listed = api.get("/tenants", api.operator)
    assert [(t["name"], t["region"]) for t in listed] == [  # type: ignore[union-attr,index]
        ("acme", "IT"),
        ("beta", "IT"),
        ("racer", "IT"),
    ]
