"""The OCPP-J handshake: path, subprotocol negotiation, unknown chargers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from bridge.app import Bridge
from bridge.ocpp.server import charge_point_id_from_path
from tests.conftest import Events


async def test_unsupported_subprotocol_completes_handshake_then_closes_1002(
    bridge: Bridge, events: Events
) -> None:
    url = f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16"
    async with websockets.connect(url, subprotocols=["ocpp1.5"]) as ws:  # type: ignore[list-item]
        assert ws.response is not None and ws.response.status_code == 101
        assert "Sec-WebSocket-Protocol" not in ws.response.headers
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1002
    (line,) = events.named("ocpp.rejected")
    # every field the log catalogue lists for ocpp.rejected, and what this case adds
    assert {"status", "path", "peer", "reason"} <= set(line)
    assert (line["status"], line["close_code"], line["path"]) == (101, 1002, "/ocpp/CP16")
    assert (line["charge_point_id"], line["offered"]) == ("CP16", ["ocpp1.5"])


async def test_no_subprotocol_offered_closes_1002(bridge: Bridge) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16") as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1002


async def test_server_prefers_201_when_both_offered(bridge: Bridge) -> None:
    url = f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP201"
    async with websockets.connect(url, subprotocols=["ocpp1.6", "ocpp2.0.1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ocpp2.0.1"


@pytest.mark.parametrize("path", ["/ocpp/NOPE", "/ocpp/", "/other/CP16", "/ocpp/CP16/extra"])
async def test_unknown_charger_or_path_is_404(bridge: Bridge, path: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(
            f"ws://127.0.0.1:{bridge.ocpp.port}{path}", subprotocols=["ocpp1.6"]
        )  # type: ignore[list-item]
    assert info.value.response.status_code == 404
    # An unknown charger under profile 0 is told so; a wrong path gets where to connect.
    expected = "Unknown charge point" if path == "/ocpp/NOPE" else "Not an OCPP path: use /ocpp/"
    assert info.value.response.body is not None
    assert info.value.response.body.decode().startswith(expected)


async def test_other_actions_get_a_callerror_quickly(bridge: Bridge) -> None:
    url = f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16"
    async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps([2, "a", "MeterValues", {"connectorId": 1, "meterValue": []}]))
        assert json.loads(await ws.recv())[:3] == [4, "a", "NotSupported"]
        await ws.send(json.dumps([2, "b", "FooBar", {}]))
        assert json.loads(await ws.recv())[:3] == [4, "b", "NotImplemented"]
        await ws.send(json.dumps([2, "c", "Heartbeat", {}]))  # still up
        assert json.loads(await ws.recv())[0] == 3


def test_path_is_url_decoded() -> None:
    assert charge_point_id_from_path("/ocpp/RDAM%20123") == "RDAM 123"
    assert charge_point_id_from_path("/ocpp/CP1/") == "CP1"
    assert charge_point_id_from_path("/ocpp/CP1?x=1") == "CP1"
    assert charge_point_id_from_path("/ocpp/a%2Fb") == "a/b"
    assert charge_point_id_from_path("/ocpp/a/b") is None


async def test_compression_is_off_unless_configured(
    make_bridge: Callable[..., Awaitable[Bridge]],
) -> None:
    plain = await make_bridge()
    url = f"ws://127.0.0.1:{plain.ocpp.port}/ocpp/CP16"
    async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
    await plain.stop()
    deflating = await make_bridge(ocpp={"compression": "deflate"})
    url = f"ws://127.0.0.1:{deflating.ocpp.port}/ocpp/CP16"
    async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        await ws.send(json.dumps([2, "h", "Heartbeat", {}]))
        assert json.loads(await ws.recv())[0] == 3
