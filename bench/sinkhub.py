"""A zero-latency OICP hub for the push-lane phase: answers every push at once.

The hub simulator (aiohttp, validation, fault injection) costs about as much CPU per push as the
bridge's whole push lane, so on a 2-core machine it, not the lane, would set the rate. This sink
only parses HTTP/1.1 framing and the records of each status push, keeps the last status per
EvseID and answers the success acknowledgment. ``GET /sink`` returns what it holds.

    python -m bench.sinkhub --port 9601
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

ACK = b'{"Result":true,"StatusCode":{"Code":"000","Description":"Success."}}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
RECORD = re.compile(rb'"EvseID":"([^"]+)","EvseStatus":"([^"]+)"')


class Sink:
    def __init__(self) -> None:
        self.requests = 0
        self.records = 0
        self.status: dict[str, str] = {}


class SinkProtocol(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(buffer) < end + 4 + length:
                return
            body = bytes(buffer[end + 4 : end + 4 + length])
            del buffer[: end + 4 + length]
            self.answer(head, body)

    def answer(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        sink = self.sink
        if head.startswith(b"get /sink"):
            out = json.dumps(
                {"requests": sink.requests, "records": sink.records, "status": sink.status}
            ).encode()
            self.transport.write(OK % len(out) + out)
            return
        sink.requests += 1
        for evse_id, status in RECORD.findall(body):
            sink.records += 1
            sink.status[evse_id.decode()] = status.decode()
        self.transport.write(OK % len(ACK) + ACK)


async def serve(port: int) -> None:
    sink = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(sink), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
