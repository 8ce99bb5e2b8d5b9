"""Once quiet, the hub shows for every configured EVSE what the bridge computes, and nothing else.

One test per way this used to break (ambiguous outcomes, restarts after configuration changes,
fullLoads, stale reports, replaced connections, ...), each with a real bridge, real chargers over
websockets and the hub simulator over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.app import Bridge
from bridge.errors import HubError, StoreError
from bridge.hubsim import HubSimulator
from tests.conftest import Events, eventually
from tests.procs import BridgeProcess, RawCharger, write_config

MakeBridge = Callable[..., Awaitable[Bridge]]
E1, E2 = "DE*ABC*E16*1", "DE*ABC*E16*2"
F1, F2 = "DE*ABC*E201*1", "DE*ABC*E201*2"


def stamp(seconds_ago: float = 0.0) -> str:
    when = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def status16(cp: RawCharger, connector: int, status: str, at: str | None = None) -> None:
    payload: dict[str, Any] = {"connectorId": connector, "errorCode": "NoError", "status": status}
    if at is not None:
        payload["timestamp"] = at
    assert await cp.call("StatusNotification", payload) == {}


async def status201(cp: RawCharger, evse: int, status: str, at: str) -> None:
    payload = {"timestamp": at, "connectorStatus": status, "evseId": evse, "connectorId": 1}
    assert await cp.call("StatusNotification", payload) == {}


async def availability(
    cp: RawCharger, component: dict[str, Any], value: str, at: str
) -> dict[str, Any]:
    event = {"eventId": 1, "timestamp": at, "trigger": "Delta", "actualValue": value,
             "eventNotificationType": "HardWiredNotification", "component": component,
             "variable": {"name": "AvailabilityState"}}  # fmt: skip
    result: dict[str, Any] = await cp.call(
        "NotifyEvent", {"generatedAt": at, "seqNo": 0, "eventData": [event]}
    )
    return result


def computed(bridge: Bridge) -> dict[str, str]:
    """What the bridge wants the hub to show, for every EVSE it knows."""
    return {e: bridge.engine.status(e).value for e in bridge.engine.evse_ids()}


def hub_view(hub: HubSimulator, bridge: Bridge) -> dict[str, str]:
    """The hub's status of every EVSE the bridge knows ("Unknown" where the hub has none)."""
    return {e: hub.state.get(e, "Unknown") for e in bridge.engine.evse_ids()}


async def quiet(bridge: Bridge, hub: HubSimulator, within: float = 8.0) -> None:
    """Wait until nothing is pending, in flight or waiting for a retry, at either end."""
    worker = bridge.worker
    assert worker is not None

    def done() -> bool:
        return worker.idle and hub.in_flight == 0

    await eventually(done, within=within)


async def assert_hub_right(bridge: Bridge, hub: HubSimulator, *, hold: float = 0.3) -> None:
    """The invariant, checked once quiet and again after ``hold`` s (nothing re-breaks it)."""
    for n in range(2):
        if n:
            await asyncio.sleep(hold)
        await quiet(bridge, hub)
        assert hub_view(hub, bridge) == computed(bridge)
        assert set(hub.state) <= set(bridge.engine.evse_ids())
    assert hub.max_in_flight == 1


