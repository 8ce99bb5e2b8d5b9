"""The ops port cannot take the descriptors chargers need: idle connections are closed soon,
their number is capped, a reserve of descriptors stays for chargers, and failed accepts are
logged as a summary. Bounded: tens of sockets, sub-second timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import websockets

from bridge.app import Bridge
from bridge.hubsim import HubSimulator
from bridge.ops.guard import ConnectionGuard
from tests.procs import BridgeProcess, RawCharger, write_config

MakeBridge = Callable[..., Awaitable[Bridge]]
Sockets = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


@pytest.fixture
async def sockets() -> AsyncIterator[Sockets]:
    opened: Sockets = []
    yield opened
    for _, writer in opened:
        writer.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            return await reader.read() == b""
    except (TimeoutError, ConnectionError):
        return False


async def test_idle_ops_connections_are_capped_and_closed_soon(
    make_bridge: MakeBridge, sockets: Sockets
) -> None:
    bridge = await make_bridge(ops={"max_connections": 5, "keepalive_timeout": 0.5})
    assert bridge.ops_server is not None and bridge.ops_server.guard is not None
    port = bridge.ops_server.port
    for _ in range(5):
        sockets.append(await asyncio.open_connection("127.0.0.1", port))
    # A half-sent request holds its connection no longer than an idle one.
    sockets[0][1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    extra = await asyncio.open_connection("127.0.0.1", port)
    sockets.append(extra)
    started = time.monotonic()
    assert await closed_within(extra[0], 0.4)  # over the cap: closed at once
    # Chargers are not affected while the ops port is full.
    async with websockets.connect(
        f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
    ) as ws:
        await ws.send('[2,"1","Heartbeat",{}]')
        assert (await ws.recv()).startswith("[3,")
    # Idle and half-sent connections go after keepalive_timeout (aiohttp's default: an hour).
    for reader, _ in sockets[:5]:
        assert await closed_within(reader, 3.0)
    assert time.monotonic() - started < 3.0
    async with httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{port}/healthz")
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert health.status_code == 200
    assert 'bridge_ops_connections_refused_total{reason="connection_limit"} 1.0' in metrics
    assert bridge.ops_server.guard.open <= 1


async def test_one_address_cannot_take_every_ops_place(
    make_bridge: MakeBridge, sockets: Sockets
) -> None:
    bridge = await make_bridge(ops={"max_connections": 10, "max_connections_per_address": 3})
    assert bridge.ops_server is not None
    port = bridge.ops_server.port
    for _ in range(4):
        sockets.append(await asyncio.open_connection("127.0.0.1", port))
    assert await closed_within(sockets[-1][0], 0.5)
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    assert 'bridge_ops_connections_refused_total{reason="address_limit"} 1.0' in metrics


async def test_ops_port_keeps_a_descriptor_reserve_for_chargers(
    make_bridge: MakeBridge, sockets: Sockets
) -> None:
    bridge = await make_bridge()
    assert bridge.ops_server is not None and bridge.ops_server.guard is not None
    guard = bridge.ops_server.guard
    port = bridge.ops_server.port
    probe = await asyncio.open_connection("127.0.0.1", port)
    sockets.append(probe)
    await asyncio.sleep(0.05)
    assert guard.open == 1
    # Pretend the open-file limit is 16: this process uses more than 16 - 2 descriptors, so
    # the next connection falls into the reserve (at most limit // 8 = 2 of 16).
    guard.file_limit = lambda: 16
    refused = await asyncio.open_connection("127.0.0.1", port)
    sockets.append(refused)
    assert await closed_within(refused[0], 0.5)
    assert guard.refused["descriptor_reserve"] == 1
    assert guard.open == 1  # the probe


def test_guard_counts_what_it_lets_in() -> None:
    made: list[asyncio.Protocol] = []

    def factory() -> asyncio.Protocol:
        made.append(asyncio.Protocol())
        return made[-1]

    guard = ConnectionGuard(factory, max_connections=2, per_address=2, descriptor_reserve=0)
    first, _ = guard(), guard()
    assert guard.open == 2 and len(made) == 2
    guard()  # over the cap: the wrapped factory is not even called
    assert len(made) == 2
    first.connection_lost(None)
    first.connection_lost(None)  # counted once
    assert guard.open == 1


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_failed_accepts_are_summarised_not_logged_each(
    tmp_path: Path, hub: HubSimulator, loop: str
) -> None:
    """The process out of descriptors: asyncio logged every failed accept with a traceback
    (hundreds of thousands of lines); now one line per window, and chargers get in again.
    uvloop logs none (and so gives no summary either); chargers get in again as well."""
    config = write_config(tmp_path / "bridge.yaml", {
        "runtime": {"event_loop": loop},
        "ocpp": {"host": "127.0.0.1", "port": 0, "listen_backlog": 512},
        "oicp": {"base_url": hub.base_url, "operator_id": "DE*ABC"},
        "state": {"database": tmp_path / "bridge.db"},
        "fullload": {"enabled": False}, "ops": {"host": "127.0.0.1", "port": 0},
        "chargers": {"CP16": {"evses": {1: "DE*ABC*E16*1"}}},
    })  # fmt: skip
    bridge = await BridgeProcess(config, nofile=(96, 96)).start()
    flood: Sockets = []
    try:
        for _ in range(300):  # beyond the 96 descriptors: the kernel queues the rest
            flood.append(await asyncio.open_connection("127.0.0.1", bridge.ocpp_port))
        await asyncio.sleep(2.5)
        for _, writer in flood:
            writer.close()
        flood.clear()
        await asyncio.sleep(1.5)  # asyncio accepts again after 1 s
        charger = await RawCharger.connect(bridge.ocpp_port, "CP16")
        assert "currentTime" in await charger.call("Heartbeat", {})
        await charger.close()
    finally:
        for _, writer in flood:
            writer.close()
        await bridge.terminate()
    raw = [e for e in bridge.events if "out of system resource" in str(e.get("event", ""))]
    summaries = bridge.named("bridge.accept_failed")
    assert raw == []
    assert bridge.named("bridge.started")[0]["event_loop"] == loop
    if loop == "uvloop":
        assert len(bridge.events) < 200  # no line per failed accept
        return
    assert 1 <= len(summaries) <= 2 and summaries[0]["failed"] >= 1
    assert "Too many open files" in summaries[0]["error"]
