"""bridge.ocpp.wire.send_now: the frame websockets' send() would write, or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from bridge.ocpp.wire import send_now


@pytest.fixture
async def pair() -> AsyncIterator[tuple[ServerConnection, ClientConnection]]:
    accepted: asyncio.Queue[ServerConnection] = asyncio.Queue()
    done = asyncio.Event()

    async def handler(connection: ServerConnection) -> None:
        await accepted.put(connection)
        await done.wait()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as client:
            yield await accepted.get(), client
            done.set()


async def test_an_open_connection_gets_the_frame_as_text_or_binary(
    pair: tuple[ServerConnection, ClientConnection],
) -> None:
    server, client = pair
    assert send_now(server, '[3,"1",{"ü": " x "}]')
    assert send_now(server, b"\x00\xffbinary")
    assert await client.recv() == '[3,"1",{"ü": " x "}]'
    assert await client.recv() == b"\x00\xffbinary"


async def test_a_paused_or_closing_connection_is_left_to_send(
    pair: tuple[ServerConnection, ClientConnection],
) -> None:
    server, client = pair
    server.pause_writing()  # what the transport calls above its high-water mark
    assert not send_now(server, '[3,"1",{}]')
    server.resume_writing()
    assert send_now(server, '[3,"2",{}]')
    assert await client.recv() == '[3,"2",{}]'  # the refused one was never written
    await client.close()
    await server.wait_closed()
    assert not send_now(server, '[3,"3",{}]')
