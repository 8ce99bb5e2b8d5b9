"""Limits of the OCPP port against connection floods: per-address connections, TLS handshakes
in progress, and the memory of handshakes that time out.

Bounded: a few dozen sockets each, handshake timeouts of a fraction of a second.
"""

from __future__ import annotations

import asyncio
import gc
import json
import ssl
import time
import weakref
from asyncio import sslproto
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme
import websockets

from bridge.app import Bridge
from bridge.ocpp.admission import Admission
from bridge.ocpp.connection import TLS_READ_BUFFER, Sweeper
from tests.conftest import Events, eventually

MakeBridge = Callable[..., Awaitable[Bridge]]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp / "server.key"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    return {"tls_cert": tmp / "server.pem", "tls_key": tmp / "server.key", "ca": tmp / "ca.pem"}


def server_files(files: dict[str, Path]) -> dict[str, Path]:
    return {"tls_cert": files["tls_cert"], "tls_key": files["tls_key"]}


@pytest.fixture
def gc_as_in_production() -> Iterator[None]:
    """The GC settings of `bridge run` (``cli._tune_gc``) taken to the extreme: no automatic
    collection at all. Memory must come back by reference counting or the bridge's own sweeps."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def idle_sockets(
    port: int, count: int, host: str = "127.0.0.1"
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return [
        await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0)) for _ in range(count)
    ]


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            return await reader.read() == b""
    except (TimeoutError, ConnectionError):
        return False


@pytest.fixture
async def sockets() -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    yield opened
    for _, writer in opened:
        writer.close()


def ssl_protocols() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, sslproto.SSLProtocol))


async def test_timed_out_tls_handshakes_free_their_memory_without_the_cyclic_gc(
    make_bridge: MakeBridge,
    tls_files: dict[str, Path],
    gc_as_in_production: None,
    sockets: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    events: Events,
) -> None:
    """Each idle TLS connection holds asyncio's SSL protocol (~300 KiB of buffers); when its
    handshake times out that must be freed at once, not left in a reference cycle."""
    bridge = await make_bridge(
        ocpp={"security": {**server_files(tls_files), "handshake_timeout": 0.3}},
    )
    before = ssl_protocols()
    sockets += await idle_sockets(bridge.ocpp.port, 20)
    await eventually(lambda: bridge.ocpp.admission.handshaking == 20)
    assert ssl_protocols() - before == 20
    for reader, _ in sockets:
        assert await closed_by_server(reader, 5.0)
    (failed,) = events.named("ocpp.tls_failed")  # one line per address and minute
    assert "taking longer than 0.3 seconds" in failed["reason"]
    await eventually(lambda: bridge.ocpp.admission.handshaking == 0)
    await asyncio.sleep(0.05)  # the transports' close callbacks
    assert ssl_protocols() - before == 0
    assert bridge.ocpp.admission.open_from("127.0.0.1") == 0


async def test_tls_handshakes_in_progress_are_capped_and_the_excess_refused_at_once(
    make_bridge: MakeBridge,
    tls_files: dict[str, Path],
    sockets: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
    events: Events,
) -> None:
    caps = {"max_tls_handshakes": 15, "max_tls_handshakes_per_address": 10}
    bridge = await make_bridge(
        ocpp={"security": {**server_files(tls_files), "handshake_timeout": 3.0, **caps}},
    )
    port = bridge.ocpp.port
    sockets += await idle_sockets(port, 10)
    await eventually(lambda: bridge.ocpp.admission.handshaking == 10)
    # The address has its 10: the next ones are closed at once, long before the timeout.
    extra = await idle_sockets(port, 5)
    sockets += extra
    started = time.monotonic()
    for reader, _ in extra:
        assert await closed_by_server(reader, 1.0)
    assert time.monotonic() - started < 1.0
    # Another address still gets its handshakes, up to the overall cap.
    others = await idle_sockets(port, 6, host="127.0.0.2")
    sockets += others
    await eventually(lambda: bridge.ocpp.admission.handshaking == 15)
    assert await closed_by_server(others[-1][0], 1.0)
    metrics = await scrape(bridge)
    assert 'bridge_ocpp_connections_refused_total{reason="address_handshake_limit"} 5.0' in metrics
    assert 'bridge_ocpp_connections_refused_total{reason="handshake_limit"} 1.0' in metrics
    (line,) = events.named("ocpp.connections_refused")  # one line per window, not per socket
    assert line["refused"] == {"address_handshake_limit": 1}
    # A handshake slot that frees up is usable again.
    for _, writer in sockets[:10]:
        writer.close()
    await eventually(lambda: bridge.ocpp.admission.handshaking == 5)


async def test_open_connections_per_address_are_capped(
    make_bridge: MakeBridge,
    sockets: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
) -> None:
    bridge = await make_bridge(ocpp={"security": {"max_connections_per_address": 3}})
    port = bridge.ocpp.port
    sockets += await idle_sockets(port, 3)
    await eventually(lambda: bridge.ocpp.admission.open_from("127.0.0.1") == 3)
    (refused,) = await idle_sockets(port, 1)
    sockets.append(refused)
    assert await closed_by_server(refused[0], 1.0)  # at once, not after handshake_timeout
    # A charger at another address is not affected.
    url = f"ws://127.0.0.1:{port}/ocpp/CP16"
    async with websockets.connect(url, subprotocols=["ocpp1.6"], local_addr=("127.0.0.2", 0)) as ws:  # type: ignore[list-item]
        await ws.send('[2,"1","Heartbeat",{}]')
        assert (await ws.recv()).startswith("[3,")
    # A closed connection frees its place.
    sockets[0][1].close()
    await eventually(lambda: bridge.ocpp.admission.open_from("127.0.0.1") == 2)
    async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
        await ws.send('[2,"2","Heartbeat",{}]')
        assert (await ws.recv()).startswith("[3,")
    metrics = await scrape(bridge)
    assert 'bridge_ocpp_connections_refused_total{reason="address_limit"} 1.0' in metrics


def test_admission_counts_ipv6_per_64_and_forgets_closed_addresses() -> None:
    admission = Admission(per_address=2, handshakes=10, handshakes_per_address=1)
    a = admission.open("2001:db8:1:2::1")
    b = admission.open("2001:db8:1:2:ffff::2")
    assert a is not None and a == b
    assert admission.open("2001:db8:1:2::3") is None  # same /64: full
    assert admission.open("2001:db8:1:3::1") is not None  # next /64
    assert admission.start_handshake(a) and not admission.start_handshake(a)
    admission.end_handshake(a)
    admission.close(a)
    admission.close(a)
    assert admission.open_from("2001:db8:1:2::1") == 0
    assert a not in admission._open  # no entry kept for every address that ever connected


def test_sweeper_collects_young_garbage_of_discarded_connections(
    gc_as_in_production: None,
) -> None:
    class Cyclic:
        def __init__(self) -> None:
            self.me = self

    sweeper = Sweeper(every=100, interval=60.0)
    garbage = [weakref.ref(Cyclic()) for _ in range(100)]
    for _ in range(99):
        sweeper.discarded()
    assert all(ref() is not None for ref in garbage)  # gc disabled: nothing collects them
    sweeper.discarded()
    assert all(ref() is None for ref in garbage)
    # At most once per interval, however many connections are discarded.
    more = [weakref.ref(Cyclic()) for _ in range(100)]
    for _ in range(200):
        sweeper.discarded()
    assert all(ref() is not None for ref in more)


async def scrape(bridge: Bridge) -> str:
    assert bridge.ops_server is not None
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{bridge.ops_server.port}/metrics")
    return response.text


async def test_tls_connections_read_through_a_small_buffer(
    make_bridge: MakeBridge, tls_files: dict[str, Path]
) -> None:
    """asyncio's 256 KiB read buffer per TLS connection is 32 KiB here; frames larger than it
    still arrive whole."""
    bridge = await make_bridge(
        ocpp={"security": server_files(tls_files), "max_message_size": 65536}
    )
    client = ssl.create_default_context(cafile=str(tls_files["ca"]))
    url = f"wss://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16"
    async with websockets.connect(url, subprotocols=["ocpp1.6"], ssl=client) as ws:  # type: ignore[list-item]
        await eventually(lambda: "CP16" in bridge.ocpp.sessions)
        transport = bridge.ocpp.sessions["CP16"].transport
        assert len(transport._ssl_protocol._ssl_buffer) == TLS_READ_BUFFER  # type: ignore[attr-defined]
        big = {"vendorId": "bench", "data": "x" * 60_000}
        await ws.send(json.dumps([2, "big", "DataTransfer", big]))
        answer = json.loads(await ws.recv())
        assert answer[1] == "big"
