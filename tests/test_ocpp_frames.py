"""Malformed, invalid and excessive OCPP-J traffic over a real websocket, both versions.

Each case names the CALLERROR code the OCPP-J spec of that version prescribes (OCPP-J 1.6
§4.2.3, OCPP 2.0.1 Part 4 §4.3); after every bad frame the same connection must still work.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import jsonschema
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bridge.app import Bridge
from bridge.hubsim import HubSimulator
from bridge.status.table import OicpStatus
from tests.conftest import Events, eventually, now_z, pushes

MakeBridge = Callable[..., Awaitable[Bridge]]
CHARGER = {"1.6": "CP16", "2.0.1": "CP201"}
_QUIET = logging.getLogger("tests.client")
_QUIET.setLevel(logging.WARNING)
_QUIET.propagate = False


def raw(port: int, version: str, cp_id: str | None = None) -> Any:
    return websockets.connect(
        f"ws://127.0.0.1:{port}/ocpp/{cp_id or CHARGER[version]}",
        subprotocols=[f"ocpp{version}"],  # type: ignore[list-item]
        logger=_QUIET,
        max_size=None,
    )


async def exchange(ws: ClientConnection, frame: str | bytes) -> list[Any]:
    await ws.send(frame)
    async with asyncio.timeout(5):
        answer: list[Any] = json.loads(await ws.recv())
    return answer


async def still_alive(ws: ClientConnection) -> None:
    assert (await exchange(ws, '[2,"alive","Heartbeat",{}]'))[:2] == [3, "alive"]


def check_call_error(answer: list[Any], unique_id: str, code: str) -> None:
    assert answer[:3] == [4, unique_id, code], answer
    assert len(answer) == 5 and isinstance(answer[3], str) and len(answer[3]) <= 255
    assert isinstance(answer[4], dict)


# (frame, id the answer must carry, 1.6 code, 2.0.1 code)
FRAMING_16_201 = ("FormationViolation", "RpcFrameworkError")
TYPE_16_201 = ("ProtocolError", "MessageTypeNotSupported")
PAYLOAD_16_201 = ("FormationViolation", "FormatViolation")
MALFORMED: list[tuple[str | bytes, str, tuple[str, str]]] = [
    ("this is not json", "-1", FRAMING_16_201),
    ("", "-1", FRAMING_16_201),
    ('{"not": "an array"}', "-1", FRAMING_16_201),
    ("[]", "-1", FRAMING_16_201),
    ('"string"', "-1", FRAMING_16_201),
    ('[2,"m1","Heartbeat"]', "m1", FRAMING_16_201),
    ('[2,"m2","Heartbeat",{},{}]', "m2", FRAMING_16_201),
    ('[9,"m3","Heartbeat",{}]', "m3", TYPE_16_201),
    ('["2","m4","Heartbeat",{}]', "m4", TYPE_16_201),
    ('[true,"m5","Heartbeat",{}]', "m5", TYPE_16_201),
    ('[2,17,"Heartbeat",{}]', "-1", FRAMING_16_201),
    ('[2,"' + "x" * 37 + '","Heartbeat",{}]', "-1", FRAMING_16_201),  # ids are ≤ 36 chars
    ('[2,"m6",42,{}]', "m6", FRAMING_16_201),
    ('[2,"m7","Heartbeat",[]]', "m7", PAYLOAD_16_201),
    ('[2,"m8","Heartbeat",{"x":NaN}]', "-1", FRAMING_16_201),  # NaN is not JSON
    ("[" * 50_000, "-1", FRAMING_16_201),  # too deep to parse
    ('[2,"m9","Heartbeat",{"a":"\\ud800"}]', "m9", PAYLOAD_16_201),  # lone surrogate
    ('[2,"\\udfff","Heartbeat",{}]', "-1", FRAMING_16_201),
    (b"\xff\xfe\x00garbage", "-1", FRAMING_16_201),
]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_malformed_frames_get_the_version_s_callerror(bridge: Bridge, version: str) -> None:
    index = 0 if version == "1.6" else 1
    async with raw(bridge.ocpp.port, version) as ws:
        for frame, unique_id, codes in MALFORMED:
            check_call_error(await exchange(ws, frame), unique_id, codes[index])
        # A UTF-8 binary frame is read like a text frame.
        assert (await exchange(ws, b'[2,"b1","Heartbeat",{}]'))[:2] == [3, "b1"]
        # Results and errors for calls we never made: ignored, no answer (OCPP-J §4.2.2).
        await ws.send('[3,"r1",{}]')
        await ws.send('[4,"e1","GenericError","",{}]')
        await still_alive(ws)  # the next answer is the heartbeat's: nothing came in between


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_unknown_action_vs_known_but_unhandled(bridge: Bridge, version: str) -> None:
    async with raw(bridge.ocpp.port, version) as ws:
        # Not an action of this OCPP version: NotImplemented ("not known by receiver").
        check_call_error(await exchange(ws, '[2,"a1","FooBar",{}]'), "a1", "NotImplemented")
        check_call_error(
            await exchange(ws, '[2,"a2","FooBar",{"x":[1,2]}]'), "a2", "NotImplemented"
        )
        # Defined by the version, not handled by this central system: NotSupported.
        check_call_error(
            await exchange(ws, '[2,"a3","Reset",{"type":"Hard"}]'), "a3", "NotSupported"
        )
        await still_alive(ws)


STATUS_16 = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
STATUS_201 = {"timestamp": "2026-11-21T10:00:00Z", "connectorStatus": "Available", "evseId": 1,
              "connectorId": 1}  # fmt: skip
BAD_STATUS: dict[str, list[tuple[dict[str, Any], str]]] = {
    "1.6": [
        (
            {k: v for k, v in STATUS_16.items() if k != "connectorId"},
            "OccurenceConstraintViolation",
        ),
        ({**STATUS_16, "connectorId": "1"}, "TypeConstraintViolation"),
        ({**STATUS_16, "connectorId": 2**31}, "TypeConstraintViolation"),
        ({**STATUS_16, "status": "Bogus"}, "PropertyConstraintViolation"),
        ({**STATUS_16, "info": "x" * 51}, "PropertyConstraintViolation"),
        ({**STATUS_16, "extra": 1}, "FormationViolation"),
        ({**STATUS_16, "timestamp": "yesterday"}, "TypeConstraintViolation"),
        ({**STATUS_16, "timestamp": "2026-13-01T10:00:00Z"}, "TypeConstraintViolation"),
        ({**STATUS_16, "timestamp": "2026-02-29T10:00:00Z"}, "TypeConstraintViolation"),
        ({**STATUS_16, "timestamp": "2026-11-21T10:00:00"}, "TypeConstraintViolation"),
        ({**STATUS_16, "timestamp": "٢٠٢٦-11-21T10:00:00Z"}, "TypeConstraintViolation"),
    ],
    "2.0.1": [
        (
            {k: v for k, v in STATUS_201.items() if k != "timestamp"},
            "OccurrenceConstraintViolation",
        ),
        ({**STATUS_201, "evseId": "1"}, "TypeConstraintViolation"),
        ({**STATUS_201, "evseId": 2**40}, "TypeConstraintViolation"),
        ({**STATUS_201, "connectorStatus": "Charging"}, "PropertyConstraintViolation"),
        ({**STATUS_201, "extra": 1}, "FormatViolation"),
        ({**STATUS_201, "timestamp": "2026-11-31T10:00:00Z"}, "TypeConstraintViolation"),
        ({**STATUS_201, "timestamp": "2026-11-21 10:00:00Z"}, "TypeConstraintViolation"),
        ({**STATUS_201, "evseId": -1}, "PropertyConstraintViolation"),
    ],
}


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_schema_violations_are_answered_and_record_nothing(
    bridge: Bridge, hub: HubSimulator, version: str
) -> None:
    evse_id = "DE*ABC*E16*1" if version == "1.6" else "DE*ABC*E201*1"
    async with raw(bridge.ocpp.port, version) as ws:
        for n, (payload, code) in enumerate(BAD_STATUS[version]):
            frame = json.dumps([2, f"s{n}", "StatusNotification", payload])
            check_call_error(await exchange(ws, frame), f"s{n}", code)
        assert bridge.engine.status(evse_id) is OicpStatus.UNKNOWN
        assert not bridge.outbox and pushes(hub) == []
        # The same connection still records a valid report.
        good = STATUS_16 if version == "1.6" else {**STATUS_201, "timestamp": now_z()}
        assert await exchange(ws, json.dumps([2, "ok", "StatusNotification", good])) == [
            3, "ok", {}
        ]  # fmt: skip
        await eventually(lambda: pushes(hub) == [("insert", evse_id, "Available")])


def _response_validator(version: str, action: str) -> jsonschema.protocols.Validator:
    package = "ocpp.v16" if version == "1.6" else "ocpp.v201"
    folder = importlib.resources.files(package) / "schemas"
    schema = json.loads((folder / f"{action}Response.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    validator: jsonschema.protocols.Validator = cls(
        schema, format_checker=jsonschema.FormatChecker()
    )
    return validator


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_every_response_validates_against_the_ocpp_schema(
    bridge: Bridge, version: str
) -> None:
    if version == "1.6":
        calls = [
            ("BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}),
            ("Heartbeat", {}),
            ("StatusNotification", STATUS_16),
        ]
    else:
        event = {"eventId": 1, "timestamp": now_z(), "trigger": "Delta", "actualValue": "Occupied",
                 "eventNotificationType": "HardWiredNotification",
                 "component": {"name": "Connector", "evse": {"id": 1, "connectorId": 1}},
                 "variable": {"name": "AvailabilityState"}}  # fmt: skip
        calls = [
            ("BootNotification",
             {"chargingStation": {"model": "M", "vendorName": "V"}, "reason": "PowerUp"}),
            ("Heartbeat", {}),
            ("StatusNotification", STATUS_201),
            ("NotifyEvent", {"generatedAt": now_z(), "seqNo": 0, "eventData": [event]}),
        ]  # fmt: skip
    async with raw(bridge.ocpp.port, version) as ws:
        for n, (action, payload) in enumerate(calls):
            answer = await exchange(ws, json.dumps([2, f"r{n}", action, payload]))
            assert answer[:2] == [3, f"r{n}"], answer
            _response_validator(version, action).validate(answer[2])
            if "currentTime" in answer[2]:
                assert answer[2]["currentTime"].endswith("Z")  # UTC


async def test_oversized_frame_closes_with_1009(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(ocpp={"max_message_size": 4096})
    async with raw(bridge.ocpp.port, "1.6") as ws:
        # Just under the limit: an ordinary bad frame.
        check_call_error(await exchange(ws, "x" * 4000), "-1", "FormationViolation")
        await ws.send('[2,"big","Heartbeat",{"pad":"' + "x" * 5000 + '"}]')
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()
        assert ws.close_code == 1009


async def test_fast_sender_is_slowed_down_not_dropped(
    make_bridge: MakeBridge, events: Events
) -> None:
    bridge = await make_bridge(
        ocpp={"security": {"max_messages_per_second": 100, "message_burst": 5}}
    )
    count = 40
    async with raw(bridge.ocpp.port, "1.6") as ws:
        for n in range(count):  # all sent at once, nothing awaited in between
            await ws.send(json.dumps([2, f"h{n}", "Heartbeat", {}]))
        answers = []
        for _ in range(count):
            async with asyncio.timeout(5):
                answers.append(json.loads(await ws.recv()))
        assert [a[:2] for a in answers] == [[3, f"h{n}"] for n in range(count)]  # all, in order
        await still_alive(ws)
    (throttled,) = events.named("ocpp.throttled")  # once per window, not once per message
    assert throttled["charge_point_id"] == "CP16" and throttled["burst"] == 5


async def test_silent_charger_is_closed_after_the_idle_limit(bridge: Bridge) -> None:
    # The configured minimum heartbeat interval is 10 s; shrink it here to keep the test short.
    bridge.ocpp.settings = bridge.ocpp.settings.model_copy(
        update={"heartbeat_interval": 0, "silence_margin": 0.3}
    )
    async with raw(bridge.ocpp.port, "1.6") as ws:
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()
        assert ws.close_code == 1001


async def test_the_idle_limit_counts_from_the_last_message(bridge: Bridge) -> None:
    # The limit is watched by one timer per limit, not per message: a charger that talks
    # more often than the limit stays, and silence is measured from its last message.
    bridge.ocpp.settings = bridge.ocpp.settings.model_copy(
        update={"heartbeat_interval": 0, "silence_margin": 0.4}
    )
    loop = asyncio.get_running_loop()
    async with raw(bridge.ocpp.port, "1.6") as ws:
        for _ in range(8):  # 1.2 s in all, three times the limit
            await asyncio.sleep(0.15)
            await still_alive(ws)
        last = loop.time()
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()
        assert ws.close_code == 1001
        assert 0.35 <= loop.time() - last < 2.0


async def test_stalled_handshakes_time_out(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(ocpp={"security": {"handshake_timeout": 0.3}})
    port = bridge.ocpp.port
    silent = await asyncio.open_connection("127.0.0.1", port)
    partial = await asyncio.open_connection("127.0.0.1", port)
    partial[1].write(b"GET /ocpp/CP16 HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
    for reader, writer in (silent, partial):
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the bridge
        writer.close()
    async with raw(port, "1.6") as ws:  # the server is fine
        await still_alive(ws)
