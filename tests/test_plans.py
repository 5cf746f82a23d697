"""Native plans (issue 16): the core's steps compiled for kamailio.cfg, and
the plan table kept equal to the store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from divert.kemi.core.decide import decide
from divert.kemi.core.model import (
    Call,
    CallState,
    Endpoint,
    EndpointKind,
    ForwardTable,
    Relay,
)
from divert.kemi.core.state_codec import decode_leg
from divert.kemi.plan_sync import FILLING, PlanSync
from divert.kemi.plans import Compiled, PlanConfig, Source, compile_plan
from divert.kemi.store.format import (
    NS_TABLE,
    TenantRecord,
    TrunkRecord,
    encode_table,
)
from divert.kemi.store.writer import StoreWriter
from divert.sync.gate import KamailioGate
from tests.builders import rule, table

A, B, MOBILE, OTHER = "+390200000001", "+390200000002", "+393351000001", "+393351000002"
CONFIG = PlanConfig("divert.invalid", 5, "diversion")
TRUNK = Endpoint(EndpointKind.TRUNK, "7")


def plain(key: str, *rules: object) -> ForwardTable:
    return table(key, *rules, endpoint=TRUNK)  # type: ignore[arg-type]


def source(
    *tables: ForwardTable, tenant: TenantRecord | None = None, style: str = "diversion"
) -> Source:
    known = {t.key: t for t in tables}
    return Source(
        known.get,
        lambda _name: tenant,
        lambda trunk_id: TrunkRecord((trunk_id, "tenant", "pbx", style)),
    )


def fields(line: str) -> list[str]:
    return line.split("~")


def test_an_unconditional_forward_is_one_native_step():
    compiled = compile_plan(A, source(plain(A, rule("always", MOBILE))), CONFIG)
    assert list(compiled.steps) == [A]  # its failure steps are replies, in the same line
    kind, dispatcher_set, alg, uri, ring, stat, emergency, headers, leg, *failures = fields(
        compiled.steps[A]
    )
    # busy, no answer, and every carrier down (kamailio.cfg logs the 503)
    assert failures == ["486", "Busy Here", "480", "No Answer", "503", "Service Unavailable"]
    assert (kind, dispatcher_set, alg, uri, ring) == (
        "E",
        "1",
        "8",
        f"sip:{MOBILE}@divert.invalid",
        "120000",
    )
    assert (stat, emergency) == ("divert:forwards_always", "0")
    assert headers == (
        f"Diversion: <sip:{A}@divert.invalid>;reason=unconditional;counter=1;privacy=off\r\n"
    )
    # the failure route reads the leg back: the core's own state
    kind_back, call, state = decode_leg(leg + "+441234", 0.0)
    relay = decide(
        Call("", False, 0.0), CallState.begin(A), None, {A: plain(A, rule("always", MOBILE))}.get
    )
    assert isinstance(relay, Relay)
    assert (kind_back, call.caller, call.mode, state) == (
        EndpointKind.EXTERNAL,
        "+441234",
        None,
        relay.state,
    )
    assert compiled.dependencies == {NS_TABLE + MOBILE}


def test_ringing_a_trunk_carries_its_busy_and_no_answer_steps():
    own = plain(A, rule("busy", MOBILE), rule("no-answer", OTHER, timeout=20))
    compiled = compile_plan(A, source(own), CONFIG)
    arrival = fields(compiled.steps[A])
    assert arrival[:5] == ["T", "1007", "4", f"sip:{A}@divert.invalid", "20000"]
    assert arrival[7] == ""  # the called number's own branch announces nothing
    assert arrival[9:] == ["+", "", "+", "", "503", "Service Unavailable"]  # relays: own entries
    busy = fields(compiled.steps[A + ">b"])
    assert busy[3] == f"sip:{MOBILE}@divert.invalid" and "reason=user-busy" in busy[7]
    no_answer = fields(compiled.steps[A + ">n"])
    assert no_answer[3] == f"sip:{OTHER}@divert.invalid" and "reason=no-answer" in no_answer[7]


def test_a_trunk_down_takes_the_emergency_forward_from_its_own_entry():
    emergency = rule("trunk-down", MOBILE, origin="trunk pbx emergency")
    compiled = compile_plan(A, source(plain(A, emergency)), CONFIG)
    assert fields(compiled.steps[A])[13:] == ["+", ""]
    down = fields(compiled.steps[A + ">d"])
    assert down[:4] == ["E", "1", "8", f"sip:{MOBILE}@divert.invalid"]
    assert (down[5], down[6]) == ("divert:forwards_trunk_down", "1")  # counted as emergency
    assert "reason=out-of-service" in down[7]


def test_a_503_is_a_plan_step_only_where_a_target_is_down():
    """Elsewhere the adapter says why calls end 503: Python's."""
    busy_503 = compile_plan(A, source(plain(A, rule("busy", code=503))), CONFIG)
    assert fields(busy_503.steps[A])[9:11] == ["", ""]
    assert A not in compile_plan(A, source(plain(A, rule("always", code=503))), CONFIG).steps


