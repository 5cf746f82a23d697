"""The KEMI adapter against a KSR stub: faults become one log line and a reply.

Forwarding itself is tested end to end through a real Kamailio
(tests/e2e); these tests cover what is hard to provoke there.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from divert.kemi.core.model import Condition, Endpoint, EndpointKind
from divert.kemi.signing import NodeKeyError, ensure_key, load_key
from divert.kemi.store.format import encode_table
from divert.kemi.store.writer import StoreWriter
from tests import kemi_api
from tests.builders import rule, table

KEMI_API = kemi_api.known()


def _exists(name: str) -> None:
    """Only what Kamailio's KSR has: a misspelled call fails here."""
    if name not in KEMI_API:
        raise AttributeError(f"KSR has no {name} (tests/kemi_api.txt)")


class Stub(types.ModuleType):
    """KSR as far as the adapter uses it: answers set per test, calls logged,
    and only the functions the real KSR has (`tests.kemi_api`)."""

    def __init__(self, pv: dict[str, Any], answers: dict[str, Any]) -> None:
        super().__init__("KSR")
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.pv_values = pv
        self.answers = answers
        for group in (
            "tm",
            "sl",
            "maxfwd",
            "sanity",
            "siputils",
            "rr",
            "registrar",
            "dispatcher",
            "hdr",
            "pv",
            "pike",
            "nathelper",
            "auth",
            "uac",
            "tmx",
            "async",
            "statistics",
        ):
            setattr(self, group, _Group(self, group))

    def err(self, text: str) -> None:
        self.calls.append(("err", (text,)))

    def seturi(self, uri: str) -> None:
        self.calls.append(("seturi", (uri,)))

    def __getattr__(self, function: str) -> Any:
        """KSR's own functions (force_rport, is_myself, notice, ...)."""
        if function.startswith("__"):
            raise AttributeError(function)
        _exists(function)

        def call(*args: Any) -> Any:
            self.calls.append((function, args))
            return self.answers.get(function, 1)

        return call

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for called, args in self.calls if called == name]


class _Group:
    def __init__(self, stub: Stub, name: str) -> None:
        self._stub, self._name = stub, name

    def __getattr__(self, function: str) -> Any:
        qualified = f"{self._name}.{function}"
        _exists(qualified)

        def call(*args: Any) -> Any:
            self._stub.calls.append((qualified, args))
            if qualified == "pv.get":
                return self._stub.pv_values.get(args[0])
            if qualified in ("pv.sets", "pv.seti"):
                self._stub.pv_values[args[0]] = args[1]
                return 1
            answer = self._stub.answers.get(qualified, 1)
            if isinstance(answer, BaseException):
                raise answer
            if callable(answer):  # what Kamailio would do meanwhile (resume a route)
                return answer(*args)
            return answer

        return call


INVITE = {
    "$ml": 600,
    "$rm": "INVITE",
    "$rU": "390200000001",
    "$si": "127.0.0.11",
    "$sp": 5060,
    "$fU": "caller",
    "$hdrc(Diversion)": 0,
    "$ou": "sip:+390200000001@node",
}


def forwarding_always(state_dir: Path) -> None:
    """A store where +390200000001 forwards unconditionally to a mobile."""
    writer = StoreWriter(state_dir)
    with writer.transaction():
        writer.put_table(
            "+390200000001",
            "acme",
            encode_table(table("+390200000001", rule(Condition.ALWAYS, "+393351234567"))),
        )
    writer.close()


@pytest.fixture
def adapter() -> Iterator[Any]:
    logger = logging.getLogger("divert")
    handlers, level = list(logger.handlers), logger.level
    yield None
    sys.modules.pop("KSR", None)
    sys.modules.pop("divert.kemi.adapter", None)
    logger.handlers[:], logger.level = handlers, level  # an async worker's log setup


def router(
    state_dir: Path,
    pv: dict[str, Any],
    answers: dict[str, Any],
    feature_codes: Any = None,
) -> tuple[Any, Stub]:
    stub = Stub(
        dict(pv),
        {"siputils.has_totag": -1, "tm.t_check_trans": -1, "hdr.is_present": -1, **answers},
    )
    sys.modules["KSR"] = stub
    state_dir.mkdir(parents=True, exist_ok=True)
    ensure_key(state_dir)
    module = importlib.import_module("divert.kemi.adapter")
    module = importlib.reload(module)
    config = module.AdapterConfig(state_dir=str(state_dir), domain="node.test")
    return module.Router(config, feature_codes), stub


