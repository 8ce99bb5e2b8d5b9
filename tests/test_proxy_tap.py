"""Proxy mode: the tap. A status the charger saw confirmed is on disk first; a refused one is not.

Socket tests use a raw websocket CSMS (full control over what it answers and when) or the
``ocpp``-based CSMS simulator; the last tests exercise ``bridge.ocpp.tap`` alone (no I/O).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from bridge.app import Bridge
from bridge.devtools.csms_sim import CsmsSimulator
from bridge.hubsim import HubSimulator
from bridge.ocpp.rpc import OCPP16, OCPP201
from bridge.ocpp.tap import MAX_PENDING, Note, Report, Tap, Verdict
from bridge.status.table import OcppStatus, OicpStatus
from tests.conftest import Events, eventually, pushes
from tests.procs import RawCharger
from tests.proxied import proxy_ocpp

MakeBridge = Callable[..., Awaitable[Bridge]]
SN16 = {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}


def stored_status(bridge: Bridge, cp_id: str, key: int) -> str | None:
    """The connector's status as it is on disk (another connection, like a restart would read)."""
    db = sqlite3.connect(f"file:{bridge.settings.state.database}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT ocpp_status FROM connector WHERE charge_point_id = ? AND "
                         "evse_key = ?", (cp_id, key)).fetchone()  # fmt: skip
    finally:
        db.close()
    return None if row is None else str(row[0])