# -- ambiguous outcomes ---------------------------------------------------------------------------
async def test_a_push_the_hub_applied_after_a_timeout_is_corrected(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    """Charging times out but lands late; meanwhile the EVSE went back to what the hub had
    acknowledged. The hub's status is unknown after the timeout, so Available is sent again."""
    bridge = await make_bridge(oicp={"request_timeout": 0.3})
    cp = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await status16(cp, 1, "Available")
    await eventually(lambda: hub.state.get(E1) == "Available")
    hub.faults.late(0.5, count=1)
    await status16(cp, 1, "Charging")
    await status16(cp, 1, "Available")  # back to what the hub acknowledged, while in flight
    await asyncio.sleep(0.6)  # the late application has landed
    await assert_hub_right(bridge, hub)
    assert hub.state[E1] == "Available"
    await cp.close()


async def test_no_request_overtakes_one_the_hub_is_still_processing(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    bridge = await make_bridge(oicp={"request_timeout": 0.3})
    cp = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await status16(cp, 1, "Available")
    await eventually(lambda: hub.state.get(E1) == "Available")
    hub.faults.late(0.5, count=1)
    await status16(cp, 1, "Charging")  # times out at 0.3 s, applied by the hub at 0.5 s
    await status16(cp, 1, "Reserved")  # newer: must land after the late Occupied
    await asyncio.sleep(0.6)
    await assert_hub_right(bridge, hub)
    assert hub.state[E1] == "Reserved"
    assert hub.max_in_flight == 1
    await cp.close()


async def test_a_connection_dropped_after_the_request_was_sent_is_ambiguous(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    bridge = await make_bridge(oicp={"request_timeout": 0.3})  # settle time: 0.3 s
    cp = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await status16(cp, 1, "Available")
    await eventually(lambda: hub.state.get(E1) == "Available")
    hub.faults.drop(count=1, apply=True)
    await status16(cp, 1, "Charging")
    await status16(cp, 1, "Available")
    await assert_hub_right(bridge, hub)
    assert hub.state[E1] == "Available"
    await cp.close()


# -- configuration change + restart ---------------------------------------------------------------
SWAPPED = {
    "CP16": {"evses": {1: E2, 2: E1}},
    "CP201": {"evses": {1: F1, 2: F2}},
}


@pytest.mark.parametrize("change", ["swap", "override"])
@pytest.mark.parametrize("then_full_load", [False, True])
async def test_restart_after_a_configuration_change_corrects_the_hub(
    make_bridge: MakeBridge, hub: HubSimulator, change: str, then_full_load: bool
) -> None:
    first = await make_bridge()
    cp = await RawCharger.connect(first.ocpp.port, "CP16")
    await status16(cp, 1, "Available")
    await status16(cp, 2, "Unavailable")
    await eventually(lambda: hub.state == {E1: "Available", E2: "OutOfService"})
    await cp.close()
    await first.stop()
    if change == "swap":
        second = await make_bridge(chargers=SWAPPED)
        expected = {E1: "OutOfService", E2: "Available"}
    else:
        second = await make_bridge(status={"overrides": {"Unavailable": "Unknown"}})
        expected = {E1: "Available", E2: "Unknown"}
    assert second.worker is not None
    if then_full_load:  # the fullLoad must not leave a stale row to be pushed after it
        await second.worker.request_full_load()
    await assert_hub_right(second, hub)
    assert {e: hub.state[e] for e in expected} == expected


# -- connection bookkeeping -----------------------------------------------------------------------
async def test_a_failed_commit_while_connecting_does_not_keep_the_charger_online(
    make_bridge: MakeBridge, hub: HubSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    bridge = await make_bridge(ocpp={"offline_grace": 0.3})
    cp = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await status16(cp, 1, "Available")
    await eventually(lambda: hub.state.get(E1) == "Available")
    await cp.close()
    await eventually(lambda: not bridge.ingest.charge_points["CP16"].connected)
    await bridge.store.commit()
    real_commit = bridge.store.commit
    failures = [1]

    async def failing_commit() -> None:
        if failures[0]:
            failures[0] -= 1
            raise StoreError("disk full")
        await real_commit()

    monkeypatch.setattr(bridge.store, "commit", failing_commit)
    with pytest.raises(Exception):  # noqa: B017 (the bridge closes it; how does not matter)
        again = await RawCharger.connect(bridge.ocpp.port, "CP16")
        await asyncio.wait_for(again.ws.recv(), 3)
    await eventually(lambda: bridge.ingest.charge_points["CP16"].offline, within=3)
    await eventually(lambda: hub.state.get(E1) == "Unknown")


async def test_a_report_whose_commit_failed_is_kept_by_the_next_commit(
    make_bridge: MakeBridge, hub: HubSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed commit is answered with InternalError (the charger sends it again) but the
    status is not dropped: the bridge holds it, pushes it, and the next commit keeps it, so the
    hub and the database agree (a crash before that commit is covered by the fullLoad after an
    unclean start)."""
    first = await make_bridge()
    cp = await RawCharger.connect(first.ocpp.port, "CP16")
    await status16(cp, 1, "Available")
    await eventually(lambda: hub.state.get(E1) == "Available")
    real_commit = first.store.commit
    failures = [1]

    async def failing_commit() -> None:
        if failures[0]:
            failures[0] -= 1
            raise StoreError("disk full")
        await real_commit()

    monkeypatch.setattr(first.store, "commit", failing_commit)
    await cp.ws.send(
        json.dumps(
            [
                2,
                "f",
                "StatusNotification",
                {"connectorId": 1, "errorCode": "NoError", "status": "Charging"},
            ]
        )
    )
    answer = json.loads(await cp.ws.recv())
    assert answer[:3] == [4, "f", "InternalError"]
    await eventually(lambda: hub.state.get(E1) == "Occupied")
    await cp.close()
    await first.stop()
    before = len(hub.received)
    second = await make_bridge()
    await assert_hub_right(second, hub)
    assert second.engine.status(E1).value == "Occupied"
    assert len(hub.received) == before  # nothing to correct


# -- fullLoad -------------------------------------------------------------------------------------
async def test_single_pushes_flow_while_a_fullload_keeps_failing(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    bridge = await make_bridge()
    assert bridge.worker is not None
    hub.faults.answer_code("009", action="fullLoad")  # retryable, until cleared
    full_load = asyncio.ensure_future(bridge.worker.request_full_load())
    await eventually(lambda: any(p.action == "fullLoad" for p in hub.received))
    cp = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await status16(cp, 1, "Charging")
    await status16(cp, 2, "Reserved")
    await eventually(lambda: hub.state == {E1: "Occupied", E2: "Reserved"}, within=3)
    assert not full_load.done()
    hub.faults.clear()
    assert await asyncio.wait_for(full_load, 10) == 4
    await assert_hub_right(bridge, hub)
    await cp.close()


async def test_a_fullload_has_its_own_longer_timeout(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    bridge = await make_bridge(oicp={"request_timeout": 0.3}, fullload={"request_timeout": 3})
    assert bridge.worker is not None
    hub.faults.hang(0.6, action="fullLoad")  # slower than a single push may take
    assert await asyncio.wait_for(bridge.worker.request_full_load(), 5) == 4
    assert [p.action for p in hub.received] == ["fullLoad"]


async def test_a_refused_fullload_is_logged_counted_and_costs_no_cpu(
    make_bridge: MakeBridge, hub: HubSimulator, events: Events
) -> None:
    bridge = await make_bridge(delivery={"retry_initial": 0.4, "retry_max": 5})
    assert bridge.worker is not None
    hub.faults.answer_code("018", action="fullLoad", count=1)
    with pytest.raises(HubError):
        await asyncio.wait_for(bridge.worker.request_full_load(), 5)
    refused_at = time.monotonic()
    cpu = time.process_time()
    await asyncio.sleep(0.5)
    assert time.process_time() - cpu < 0.15  # an idle bridge, not a spinning worker
    [line] = events.named("fullload.failed")
    assert line["hub_code"] == "018"
    metrics = bridge.metrics.render()[0].decode()
    assert 'bridge_pushes_total{action="fullLoad",code="018",outcome="refused"} 1.0' in metrics
    # Asked again by hand: sent, but only after a backoff.
    assert await asyncio.wait_for(bridge.worker.request_full_load(), 5) == 4
    second = [p for p in hub.received if p.action == "fullLoad"][1]
    assert second.time - refused_at >= 0.35


# -- new EVSE during a fullLoad -------------------------------------------------------------------
async def test_an_evse_first_seen_during_a_fullload_is_pushed(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    bridge = await make_bridge(
        ocpp={"allow_unlisted": True, "evse_id_template": "{operator}*E{charge_point}*{evse}"}
    )
    assert bridge.worker is not None
    hub.faults.hang(0.5, action="fullLoad", count=1)
    full_load = asyncio.ensure_future(bridge.worker.request_full_load())
    await eventually(lambda: hub.in_flight == 1)
    cp = await RawCharger.connect(bridge.ocpp.port, "NEW1")
    await status16(cp, 1, "Available")
    await asyncio.wait_for(full_load, 5)
    await eventually(lambda: hub.state.get("DE*ABC*ENEW1*1") == "Available")
    await assert_hub_right(bridge, hub)
    await cp.close()


# -- one EVSE must not hold the queue -------------------------------------------------------------
async def test_one_evse_refused_retryably_does_not_hold_back_the_others(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    bridge = await make_bridge()
    hub.faults.answer_code("009", evse_id=E1)  # only this EVSE's pushes, until cleared
    cp = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await status16(cp, 1, "Available")
    await status16(cp, 2, "Charging")
    cp2 = await RawCharger.connect(bridge.ocpp.port, "CP201", "2.0.1")
    await status201(cp2, 1, "Reserved", stamp())
    await eventually(lambda: hub.state == {E2: "Occupied", F1: "Reserved"}, within=3)
    hub.faults.clear()
    await assert_hub_right(bridge, hub)
    await cp.close()
    await cp2.close()


async def test_an_evse_refused_retryably_too_often_is_parked_visibly(
    make_bridge: MakeBridge, hub: HubSimulator, events: Events
) -> None:
    bridge = await make_bridge(delivery={"max_attempts": 3, "retry_initial": 0.05,
                                         "retry_max": 0.1})  # fmt: skip
    hub.faults.answer_code("009", evse_id=E1)
    cp = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await status16(cp, 1, "Available")
    for n in range(6):  # other EVSEs keep succeeding in between
        await status16(cp, 2, "Charging" if n % 2 else "Available")
        await asyncio.sleep(0.1)
    await eventually(lambda: bridge.outbox.rows[E1].parked_code == "009")
    [line] = events.named("push.parked")
    assert line["evse_id"] == E1 and line["attempts"] == 3
    assert "bridge_evses_parked 1.0" in bridge.metrics.render()[0].decode()
    assert len([p for p in hub.received if p.records[0][0] == E1]) == 3
    hub.faults.clear()
    await status16(cp, 1, "Charging")  # a new status is a new try
    await eventually(lambda: hub.state.get(E1) == "Occupied")
    await cp.close()


# -- removed EVSEs --------------------------------------------------------------------------------
ONLY_E1 = {"CP16": {"evses": {1: E1}}, "CP201": {"evses": {1: F1, 2: F2}}}


async def test_an_evse_removed_from_the_configuration_leaves_the_hub(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    first = await make_bridge()
    cp = await RawCharger.connect(first.ocpp.port, "CP16")
    await status16(cp, 1, "Available")
    await status16(cp, 2, "Charging")
    await eventually(lambda: hub.state == {E1: "Available", E2: "Occupied"})
    await cp.close()
    await first.stop()
    before = len(hub.received)
    second = await make_bridge(chargers=ONLY_E1)
    await assert_hub_right(second, hub)
    assert E2 not in hub.state
    after = [(p.action, p.records) for p in hub.received[before:]]
    assert after == [("delete", ((E2, "Occupied"),))]
    cp = await RawCharger.connect(second.ocpp.port, "CP16")
    await status16(cp, 2, "Available")  # no EvseID any more: answered, never pushed
    await asyncio.sleep(0.2)
    assert len(hub.received) == before + 1
    await cp.close()


async def test_a_removed_evse_still_pending_is_not_pushed_after_restart(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    first = await make_bridge()
    hub.faults.fail_http(503)
    cp = await RawCharger.connect(first.ocpp.port, "CP16")
    await status16(cp, 1, "Available")
    await status16(cp, 2, "Charging")
    await cp.close()
    await first.stop()
    hub.faults.clear()
    before = len(hub.received)
    second = await make_bridge(chargers=ONLY_E1)
    await assert_hub_right(second, hub)
    later = [(p.action, evse) for p in hub.received[before:] for evse, _ in p.records]
    assert ("insert", E2) not in later and ("update", E2) not in later
    assert hub.state == {E1: "Available"}


# -- stale reports --------------------------------------------------------------------------------
async def test_an_older_report_is_confirmed_but_changes_nothing(
    bridge: Bridge, hub: HubSimulator, events: Events
) -> None:
    cp = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await status16(cp, 1, "Available", stamp(0))
    await status16(cp, 1, "Charging", stamp(300))  # five minutes older: a replayed message
    await assert_hub_right(bridge, hub)
    assert hub.state == {E1: "Available"}
    [stale] = events.named("status.stale")
    assert (stale["charge_point_id"], stale["connector_id"], stale["ocpp_status"]) == (
        "CP16",
        1,
        "Charging",
    )
    # Without a timestamp a report counts as "now": newer than what is held...
    await status16(cp, 1, "Reserved")
    await eventually(lambda: hub.state.get(E1) == "Reserved")
    # ...and a report stamped before that moment is older.
    await status16(cp, 1, "Faulted", stamp(5))
    await asyncio.sleep(0.1)
    assert hub.state.get(E1) == "Reserved" and len(events.named("status.stale")) == 2
    await cp.close()


async def test_an_older_notify_event_does_not_overwrite_a_status_notification(
    bridge: Bridge, hub: HubSimulator, events: Events
) -> None:
    cp = await RawCharger.connect(bridge.ocpp.port, "CP201", "2.0.1")
    await status201(cp, 1, "Occupied", stamp(0))
    connector = {"name": "Connector", "evse": {"id": 1, "connectorId": 1}}
    assert await availability(cp, connector, "Available", stamp(60)) == {}
    await assert_hub_right(bridge, hub)
    assert hub.state == {F1: "Occupied"}
    assert len(events.named("status.stale")) == 1
    await cp.close()


async def test_older_reports_stay_older_after_a_restart(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    first = await make_bridge()
    cp = await RawCharger.connect(first.ocpp.port, "CP16")
    await status16(cp, 1, "Available", stamp(0))
    await eventually(lambda: hub.state.get(E1) == "Available")
    await cp.close()
    await first.stop()
    second = await make_bridge()
    cp = await RawCharger.connect(second.ocpp.port, "CP16")
    await status16(cp, 1, "Charging", stamp(120))  # queued before the restart, sent after
    await assert_hub_right(second, hub)
    assert hub.state == {E1: "Available"}
    await cp.close()


# -- replaced connections -------------------------------------------------------------------------
async def test_frames_on_a_replaced_connection_are_not_handled(
    bridge: Bridge, hub: HubSimulator, events: Events
) -> None:
    first = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await status16(first, 1, "Available")
    await eventually(lambda: hub.state.get(E1) == "Available")
    # The first connection does not read (a half-dead link, a busy charger): it does not see
    # the bridge's close frame and goes on sending.
    first.ws.transport.pause_reading()
    second = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await eventually(lambda: bool(events.named("charger.replaced")))
    for n in range(3):
        frame = [2, f"old{n}", "StatusNotification",
                 {"connectorId": 2, "errorCode": "NoError", "status": "Faulted"}]  # fmt: skip
        await first.ws.send(json.dumps(frame))
    await asyncio.sleep(0.3)
    assert [r for r in events.named("status.received") if r["connector_id"] == 2] == []
    await status16(second, 2, "Charging")
    await eventually(lambda: hub.state.get(E2) == "Occupied")
    first.ws.transport.resume_reading()
    await second.close()


# -- what a charger can make the bridge store and push --------------------------------------------
async def test_unmapped_connectors_are_answered_logged_once_and_not_stored(
    bridge: Bridge, hub: HubSimulator, events: Events
) -> None:
    cp = await RawCharger.connect(bridge.ocpp.port, "CP16")
    for status in ("Available", "Charging", "Available"):
        await status16(cp, 7, status)
    await bridge.store.commit()
    with sqlite3.connect(bridge.store.path) as db:
        keys = [row[0] for row in db.execute("SELECT evse_key FROM connector")]
    assert 7 not in keys
    assert len(events.named("status.unmapped")) == 1
    assert hub.received == []
    await cp.close()


async def test_template_evses_per_charger_are_capped(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    bridge = await make_bridge(
        ocpp={"allow_unlisted": True, "evse_id_template": "{operator}*E{charge_point}*{evse}"}
    )
    cp = await RawCharger.connect(bridge.ocpp.port, "WILD")
    for connector in range(1, 21):
        await status16(cp, connector, "Available")
    await assert_hub_right(bridge, hub)
    assert len(bridge.engine.evses_of("WILD")) == 8
    assert sorted(hub.state) == sorted(f"DE*ABC*EWILD*{n}" for n in range(1, 9))
    await cp.close()


# -- 2.0.1 availability of a whole station or EVSE; the offline grace -------------------------
async def test_a_201_station_back_in_service_per_connector_is_not_left_out_of_service(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    first = await make_bridge()
    cp = await RawCharger.connect(first.ocpp.port, "CP201", "2.0.1")
    await status201(cp, 1, "Available", stamp(10))
    await status201(cp, 2, "Available", stamp(10))
    await availability(cp, {"name": "ChargingStation"}, "Unavailable", stamp(8))
    await eventually(lambda: hub.state == {F1: "OutOfService", F2: "OutOfService"})
    # Back in service: 2.0.1 stations report their connectors, not always the station.
    await status201(cp, 1, "Available", stamp(4))
    await status201(cp, 2, "Occupied", stamp(4))
    await eventually(lambda: hub.state == {F1: "Available", F2: "Occupied"})
    await cp.close()
    await first.stop()
    second = await make_bridge()  # and it stays so after a restart
    await assert_hub_right(second, hub)
    assert hub.state == {F1: "Available", F2: "Occupied"}


async def test_a_201_evse_component_availability_takes_that_evse_down(
    bridge: Bridge, hub: HubSimulator
) -> None:
    cp = await RawCharger.connect(bridge.ocpp.port, "CP201", "2.0.1")
    await status201(cp, 1, "Available", stamp(10))
    await status201(cp, 2, "Available", stamp(10))
    await availability(cp, {"name": "EVSE", "evse": {"id": 2}}, "Unavailable", stamp(5))
    await eventually(lambda: hub.state == {F1: "Available", F2: "OutOfService"})
    await availability(cp, {"name": "EVSE", "evse": {"id": 2}}, "Available", stamp(2))
    await eventually(lambda: hub.state == {F1: "Available", F2: "Available"})
    await cp.close()


async def test_an_expired_grace_does_not_cut_a_newer_one_short(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    """The grace timer fires, and before its work runs the charger connects and leaves again:
    the new disconnection gets a whole grace of its own."""
    bridge = await make_bridge(ocpp={"offline_grace": 0.4})
    ingest = bridge.ingest
    await ingest.connected("CP16", "1.6")
    await ingest.disconnected("CP16")
    loop = asyncio.get_running_loop()
    expired = ingest._grace["CP16"]
    assert isinstance(expired, asyncio.TimerHandle)

    def reconnect_and_leave() -> None:  # runs right after the expired timer, same loop turn
        ingest.connect("CP16", "1.6")
        ingest.disconnect("CP16")

    loop.call_at(expired.when(), reconnect_and_leave)
    await asyncio.sleep(0.4 + 0.15)
    assert not ingest.charge_points["CP16"].offline  # 0.15 s into the new grace of 0.4 s
    await eventually(lambda: ingest.charge_points["CP16"].offline, within=2)


# -- a crash -------------------------------------------------------------------------------------
@pytest.mark.slow
async def test_a_push_out_before_its_report_was_kept_is_undone_after_a_crash(
    tmp_path: Path, hub: HubSimulator
) -> None:
    """A push goes out while the report it carries is still being committed (pushes do not
    wait for the disk); a SIGKILL then leaves the hub with a status the database never got.
    The next start cannot know which, so it sends a fullLoad (after the settle time)."""
    settings = {
        "ocpp": {"host": "127.0.0.1", "port": 0, "offline_grace": 600},
        "oicp": {"base_url": hub.base_url, "operator_id": "DE*ABC", "request_timeout": 0.5},
        "state": {
            "database": tmp_path / "state.db",
            "group_commit_ms": 100,
            "group_commit_rows": 0,
        },
        "fullload": {"enabled": False},
        "ops": {"enabled": False},
        "chargers": {"CP16": {"evses": {1: E1, 2: E2}}},
    }
    config = write_config(tmp_path / "bridge.yaml", settings)
    first = await BridgeProcess(config).start()
    cp = await RawCharger.connect(first.ocpp_port, "CP16")
    await status16(cp, 1, "Available")
    await eventually(lambda: hub.state.get(E1) == "Available")
    await asyncio.sleep(0.3)  # its acknowledgment is on disk too
    frame = [2, "x", "StatusNotification",
             {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}]  # fmt: skip
    await cp.ws.send(json.dumps(frame))  # the charger never gets its answer
    await eventually(lambda: hub.state.get(E1) == "Occupied")  # pushed within the 100 ms
    assert await first.kill() == -9
    await cp.close()
    second = await BridgeProcess(config).start()
    try:
        # The database has Available for E1 (the Charging report was never committed).
        await eventually(lambda: hub.state.get(E1) == "Available", within=10)
        assert [p.action for p in hub.received][-1] == "fullLoad"
        assert second.named("bridge.unclean_start")
    finally:
        assert await second.terminate() == 0