def test_a_store_that_cannot_be_opened_is_one_line_and_503(tmp_path: Path, adapter: None):
    route, stub = router(tmp_path / "no-store", INVITE, {})
    assert route.ksr_request_route(None, "2") == 1
    assert stub.called("sl.send_reply") == [(503, "Service Unavailable")]
    (logged,) = stub.called("err")
    assert "store unavailable" in logged[0] and logged[0][-1] == "\n"


def test_an_unexpected_fault_is_one_line_and_500(tmp_path: Path, adapter: None):
    writer = StoreWriter(tmp_path)
    with writer.transaction():
        writer.put_table("+390200000001", "acme", encode_table(table("+390200000001")))
    writer.close()
    route, stub = router(tmp_path, INVITE, {"tm.t_newtran": RuntimeError("boom")})
    assert route.ksr_request_route(None, "2") == 1
    assert stub.called("sl.send_reply") == [(500, "Server Internal Error")]
    (line,) = stub.called("err")
    assert "RuntimeError: boom" in line[0]


def test_unknown_number_is_404_after_the_transaction_is_made(tmp_path: Path, adapter: None):
    StoreWriter(tmp_path).close()
    route, stub = router(tmp_path, INVITE, {})
    route.ksr_request_route(None, "2")
    assert stub.called("tm.t_newtran") == [()]
    assert stub.called("sl.send_reply") == [(404, "Not Found")]


def test_a_relay_without_diversions_arms_only_the_failure_route(tmp_path: Path, adapter: None):
    writer = StoreWriter(tmp_path)
    trunk = Endpoint(EndpointKind.TRUNK, "7")
    with writer.transaction():
        writer.put_table(
            "+390200000001", "acme", encode_table(table("+390200000001", endpoint=trunk))
        )
    writer.close()
    route, stub = router(tmp_path, INVITE, {})
    route.ksr_request_route(None, "2")
    assert stub.called("tm.t_on_failure") == [("ksr_failure_forward",)]
    assert stub.called("tm.t_on_branch") == []
    assert stub.called("dispatcher.ds_select_domain") == [(1007, 4)]
    assert stub.called("seturi") == [("sip:+390200000001@node.test",)]
    assert stub.pv_values["$avp(divert_call)"].startswith("trunk\n0\n\nv1|0|+390200000001|")


def test_a_forward_arms_the_branch_route_with_its_headers(tmp_path: Path, adapter: None):
    forwarding_always(tmp_path)
    route, stub = router(tmp_path, INVITE, {})
    route.ksr_request_route(None, "2")
    assert stub.called("tm.t_on_branch") == [("ksr_branch_forward",)]
    assert stub.called("tm.t_reply") == [(181, "Call Is Being Forwarded")]
    assert "Diversion: " in stub.pv_values["$avp(divert_headers)"]
    kind, _, _ = stub.pv_values["$avp(divert_call)"].split("\n", 2)
    assert kind == "external"


def test_a_failure_route_with_a_corrupt_state_logs_once_and_leaves_the_reply(
    tmp_path: Path, adapter: None
):
    StoreWriter(tmp_path).close()
    pv = {"$avp(divert_call)": "trunk\n0\n\ngarbage\nbob"}
    route, stub = router(tmp_path, pv, {"tm.t_is_canceled": -1})
    assert route.ksr_failure_forward(None) == 1
    assert len(stub.called("err")) == 1
    assert stub.called("tm.t_relay") == [] and stub.called("sl.send_reply") == []


def test_a_cancelled_call_is_not_forwarded(tmp_path: Path, adapter: None):
    StoreWriter(tmp_path).close()
    route, stub = router(tmp_path, {}, {"tm.t_is_canceled": 1})
    route.ksr_failure_forward(None)
    assert stub.called("tm.t_relay") == [] and stub.called("sl.send_reply") == []


def test_an_unreadable_store_is_logged_once_per_worker_until_it_reads_again(
    tmp_path: Path, adapter: None
):
    route, stub = router(tmp_path / "no-store", INVITE, {})
    for _ in range(3):
        route.ksr_request_route(None, "2")
    assert stub.called("sl.send_reply") == [(503, "Service Unavailable")] * 3
    assert len(stub.called("err")) == 1


@dataclass
class FakeAnswer:
    code: int
    reason: str


@dataclass
class FakePending:
    answer: FakeAnswer
    done: list[str]

    def commit(self) -> FakeAnswer:
        self.done.append("commit")
        return self.answer

    def rollback(self) -> None:
        self.done.append("rollback")