def test_a_busy_target_without_a_rule_ends_in_the_cores_reply():
    compiled = compile_plan(A, source(plain(A)), CONFIG)
    assert list(compiled.steps) == [A]
    assert fields(compiled.steps[A])[9:] == [
        "486",
        "Busy Here",
        "480",
        "No Answer",
        "503",
        "Service Unavailable",
    ]


def test_a_reject_rule_is_a_reply_step():
    compiled = compile_plan(A, source(plain(A, rule("always", code=603))), CONFIG)
    assert compiled.steps == {A: "R~603~Decline"}


@pytest.mark.parametrize(
    "why",
    ["modes", "expiry", "schedule", "override", "history-info", "subscriber", "unknown"],
)
def test_what_depends_on_more_than_the_store_has_no_plan(why: str):
    own = plain(A, rule("always", B))
    target = plain(B)
    tenant = None
    config = CONFIG
    if why == "modes":
        target = plain(B, rule("always", MOBILE, modes=("night",)))
    elif why == "expiry":
        target = plain(B, rule("always", MOBILE, expires_at=2e9))
    elif why == "schedule":
        from divert.kemi.core.schedule import ScheduleEntry

        tenant = TenantRecord("tenant", "UTC", (ScheduleEntry("night", frozenset({0}), 0, 60),), "")
    elif why == "override":
        tenant = TenantRecord("tenant", "UTC", (), "", override="night")
    elif why == "history-info":
        own = plain(A, rule("always", MOBILE))
        config = PlanConfig("divert.invalid", 5, "history-info")
    elif why == "subscriber":
        target = table(B, endpoint=Endpoint(EndpointKind.SUBSCRIBER, "bob@acme"))
    elif why == "unknown":
        own = plain(B)  # A has no table at all
    compiled = compile_plan(A, source(own, target, tenant=tenant), config)
    assert A not in compiled.steps


def test_a_trunk_that_wants_history_info_leaves_that_step_to_python():
    own = plain(A, rule("busy", B))
    target = plain(B)
    compiled = compile_plan(A, source(own, target, style="history-info"), CONFIG)
    assert list(compiled.steps) == [A]
    failures = fields(compiled.steps[A])[9:]
    assert failures == ["", "", "480", "No Answer", "503", "Service Unavailable"]  # busy: Python's
    assert f"k|{TRUNK.ref}" in compiled.dependencies


# -- the plan table kept equal to the store ------------------------------------------


class Sink:
    def __init__(self, room: int = 1_000_000) -> None:
        self.table: dict[str, str] = {}
        self.marks: list[str] = []
        self.calls: list[str] = []
        self.room = room  # entries it takes

    def put(self, key: str, line: str) -> bool:
        self.calls.append(f"put {key}")
        if len(self.table) >= self.room:
            return False
        self.table[key] = line
        return True

    def drop(self, key: str) -> None:
        self.calls.append(f"drop {key}")
        self.table.pop(key, None)

    def reset(self) -> None:
        self.calls.append("reset")
        self.table.clear()

    def mark(self, generation: str) -> None:
        self.calls.append(f"mark {generation}")
        self.marks.append(generation)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StoreWriter]:
    writer = StoreWriter(tmp_path / "state")
    yield writer
    writer.close()


def put(writer: StoreWriter, *tables: ForwardTable) -> None:
    with writer.transaction():
        for item in tables:
            writer.put_table(item.key, "tenant", encode_table(item))


def test_the_table_follows_the_store_and_names_what_it_holds(store: StoreWriter, tmp_path: Path):
    put(store, plain(A, rule("always", B)), plain(B, rule("busy", MOBILE)))
    sink = Sink()
    plans = PlanSync(store.dir, tmp_path, CONFIG, sink)
    assert plans.tick()
    assert sink.calls[:2] == [f"mark {FILLING}", "reset"]
    first = sink.marks[-1]
    assert sink.table[A].split("~")[3] == f"sip:{B}@divert.invalid"
    # B changes: A's plan read B's table, so it changes too
    put(store, plain(B, rule("always", MOBILE)))
    sink.calls.clear()
    assert plans.tick()
    assert sink.calls[0] == f"mark {FILLING}"  # before anything changes
    assert sink.marks[-1] != first and sink.marks[-1].endswith(":3")  # two keys, then one
    assert sink.table[A].split("~")[3] == f"sip:{MOBILE}@divert.invalid"
    # nothing new: nothing done
    sink.calls.clear()
    assert plans.tick() and sink.calls == []
    # a number that goes away takes its steps with it
    with store.transaction():
        store.delete_table(B)
    assert plans.tick()
    assert not any(key.startswith(B) for key in sink.table)
    assert sink.table[A].split("~")[3] == f"sip:{B}@divert.invalid"  # B is external now
    plans.close()


def test_a_store_that_vanishes_marks_the_table_unusable(store: StoreWriter, tmp_path: Path):
    put(store, plain(A, rule("always", B)))
    sink = Sink()
    plans = PlanSync(store.dir, tmp_path, CONFIG, sink)
    assert plans.tick() and sink.marks[-1] != FILLING
    # gone, and another position published (as a rebuild begins)
    (store.dir / "store.sqlite").unlink()
    (store.dir / "store.seq").write_bytes(b"\xff" * 16)
    assert not plans.tick()
    assert not plans.tick()
    assert sink.marks[-2:] == [sink.marks[-2], FILLING]  # said once
    assert sink.marks[-2] != FILLING


