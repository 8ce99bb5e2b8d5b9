"""Proxy mode: frames pass unchanged both ways, closes follow each other, limits still hold.

The fidelity test runs the bridge, the hub simulator and a raw websocket CSMS on an event loop
in a background thread and drives the charger from the test thread with websockets' sync
client, so hypothesis can generate frames synchronously (as in test_ocpp_fuzz).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from bridge.app import Bridge
from bridge.devtools.csms_sim import CsmsSimulator
from bridge.hubsim import HubSimulator
from tests.conftest import Events, eventually, pushes, settings_for
from tests.procs import RawCharger
from tests.proxied import proxy_ocpp, session_charger

T = TypeVar("T")
MakeBridge = Callable[..., Awaitable[Bridge]]
Frame = str | bytes
UNLIMITED = {"max_messages_per_second": 1e6, "message_burst": 10**6}


class RawCsms:
    """A websocket server that records every frame and can send any; no OCPP logic at all."""

    def __init__(self) -> None:
        self.frames: queue.Queue[Frame] = queue.Queue()
        self.connections: dict[str, ServerConnection] = {}
        self.connected = threading.Event()
        self.closed: list[tuple[str, int | None, str | None]] = []
        self._server: Any = None
        self.url = ""

    async def start(self) -> str:
        self._server = await serve(self._handle, "127.0.0.1", 0,
                                   subprotocols=["ocpp1.6", "ocpp2.0.1"])  # type: ignore[list-item]  # fmt: skip
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/csms/{{charge_point_id}}"
        return self.url

    async def _handle(self, connection: ServerConnection) -> None:
        cp_id = (connection.request.path if connection.request else "").rsplit("/", 1)[-1]
        self.connections[cp_id] = connection
        self.connected.set()
        try:
            async for frame in connection:
                self.frames.put(frame)
        except ConnectionClosed:
            pass
        self.closed.append((cp_id, connection.close_code, connection.close_reason))

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def raw_csms() -> AsyncIterator[RawCsms]:
    csms = RawCsms()
    await csms.start()
    yield csms
    await csms.stop()


# -- fidelity --------------------------------------------------------------------------------------
@dataclass
class Rig:
    loop: asyncio.AbstractEventLoop
    csms: RawCsms
    bridge: Bridge
    hub: HubSimulator
    errors: list[dict[str, Any]] = field(default_factory=list)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    from bridge.ops.logging import add_tap, remove_tap

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="proxy-loop", daemon=True)
    thread.start()
    tmp = tmp_path_factory.mktemp("proxy-rig")

    async def start() -> tuple[RawCsms, Bridge, HubSimulator]:
        hub = HubSimulator()
        await hub.start()
        csms = RawCsms()
        url = await csms.start()
        ocpp = {**proxy_ocpp(url), "security": UNLIMITED}
        bridge = Bridge(settings_for(tmp, hub.base_url, ocpp=ocpp))
        await bridge.start()
        return csms, bridge, hub

    csms, bridge, hub = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    rig = Rig(loop, csms, bridge, hub)

    def errors(event: dict[str, Any]) -> None:
        if event.get("level") in ("error", "critical"):
            rig.errors.append(event)

    add_tap(errors)
    try:
        yield rig
    finally:
        remove_tap(errors)

        async def stop() -> None:
            await bridge.stop()
            await csms.stop()
            await hub.stop()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=20)
        | st.floats(allow_nan=False, allow_infinity=False)
    )

    def nest(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)

    return st.recursive(scalars, nest, max_leaves=12)


def _ocpp_frames() -> st.SearchStrategy[str]:
    status = st.fixed_dictionaries({
        "connectorId": st.integers(0, 3), "errorCode": st.just("NoError"),
        "status": st.sampled_from(["Available", "Charging", "Faulted", "Bogus"]),
    })  # fmt: skip
    call = st.tuples(st.text(min_size=1, max_size=36), st.sampled_from(
        ["StatusNotification", "Heartbeat", "Authorize", "DataTransfer", "Made-Up"]),
        status | _json_values()).map(lambda t: json.dumps([2, t[0], t[1], t[2]]))  # fmt: skip
    result = st.tuples(st.text(max_size=36), _json_values()).map(
        lambda t: json.dumps([3, t[0], t[1]]))  # fmt: skip
    error = st.tuples(st.text(max_size=36), st.text(max_size=30)).map(
        lambda t: json.dumps([4, t[0], "GenericError", t[1], {}]))  # fmt: skip
    return call | result | error


def _odd_whitespace(frames: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """The same JSON with whitespace a parser-and-serialiser would not keep."""
    pads = st.sampled_from(["", " ", "\n", "\t", "\r\n", "  \n\t "])
    return st.tuples(pads, frames, pads).map(
        lambda t: t[0] + t[1].replace(",", t[0] + "," + t[2]).replace("[", "[" + t[2]) + t[2]
    )


def _large(limit: int) -> st.SearchStrategy[Frame]:
    """Frames of many KiB (UTF-8 bytes ≤ ``limit``), text or binary, built from a short seed."""

    def text(seed: str, size: int) -> str:
        # Sized by the escaped form: JSON writes control characters as \u00XX (6 bytes).
        piece = json.dumps(seed, ensure_ascii=False)[1:-1]
        count = (size - 40) // len(piece.encode())
        return '[2,"big","DataTransfer",{"data":"' + piece * count + '"}]'

    sizes = st.integers(1_000, limit)
    return (st.tuples(st.text(min_size=1, max_size=4), sizes).map(lambda t: text(*t))
            | st.tuples(st.binary(min_size=1, max_size=8), sizes)
            .map(lambda t: (t[0] * (t[1] // len(t[0])))[: t[1]]))  # fmt: skip


def frames(limit: int) -> st.SearchStrategy[Frame]:
    ocpp = _ocpp_frames()
    return st.one_of(
        ocpp,
        _odd_whitespace(ocpp),
        st.text(max_size=200),  # unicode, not JSON at all (lone surrogates cannot be text frames)
        _json_values().map(json.dumps),
        st.binary(max_size=200),
        _large(limit),
    )


def _kinds(frames: list[Frame]) -> list[tuple[type, Frame]]:
    return [(type(f), f) for f in frames]


QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large,
         HealthCheck.large_base_example]  # fmt: skip


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=QUIET)
@given(to_csms=st.lists(frames(60_000), max_size=8),
       to_charger=st.lists(frames(200_000), max_size=8))  # fmt: skip
def test_random_frames_arrive_byte_identical_and_in_order_both_ways(
    rig: Rig, to_csms: list[Frame], to_charger: list[Frame]
) -> None:
    rig.csms.connected.clear()
    port = rig.bridge.ocpp.port
    with sync_connect(f"ws://127.0.0.1:{port}/ocpp/CP16", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                      max_size=None, open_timeout=10) as charger:  # fmt: skip
        assert rig.csms.connected.wait(10)
        upstream = rig.csms.connections["CP16"]

        async def send_all() -> None:
            for frame in to_charger:
                await upstream.send(frame)

        sending = asyncio.run_coroutine_threadsafe(send_all(), rig.loop)  # both ways at once
        for frame in to_csms:
            charger.send(frame)
        arrived = [rig.csms.frames.get(timeout=5) for _ in to_csms]
        received = [charger.recv(timeout=5) for _ in to_charger]
        sending.result(10)
    assert _kinds(arrived) == _kinds(to_csms)
    assert _kinds(received) == _kinds(to_charger)
    assert rig.csms.frames.empty()
    assert rig.errors == []


# -- closing ---------------------------------------------------------------------------------------
async def test_charger_close_code_and_reason_reach_the_csms(
    make_bridge: MakeBridge, raw_csms: RawCsms
) -> None:
    bridge = await make_bridge(ocpp=proxy_ocpp(raw_csms.url))
    async with websockets.connect(f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16",
                                  subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]  # fmt: skip
        await eventually(lambda: "CP16" in raw_csms.connections)
        await ws.close(4001, "charger says bye")
    await eventually(lambda: raw_csms.closed == [("CP16", 4001, "charger says bye")])
    await eventually(lambda: bridge.ocpp.sessions == {})


async def test_csms_closing_mid_session_closes_the_charger_with_its_code(
    make_bridge: MakeBridge, hub: HubSimulator, events: Events
) -> None:
    async with CsmsSimulator() as csms:
        bridge = await make_bridge(ocpp=proxy_ocpp(csms.url))
        async with session_charger(bridge.ocpp.port, "CP16") as cp:
            await cp.boot()
            await cp.status(1, "Charging")
            await csms.disconnect("CP16", 1012, "CSMS restarting")
            await eventually(lambda: cp.ws.close_code == 1012)
            assert cp.ws.close_reason == "CSMS restarting"
        await eventually(lambda: bridge.ocpp.sessions == {})
    assert pushes(hub) == [("insert", "DE*ABC*E16*1", "Occupied")]  # confirmed: kept
    line = events.named("charger.disconnected")[-1]
    assert line["closed_by"] == "csms" and line["code"] == 1012 and line["mode"] == "proxy"


async def test_charger_lost_without_close_frame_is_1001_at_the_csms(
    make_bridge: MakeBridge, raw_csms: RawCsms
) -> None:
    bridge = await make_bridge(ocpp=proxy_ocpp(raw_csms.url))
    ws = await websockets.connect(f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16",
                                  subprotocols=["ocpp1.6"])  # type: ignore[list-item]  # fmt: skip
    await eventually(lambda: "CP16" in raw_csms.connections)
    ws.transport.abort()  # the charger's link dies: no close frame
    await eventually(lambda: raw_csms.closed == [("CP16", 1001, "charger connection lost")])
    assert bridge.ocpp.proxy is not None
    assert bridge.ocpp.proxy.stats.errors["abnormal_close"] == 1


async def test_bridge_shutdown_closes_both_sides_with_1001(
    make_bridge: MakeBridge, raw_csms: RawCsms
) -> None:
    bridge = await make_bridge(ocpp=proxy_ocpp(raw_csms.url))
    async with websockets.connect(f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16",
                                  subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]  # fmt: skip
        await eventually(lambda: "CP16" in raw_csms.connections)
        await bridge.stop()
        assert ws.close_code == 1001
    await eventually(lambda: raw_csms.closed == [("CP16", 1001, "server shutting down")])


# -- limits ----------------------------------------------------------------------------------------
async def test_frame_over_the_limit_closes_both_with_1009(
    make_bridge: MakeBridge, raw_csms: RawCsms
) -> None:
    ocpp = {**proxy_ocpp(raw_csms.url), "max_message_size": 4096}
    bridge = await make_bridge(ocpp=ocpp)
    async with websockets.connect(f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16",
                                  subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]  # fmt: skip
        await eventually(lambda: "CP16" in raw_csms.connections)
        await ws.send('[2,"1","DataTransfer",{"data":"' + "x" * 5000 + '"}]')
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1009
    await eventually(lambda: len(raw_csms.closed) == 1)
    assert raw_csms.closed[0][1] == 1009
    assert raw_csms.frames.empty()  # nothing of it reached the CSMS


async def test_csms_frame_over_its_limit_closes_both_with_1009(
    make_bridge: MakeBridge, raw_csms: RawCsms
) -> None:
    bridge = await make_bridge(ocpp=proxy_ocpp(raw_csms.url, max_message_size=2048))
    async with websockets.connect(f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16",
                                  subprotocols=["ocpp1.6"], max_size=None) as ws:  # type: ignore[list-item]  # fmt: skip
        await eventually(lambda: "CP16" in raw_csms.connections)
        await raw_csms.connections["CP16"].send('[2,"1","DataTransfer",{"d":"' + "y" * 3000 + '"}]')
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)  # nothing of it reaches the charger
        assert ws.close_code == 1009
    await eventually(lambda: len(raw_csms.closed) == 1)
    assert raw_csms.closed[0][1] == 1009


async def test_message_budget_slows_a_flooding_charger_and_drops_nothing(
    make_bridge: MakeBridge, raw_csms: RawCsms, events: Events
) -> None:
    ocpp = {**proxy_ocpp(raw_csms.url),
            "security": {"max_messages_per_second": 40, "message_burst": 5}}  # fmt: skip
    bridge = await make_bridge(ocpp=ocpp)
    async with websockets.connect(f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16",
                                  subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]  # fmt: skip
        started = asyncio.get_running_loop().time()
        sent = [f'[2,"{n}","Heartbeat",{{}}]' for n in range(25)]
        for frame in sent:
            await ws.send(frame)
        got = [await asyncio.to_thread(raw_csms.frames.get, True, 5) for _ in sent]
        took = asyncio.get_running_loop().time() - started
    assert got == sent
    assert took >= 0.4  # 20 frames over the burst at 40/s
    assert len(events.named("ocpp.throttled")) == 1


async def test_unparsable_frames_are_relayed_and_logged_once_a_minute(
    make_bridge: MakeBridge, raw_csms: RawCsms, events: Events
) -> None:
    bridge = await make_bridge(ocpp=proxy_ocpp(raw_csms.url))
    charger = await RawCharger.connect(bridge.ocpp.port, "CP16")
    for frame in ("not json", "[9,1]", '{"an": "object"}'):
        await charger.ws.send(frame)
        assert await asyncio.to_thread(raw_csms.frames.get, True, 5) == frame
    await charger.close()
    lines = events.named("proxy.unparsable")
    assert len(lines) == 1 and lines[0]["frames"] == 1 and lines[0]["direction"] == "to_csms"
    assert bridge.ocpp.proxy is not None
    assert bridge.ocpp.proxy.stats.errors["unparsable"] == 3


async def test_charger_leaving_during_the_handshake_closes_its_csms_connection(
    make_bridge: MakeBridge,
) -> None:
    closed: list[tuple[int | None, str | None]] = []

    async def slow_accept(connection: ServerConnection, request: Any) -> None:
        await asyncio.sleep(0.5)  # the CSMS takes its time; the charger does not wait

    async def handler(connection: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await connection.recv()
        closed.append((connection.close_code, connection.close_reason))

    async with serve(handler, "127.0.0.1", 0, process_request=slow_accept,
                     subprotocols=["ocpp1.6"]) as csms:  # type: ignore[list-item]  # fmt: skip
        port = next(iter(csms.sockets)).getsockname()[1]
        bridge = await make_bridge(ocpp=proxy_ocpp(f"ws://127.0.0.1:{port}/x/{{charge_point_id}}"))
        _, writer = await asyncio.open_connection("127.0.0.1", bridge.ocpp.port)
        writer.write(
            b"GET /ocpp/CP16 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
        )
        await asyncio.sleep(0.1)
        writer.close()  # gone before the CSMS answered
        await eventually(lambda: closed == [(1001, "charger went away")])
        assert bridge.ocpp.proxy is not None and bridge.ocpp.proxy.connections == 0
        assert bridge.ocpp.sessions == {}