class FakeCodes:
    def __init__(self, answer: FakeAnswer | Exception) -> None:
        self.answer = answer
        self.done: list[str] = []
        self.begun: list[tuple[str, str]] = []

    def begin(self, aor: str, dialled: str) -> FakePending:
        self.begun.append((aor, dialled))
        if isinstance(self.answer, Exception):
            raise self.answer
        return FakePending(self.answer, self.done)


def feature_router(tmp_path: Path, codes: FakeCodes) -> tuple[Any, Stub]:
    """A router in an async worker, given task data for a code."""
    StoreWriter(tmp_path).close()
    answers = {"async.get_data": "12 34 alice@acme *72+393351000077"}
    return router(tmp_path, {}, answers, lambda: codes)


def feature_route(route: Any, stub: Stub, resumed: bool) -> None:
    """kamailio.cfg's ``route[ksr_feature_code]``; `resumed`: whether
    Kamailio resumes the transaction (not one cancelled or timed out)."""
    if route.ksr_feature_code(None) > 0:
        assert (stub.pv_values["$var(feature_index)"], stub.pv_values["$var(feature_label)"]) == (
            12,
            34,
        )
        if resumed:
            route.ksr_feature_reply(None)
        route.ksr_feature_done(None)


def test_a_code_in_an_async_worker_is_committed_and_answered(tmp_path: Path, adapter: None):
    codes = FakeCodes(FakeAnswer(480, "Forwarding Activated (always) to +39 \u00e8"))
    route, stub = feature_router(tmp_path, codes)
    feature_route(route, stub, resumed=True)
    assert codes.begun == [("alice@acme", "*72+393351000077")]
    assert codes.done == ["commit"]
    assert stub.called("tm.t_reply") == [(480, "Forwarding Activated (always) to +39 ")]


def test_a_code_not_resumed_is_rolled_back(tmp_path: Path, adapter: None):
    codes = FakeCodes(FakeAnswer(480, "Forwarding Activated"))
    route, stub = feature_router(tmp_path, codes)
    feature_route(route, stub, resumed=False)
    assert codes.done == ["rollback"]
    assert stub.called("tm.t_reply") == []
    (line,) = stub.called("info")
    assert "gave up on *72+393351000077" in line[0]


def test_a_code_whose_work_fails_is_answered_500(tmp_path: Path, adapter: None):
    codes = FakeCodes(RuntimeError("disk"))
    route, stub = feature_router(tmp_path, codes)
    feature_route(route, stub, resumed=True)
    assert stub.called("tm.t_reply") == [(500, "Server Internal Error")]
    (line,) = stub.called("err")
    assert "RuntimeError: disk" in line[0]


def test_without_feature_codes_a_code_is_404(tmp_path: Path, adapter: None):
    route, stub = router(tmp_path, {}, {})
    route._feature_code(None, "*73")
    assert stub.called("sl.sl_send_reply") == [(404, "No Feature Codes Here")]


def test_a_503_for_want_of_a_carrier_says_why_once_a_minute(tmp_path: Path, adapter: None):
    forwarding_always(tmp_path)
    route, stub = router(tmp_path, INVITE, {"dispatcher.ds_select_domain": -1})
    route.ksr_request_route(None, "2")
    route.ksr_request_route(None, "2")
    assert stub.called("sl.send_reply") == [(503, "Service Unavailable")] * 2
    (line,) = stub.called("warn")
    assert "calls answered 503: no carrier is up" in line[0]


def test_kamailio_without_the_node_key_in_its_environment_does_not_start(
    tmp_path: Path, adapter: None, monkeypatch: pytest.MonkeyPatch
):
    """kamailio.cfg signs dialogs with DIVERT_NODE_KEY: without it (Kamailio
    started by hand, not by `divert run`) every signature would be a digest
    of public values, so the adapter, loaded at Kamailio's start, refuses."""
    route, _ = router(tmp_path, {}, {})
    Router = type(route)
    monkeypatch.setenv("DIVERT_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("DIVERT_NODE_KEY", raising=False)
    with pytest.raises(NodeKeyError, match="DIVERT_NODE_KEY in Kamailio's environment"):
        Router.from_environment()
    monkeypatch.setenv("DIVERT_NODE_KEY", "00" * 32)
    with pytest.raises(NodeKeyError, match="not the node key"):
        Router.from_environment()
    monkeypatch.setenv("DIVERT_NODE_KEY", load_key(tmp_path).hex())
    assert Router.from_environment().config.state_dir == str(tmp_path)