def test_a_tick_with_nothing_published_reads_no_store(
    store: StoreWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    put(store, plain(A))
    plans = PlanSync(store.dir, tmp_path, CONFIG, Sink())
    assert plans.tick()

    def no_read() -> None:
        raise AssertionError("the store was read")

    monkeypatch.setattr(plans, "_open", no_read)
    assert plans.tick()
    monkeypatch.undo()
    put(store, plain(B))
    assert plans.tick() and plans.generation is not None and plans.generation.endswith(":2")


def test_plans_that_do_not_fit_leave_the_table_empty_and_unused(store: StoreWriter, tmp_path: Path):
    put(store, plain(A, rule("always", B)), plain(B, rule("busy", MOBILE)))
    sink = Sink(room=2)
    plans = PlanSync(store.dir, tmp_path, CONFIG, sink)
    assert plans.tick()
    assert sink.table == {} and sink.marks == [FILLING]  # never a partial table in use
    assert plans.full is not None
    sink.calls.clear()
    put(store, plain(MOBILE))  # the same epoch: not tried again for a while
    assert plans.tick() and sink.calls == []
    with store.transaction():  # a full sync's new epoch: tried again, and it fits
        store.reset()
        store.put_table(A, "tenant", encode_table(plain(A, rule("always", code=603))))
    assert plans.tick()
    assert sink.marks[-1] != FILLING and sink.table == {A: "R~603~Decline"}


def test_an_unreadable_store_marks_the_table_unusable(tmp_path: Path):
    sink = Sink()
    plans = PlanSync(tmp_path / "nowhere", tmp_path, CONFIG, sink)
    assert not plans.tick()
    assert sink.marks == [FILLING]


class Gate:
    def __init__(self) -> None:
        self.told: list[str] = []

    def closing(self) -> None:
        self.told.append("busy")

    def opened(self, epoch: int, seq: int) -> None:
        self.told.append(f"{epoch}:{seq}")

    def refresh(self, epoch: int, seq: int) -> None:
        self.told.append(f"refresh {epoch}:{seq}")


def test_every_store_transaction_closes_the_gate_before_and_opens_it_after(
    store: StoreWriter,
):
    gate = Gate()
    store.gate = gate
    put(store, plain(A))
    epoch = store.meta("epoch")
    assert gate.told == ["busy", f"{epoch}:1"]
    with pytest.raises(RuntimeError), store.transaction():
        store.put_table(B, "tenant", encode_table(plain(B)))
        raise RuntimeError("a batch that fails")
    assert gate.told[-2:] == ["busy", f"{epoch}:1"]  # rolled back: open again, as it was


def test_compiled_plans_are_plain_values():
    assert Compiled().steps == {} and Compiled().dependencies == set()


def fake_kamcmd(folder: Path, exit_code: int, says: str = "") -> Path:
    """A `kamcmd` that records its arguments and answers as told."""
    record = folder / "kamcmd.args"
    script = folder / "kamcmd"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\necho "{says}" >&2\nexit {exit_code}\n')
    script.chmod(0o755)
    return record


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    return folder


def test_the_gate_sets_kamailios_value_through_its_control_socket(run_dir: Path):
    record = fake_kamcmd(run_dir.parent, 0)
    gate = KamailioGate(run_dir)
    gate.closing()
    assert not record.exists()  # no control socket: no Kamailio to tell
    (run_dir / "kamailio_ctl").touch()
    (run_dir / "kamailio.pid.main").write_text("100\n")
    gate.closing()
    gate.opened(7, 3)
    gate.refresh(7, 3)  # the Kamailio told already: nothing sent
    (run_dir / "kamailio.pid.main").write_text("200\n")
    gate.refresh(7, 4)  # a new Kamailio gets the value
    socket = f"unix:{run_dir / 'kamailio_ctl'}"
    assert record.read_text().splitlines() == [
        f"-s {socket} pv.shvSet divert_store str busy",
        f"-s {socket} pv.shvSet divert_store str 7:3",
        f"-s {socket} pv.shvSet divert_store str 7:4",
    ]


def test_a_gate_nobody_answers_is_logged_once(run_dir: Path, caplog: pytest.LogCaptureFixture):
    (run_dir / "kamailio_ctl").touch()
    fake_kamcmd(run_dir.parent, 1, "connect_unix_sock: connect(x): Connection refused")
    gate = KamailioGate(run_dir)
    gate.closing()  # a stale socket of a stopped Kamailio: nothing to say
    assert caplog.records == []
    fake_kamcmd(run_dir.parent, 1, "error: 500 - no such variable")
    gate.closing()
    gate.closing()
    assert [r.getMessage() for r in caplog.records] == [
        "Kamailio's plan gate cannot be set (error: 500 - no such variable): native plans may lag"
    ]
