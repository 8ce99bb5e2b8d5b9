"""Hostile traffic: property-based fuzzing of one connection, and a flooder next to a charger.

The fuzz test runs the bridge and the hub simulator on an event loop in a background thread and
drives one websocket from the test thread, so hypothesis can generate frames synchronously.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect as sync_connect

from bridge.app import Bridge
from bridge.hubsim import HubSimulator
from bridge.ops.logging import add_tap, remove_tap, set_level
from tests.conftest import CHARGERS, charger, eventually, now_z, pushes, settings_for
from tests.oicp_schema import validate_push_body

T = TypeVar("T")
MakeBridge = Callable[..., Awaitable[Bridge]]
CHARGER = {"1.6": "CP16", "2.0.1": "CP201"}
CODES = {  # every CALLERROR code a healthy bridge may send; InternalError would mean a bug
    "1.6": {"NotImplemented", "NotSupported", "ProtocolError", "FormationViolation",
            "PropertyConstraintViolation", "OccurenceConstraintViolation",
            "TypeConstraintViolation"},
    "2.0.1": {"NotImplemented", "NotSupported", "FormatViolation", "RpcFrameworkError",
              "MessageTypeNotSupported", "PropertyConstraintViolation",
              "OccurrenceConstraintViolation", "TypeConstraintViolation"},
}  # fmt: skip
EXAMPLES = {"1.6": 2000, "2.0.1": 1200}  # frames per connection
SPARE = 7919  # a connector / EVSE number only the final report uses
SPARE_EVSE = {"1.6": "DE*ABC*E16*7919", "2.0.1": "DE*ABC*E201*7919"}


# -- the bridge on its own thread ---------------------------------------------------------------
@dataclass
class Live:
    loop: asyncio.AbstractEventLoop
    hub: HubSimulator
    bridge: Bridge
    errors: list[dict[str, Any]]

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def _collect_errors(sink: list[dict[str, Any]]) -> Callable[[dict[str, Any]], None]:
    def tap(event: dict[str, Any]) -> None:
        if event.get("level") in ("error", "critical"):
            sink.append(event)

    return tap


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bridge-loop", daemon=True)
    thread.start()

    async def start() -> tuple[HubSimulator, Bridge]:
        hub = HubSimulator(body_validator=validate_push_body)
        await hub.start()
        unlimited = {"max_messages_per_second": 1e6, "message_burst": 10**6}
        registry = {CHARGER[v]: {"evses": {**CHARGERS[CHARGER[v]]["evses"], SPARE: evse}}
                    for v, evse in SPARE_EVSE.items()}  # fmt: skip
        bridge = Bridge(settings_for(tmp_path_factory.mktemp("fuzz"), hub.base_url,
                                     ocpp={"security": unlimited}, chargers=registry))  # fmt: skip
        await bridge.start()
        return hub, bridge

    # Thousands of per-frame warnings would only slow the run down; errors are still caught.
    errors: list[dict[str, Any]] = []
    tap = _collect_errors(errors)
    add_tap(tap)
    set_level("ERROR")
    hub, bridge = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    live = Live(loop, hub, bridge, errors)
    try:
        yield live
    finally:
        live.run(bridge.stop())
        live.run(hub.stop())
        remove_tap(tap)
        set_level("INFO")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert hub.schema_errors == []


# -- frames -----------------------------------------------------------------------------------
VALID = {
    "1.6": [
        ("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available",
                                "timestamp": "2026-11-21T10:00:00Z", "info": "i"}),
        ("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}),
        ("Heartbeat", {}),
        ("MeterValues", {"connectorId": 1, "meterValue": []}),
    ],
    "2.0.1": [
        ("StatusNotification", {"timestamp": "2026-11-21T10:00:00Z", "connectorStatus": "Occupied",
                                "evseId": 1, "connectorId": 1}),
        ("BootNotification", {"chargingStation": {"model": "M", "vendorName": "V"},
                              "reason": "PowerUp"}),
        ("Heartbeat", {}),
        ("NotifyEvent", {"generatedAt": "2026-11-21T10:00:00Z", "seqNo": 0, "eventData": [
            {"eventId": 1, "timestamp": "2026-11-21T10:00:00Z", "trigger": "Delta",
             "actualValue": "Reserved", "eventNotificationType": "HardWiredNotification",
             "component": {"name": "Connector", "evse": {"id": 2, "connectorId": 1}},
             "variable": {"name": "AvailabilityState"}}]}),
    ],
}  # fmt: skip

leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(
        ["2026-02-30T10:00:00Z", "2026-11-21T10:00:00", "", "Available", "\ud800", 2**31, -1]
    )
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
ids = st.text(max_size=40) | st.integers() | st.none() | st.just("-1") | st.uuids().map(str)
types = st.sampled_from([2, 2, 2, 3, 4, 5, 0, -1, True, "2", 2.0, None, [2]])


def _dump(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


@st.composite
def mutated_payload(draw: st.DrawFn, version: str) -> tuple[str, dict[str, Any]]:
    action, payload = draw(st.sampled_from(VALID[version]))
    payload = json.loads(json.dumps(payload))
    for _ in range(draw(st.integers(0, 3))):
        keys = sorted(payload)
        op = draw(st.sampled_from(["set", "drop", "add"] if keys else ["add"]))
        if op == "set":
            payload[draw(st.sampled_from(keys))] = draw(json_values)
        elif op == "drop":
            del payload[draw(st.sampled_from(keys))]
        else:
            payload[draw(st.text(max_size=12))] = draw(json_values)
    return action, payload


@st.composite
def structured(draw: st.DrawFn, version: str) -> str:
    action, payload = draw(mutated_payload(version))
    other_actions = st.sampled_from(["FooBar", "Reset", "", "heartbeat"]) | st.text(max_size=20)
    parts: list[Any] = [
        draw(types),
        draw(ids),
        draw(st.just(action) | other_actions),
        draw(st.just(payload) | json_values),
    ]
    parts += draw(st.lists(json_values, max_size=2))
    return _dump(parts[: draw(st.integers(0, len(parts)))] if draw(st.booleans()) else parts[:4])


@st.composite
def corrupted(draw: st.DrawFn, version: str) -> str:
    action, payload = draw(mutated_payload(version))
    text = _dump([2, draw(ids), action, payload])
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["cut", "insert", "delete"]))
        if op == "cut":
            text = text[:at]
        elif op == "insert":
            text = text[:at] + draw(st.text(min_size=1, max_size=3)) + text[at:]
        else:
            text = text[:at] + text[at + 1 :]
    return text


deep = st.integers(1, 12_000).flatmap(  # stays under the 64 KiB frame limit
    lambda n: st.sampled_from(["[" * n + "]" * n, "[" * n, '{"a":' * n, "[2," * n])
)


def frames(version: str) -> st.SearchStrategy[str | bytes]:
    return st.one_of(
        structured(version),
        structured(version),
        corrupted(version),
        mutated_payload(version).map(lambda ap: _dump([2, "ok", ap[0], ap[1]])),
        st.text(max_size=80),
        st.binary(max_size=80),
        json_values.map(_dump),
        deep,
    )


def expected_id(frame: str | bytes) -> str | None:
    """The MessageId the answer must carry, or None when no answer is due (OCPP-J §4.2)."""
    try:
        text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
        message = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError):
        return "-1"
    if not isinstance(message, list) or not message:
        return "-1"
    if type(message[0]) is int and message[0] in (3, 4):
        return None  # a result/error for a call the bridge never made: ignored
    unique_id = message[1] if len(message) > 1 else None
    if not isinstance(unique_id, str) or not 0 < len(unique_id) <= 36 or not _utf8(unique_id):
        return "-1"
    return unique_id


def _not_json(name: str) -> Any:
    raise ValueError(name)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_fuzzed_frames_on_one_connection(live: Live, version: str) -> None:
    cp_id = CHARGER[version]
    quiet = logging.getLogger("tests.client")
    quiet.propagate = False
    sent = answered = 0
    with sync_connect(
        f"ws://127.0.0.1:{live.bridge.ocpp.port}/ocpp/{cp_id}",
        subprotocols=[f"ocpp{version}"],  # type: ignore[list-item]
        max_size=None,
        logger=quiet,
    ) as ws:

        @settings(max_examples=EXAMPLES[version], deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(frame=frames(version))
        def feed(frame: str | bytes) -> None:
            nonlocal sent, answered
            ws.send(frame)
            sent += 1
            want = expected_id(frame)
            if want is None:
                return
            answer = json.loads(ws.recv(timeout=10))
            answered += 1
            # Answers come in order, so an answer to an ignorable frame shows up here as a
            # wrong id on the next one.
            assert answer[1] == want, (frame, answer)
            if answer[0] == 3:
                assert len(answer) == 3 and isinstance(answer[2], dict)
            else:
                assert answer[0] == 4 and len(answer) == 5, answer
                assert answer[2] in CODES[version], (frame, answer)
                assert isinstance(answer[3], str) and len(answer[3]) <= 255
                assert isinstance(answer[4], dict)

        feed()
        assert sent >= EXAMPLES[version] and answered > sent // 2

        # The connection is still up and a valid status report still reaches the hub. The fuzz
        # may have taken the whole charger down (1.6 connector 0, 2.0.1 ChargingStation), so
        # that is reported back up first; EVSE 7919 is one the fuzz practically never hits.
        for unique_id, action, payload in _station_available(version):
            ws.send(json.dumps([2, unique_id, action, payload]))
            assert json.loads(ws.recv(timeout=10)) == [3, unique_id, {}]
        if version == "1.6":
            report: dict[str, Any] = {"connectorId": SPARE, "errorCode": "NoError",
                                      "status": "Available"}  # fmt: skip
        else:
            report = {"timestamp": now_z(), "connectorStatus": "Available", "evseId": SPARE,
                      "connectorId": 1}  # fmt: skip
        ws.send(json.dumps([2, "final", "StatusNotification", report]))
        assert json.loads(ws.recv(timeout=10)) == [3, "final", {}]
        evse_id = SPARE_EVSE[version]
        deadline = time.monotonic() + 10
        while ("insert", evse_id, "Available") not in live.run(_pushes(live.hub)):
            assert time.monotonic() < deadline, "status not pushed"
            time.sleep(0.02)
    assert cp_id not in live.run(_sessions(live.bridge))  # closed by us, cleanly
    assert live.errors == [], live.errors


def _station_available(version: str) -> list[tuple[str, str, dict[str, Any]]]:
    if version == "1.6":
        return [("up", "StatusNotification",
                 {"connectorId": 0, "errorCode": "NoError", "status": "Available"})]  # fmt: skip
    event = {"eventId": 9, "timestamp": now_z(), "trigger": "Delta", "actualValue": "Available",
             "eventNotificationType": "HardWiredNotification",
             "component": {"name": "ChargingStation"},
             "variable": {"name": "AvailabilityState"}}  # fmt: skip
    return [("up", "NotifyEvent", {"generatedAt": now_z(), "seqNo": 1, "eventData": [event]})]


async def _pushes(hub: HubSimulator) -> list[tuple[str, str, str]]:
    return pushes(hub)


async def _sessions(bridge: Bridge) -> set[str]:
    await asyncio.sleep(0.1)
    return set(bridge.ocpp.sessions)


# -- one flooder, one honest charger ------------------------------------------------------------
FLOODER = textwrap.dedent(
    """
    import asyncio, logging, sys
    import websockets

    async def main(port: int, seconds: float) -> None:
        quiet = logging.getLogger("flooder")
        quiet.propagate = False
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ocpp/CP16", subprotocols=["ocpp1.6"], logger=quiet
        )
        answers = 0

        async def drain() -> None:
            nonlocal answers
            async for _ in ws:
                answers += 1

        reader = asyncio.create_task(drain())
        garbage = ["not json", "[9,1]", '[2,"x","FooBar",{}]', "[" * 2000,
                   '[2,"y","StatusNotification",{"connectorId":"1"}]']
        sent = 0
        print("flooding", flush=True)
        try:
            async with asyncio.timeout(seconds):  # send() blocks once the bridge reads slowly
                while True:
                    await ws.send(garbage[sent % len(garbage)])
                    sent += 1
                    if sent % 64 == 0:
                        await asyncio.sleep(0)  # let the reader drain answers
        except TimeoutError:
            pass
        await asyncio.sleep(0.2)
        print(sent, answers, flush=True)
        reader.cancel()
        ws.transport.abort()  # no closing handshake behind megabytes of queued garbage

    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
    """
)
BOUND_S = 1.0  # an honest charger's status reaches the hub within this, flood or not


@pytest.mark.parametrize(
    "limits",
    [{}, {"max_messages_per_second": 1e6, "message_burst": 10**6}],
    ids=["default-budget", "no-budget"],
)
async def test_flooder_does_not_delay_another_charger(
    make_bridge: MakeBridge, hub: HubSimulator, tmp_path: Path, limits: dict[str, Any]
) -> None:
    bridge = await make_bridge(ocpp={"security": limits})
    flooder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOODER, str(bridge.ocpp.port), "2.5",
        stdout=subprocess.PIPE, cwd=str(tmp_path),
    )  # fmt: skip
    assert flooder.stdout is not None
    async with asyncio.timeout(20):
        assert await flooder.stdout.readline() == b"flooding\n"
    await asyncio.sleep(0.3)  # let the flood build up
    latencies = []
    async with charger(bridge.ocpp.port, "CP201", "2.0.1") as cp:
        for n in range(6):
            status, oicp = ("Occupied", "Occupied") if n % 2 == 0 else ("Available", "Available")
            started = time.monotonic()
            await cp.status(1, status, evse=1)
            await eventually(lambda oicp=oicp: hub.state.get("DE*ABC*E201*1") == oicp)
            latencies.append(time.monotonic() - started)
    assert "CP16" in bridge.ocpp.sessions  # the flood is still going on
    async with asyncio.timeout(20):
        out, _ = await flooder.communicate()
    sent, answers = map(int, out.split())
    assert flooder.returncode == 0
    assert answers > 0 and sent >= answers
    assert max(latencies) < BOUND_S, latencies