class ScriptedCsms:
    """Answers each CALL after ``delay`` with ``reply(frame)``, then sends ``then`` frames."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.reply: Callable[[list[Any]], str] = lambda call: json.dumps([3, call[1], {}])
        self.then: list[str] = []
        self.url = ""
        self.got: list[str] = []

    async def handle(self, connection: ServerConnection) -> None:
        async for frame in connection:
            assert isinstance(frame, str)
            self.got.append(frame)
            message = json.loads(frame)
            if message[0] != 2:
                continue
            await asyncio.sleep(self.delay)
            await connection.send(self.reply(message))
            for extra in self.then:
                await connection.send(extra)


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedCsms]:
    csms = ScriptedCsms()
    async with serve(csms.handle, "127.0.0.1", 0,
                     subprotocols=["ocpp1.6", "ocpp2.0.1"]) as server:  # type: ignore[list-item]  # fmt: skip
        port = next(iter(server.sockets)).getsockname()[1]
        csms.url = f"ws://127.0.0.1:{port}/ocpp/{{charge_point_id}}"
        yield csms


async def test_slow_confirmation_status_is_durable_before_the_charger_sees_it(
    make_bridge: MakeBridge, scripted: ScriptedCsms, hub: HubSimulator
) -> None:
    scripted.delay = 0.5
    scripted.then = ['[2,"csms-1","TriggerMessage",{"requestedMessage":"Heartbeat"}]']
    bridge = await make_bridge(ocpp=proxy_ocpp(scripted.url))
    charger = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await charger.ws.send(json.dumps([2, "sn-1", "StatusNotification", SN16]))
    await asyncio.sleep(0.3)  # the CSMS has it, but has not confirmed it
    assert scripted.got and stored_status(bridge, "CP16", 1) is None
    assert bridge.engine.status("DE*ABC*E16*1") is OicpStatus.UNKNOWN
    answer = await asyncio.wait_for(charger.ws.recv(), 5)
    on_disk = stored_status(bridge, "CP16", 1)  # read the moment the charger has its answer
    assert answer == '[3, "sn-1", {}]' and on_disk == "Charging"
    # Frames the CSMS sent after its confirmation come after it, in order.
    assert await asyncio.wait_for(charger.ws.recv(), 5) == scripted.then[0]
    await eventually(lambda: pushes(hub) == [("insert", "DE*ABC*E16*1", "Occupied")])
    await charger.close()


async def test_callerror_from_the_csms_means_the_report_is_not_taken(
    make_bridge: MakeBridge, hub: HubSimulator, events: Events
) -> None:
    async with CsmsSimulator() as csms:
        csms.faults.status_error = "InternalError"
        bridge = await make_bridge(ocpp=proxy_ocpp(csms.url))
        charger = await RawCharger.connect(bridge.ocpp.port, "CP16")
        await charger.ws.send(json.dumps([2, "sn-1", "StatusNotification", SN16]))
        answer = json.loads(await asyncio.wait_for(charger.ws.recv(), 5))
        assert answer[:3] == [4, "sn-1", "InternalError"]  # relayed as the CSMS sent it
        csms.faults.status_error = None
        await charger.status(2, "Faulted")  # the next one is taken
        await charger.close()
    await eventually(lambda: pushes(hub) == [("insert", "DE*ABC*E16*2", "OutOfService")])
    assert stored_status(bridge, "CP16", 1) is None
    assert [e["ocpp_status"] for e in events.named("status.received")] == ["Faulted"]
    refused = events.named("proxy.status_refused")
    assert len(refused) == 1 and refused[0]["code"] == "InternalError"


async def test_a_status_the_bridge_cannot_use_is_relayed_and_not_recorded(
    make_bridge: MakeBridge, scripted: ScriptedCsms, hub: HubSimulator, events: Events
) -> None:
    bridge = await make_bridge(ocpp=proxy_ocpp(scripted.url))
    charger = await RawCharger.connect(bridge.ocpp.port, "CP16")
    bogus = {**SN16, "status": "Bogus"}  # the CSMS may accept it; the bridge cannot map it
    assert await charger.call("StatusNotification", bogus) == {}
    await charger.status(1, "Available")
    await charger.close()
    await eventually(lambda: pushes(hub) == [("insert", "DE*ABC*E16*1", "Available")])
    ignored = events.named("proxy.tap_ignored")
    assert len(ignored) == 1 and "'Bogus'" in ignored[0]["reason"]
    assert json.loads(scripted.got[0])[3] == bogus  # relayed unchanged


async def test_slow_state_database_costs_at_most_tap_timeout_and_the_report_still_lands(
    make_bridge: MakeBridge, scripted: ScriptedCsms, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge = await make_bridge(ocpp=proxy_ocpp(scripted.url, tap_timeout=0.2))
    commit = bridge.store.commit

    async def slow_commit() -> None:  # a disk that takes 2 s for a write
        await asyncio.sleep(2.0)
        await commit()

    charger = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await eventually(lambda: len(events.named("charger.connected")) == 1)  # presence written
    monkeypatch.setattr(bridge.store, "commit", slow_commit)
    started = time.monotonic()
    assert await charger.call("StatusNotification", SN16) == {}
    waited = time.monotonic() - started
    assert 0.2 <= waited < 1.5  # the relay waited its budget (0.2 s), not the disk (2 s)
    assert len(events.named("proxy.tap_failed")) == 1
    await eventually(lambda: stored_status(bridge, "CP16", 1) == "Charging", within=10)
    await charger.close()


# -- the tap alone (no I/O) ------------------------------------------------------------------------
async def test_tap_pends_status_reports_until_the_csms_answers() -> None:
    tap = Tap("CP16", OCPP16)
    assert await tap.from_charger(json.dumps([2, "a", "StatusNotification", SN16])) is None
    assert await tap.from_charger('[2,"h","Heartbeat",{}]') is None
    assert list(tap.pending) == ["a"]
    assert tap.from_csms('[3,"h",{"currentTime":"2026-01-01T00:00:00Z"}]') is None
    assert tap.from_csms('[2,"x","Reset",{"type":"Soft"}]') is None
    verdict = tap.from_csms(b'[3, "a", {}]')  # a binary frame of the CSMS is read alike
    charging = Report(1, 1, OcppStatus.CHARGING, "NoError", None)
    assert verdict == Verdict("a", "StatusNotification", (charging,), None)
    assert tap.pending == {}
    await tap.from_charger(json.dumps([2, "b", "StatusNotification", SN16]))
    refused = tap.from_csms('[4,"b","SecurityError","no",{}]')
    assert isinstance(refused, Verdict) and refused.error_code == "SecurityError"


async def test_tap_reads_notify_event_availability_state_and_201_status() -> None:
    tap = Tap("CP201", OCPP201)
    event = {"generatedAt": "2026-01-01T00:00:00Z", "seqNo": 0, "eventData": [{
        "eventId": 1, "timestamp": "2026-01-01T00:00:00Z", "trigger": "Delta",
        "actualValue": "Faulted", "eventNotificationType": "HardWiredNotification",
        "component": {"name": "Connector", "evse": {"id": 2, "connectorId": 1}},
        "variable": {"name": "AvailabilityState"}}]}  # fmt: skip
    await tap.from_charger(json.dumps([2, "e", "NotifyEvent", event]))
    status = {"timestamp": "2026-01-01T00:00:00Z", "connectorStatus": "Occupied", "evseId": 1,
              "connectorId": 1}  # fmt: skip
    await tap.from_charger(json.dumps([2, "s", "StatusNotification", status]))
    first, second = tap.from_csms('[3,"e",{}]'), tap.from_csms('[3,"s",{}]')
    assert isinstance(first, Verdict) and isinstance(second, Verdict)
    assert first.reports == (Report(2, 1, OcppStatus.FAULTED, None, "2026-01-01T00:00:00Z"),)
    assert second.reports[0].status is OcppStatus.OCCUPIED


async def test_tap_reads_only_the_fields_it_needs() -> None:
    """The CSMS judges validity: a report it may accept is taken if its status is readable."""
    tap = Tap("CP16", OCPP16)
    lax = {**SN16, "timestamp": "2026-01-01T10:00:00", "vendorExtra": "x", "info": "ü" * 80}
    assert await tap.from_charger(json.dumps([2, "a", "StatusNotification", lax])) is None
    verdict = tap.from_csms('[3,"a",{}]')
    assert isinstance(verdict, Verdict)
    assert verdict.reports == (Report(1, 1, OcppStatus.CHARGING, "NoError", None),)  # no time
    unusable = [
        {**SN16, "connectorId": "1"}, {**SN16, "connectorId": True}, {**SN16, "connectorId": -1},
        {**SN16, "connectorId": 2**40}, {"connectorId": 1, "errorCode": "NoError"},
        {**SN16, "status": "Bogus"},
    ]  # fmt: skip
    for bad in unusable:
        note = await tap.from_charger(json.dumps([2, "b", "StatusNotification", bad]))
        assert isinstance(note, Note) and note.kind == "ignored", bad
    assert tap.pending == {}


@pytest.mark.parametrize("frame", ["garbage", "[2]", "[]", '"x"', "[2,5,6,7]", b"\xff\xfe"])
async def test_tap_notes_unparsable_frames(frame: str | bytes) -> None:
    note = await Tap("CP16", OCPP16).from_charger(frame)
    assert isinstance(note, Note) and note.kind == "unparsable"


async def test_tap_keeps_a_bounded_number_of_unanswered_reports() -> None:
    tap = Tap("CP16", OCPP16)
    notes = [await tap.from_charger(json.dumps([2, f"id{n}", "StatusNotification", SN16]))
             for n in range(MAX_PENDING + 1)]  # fmt: skip
    assert notes[:-1] == [None] * MAX_PENDING
    assert isinstance(notes[-1], Note) and notes[-1].kind == "dropped"
    assert len(tap.pending) == MAX_PENDING and "id0" not in tap.pending
    assert isinstance(tap.from_csms("not json at all"), Note)
