"""One HTTP/1.1 client connection on a plain asyncio Protocol.

The hub transport (bridge/oicp/transport.py) sends one request at a time per connection and reads
the whole answer (acknowledgments are small). A protocol callback that only appends to a buffer
and a parser that runs once per answer cost far less per push than a general-purpose HTTP stack;
that cost is what caps the push lane (bench/RESULTS.md). Failures are raised as the httpx
exceptions httpcore raises in the same situation, chained to the OSError or ssl error, because
the caller decides from them whether the hub may have received the request.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterable, Iterable
from typing import cast

import httpx

__all__ = ["NO_RESPONSE", "Answer", "Http11Connection"]

NO_RESPONSE = "Server disconnected without sending a response."
_MAX_HEAD = 64 * 1024  # status line and headers of one answer
_ONE_WRITE = 64 * 1024  # a body up to this size goes out in the same write as the head
_NO_BODY_STATUS = frozenset({204, 304})


class Answer:
    """A response as read off the wire: status, reason, raw headers, (still encoded) body."""

    __slots__ = ("body", "headers", "keep_alive", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class Http11Connection(asyncio.Protocol):
    """A keep-alive connection; :meth:`exchange` sends one request and reads its answer."""

    def __init__(self, generation: int) -> None:
        self.generation = generation  # the TLS settings it was opened with (certificate reload)
        self.transport: asyncio.Transport | None = None
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._eof = False
        self._lost: BaseException | None = None  # what connection_lost reported
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drain: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = exc
        self._wake()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- use by the transport ---------------------------------------------------------------

    def reusable(self, now: float, expiry: float | None) -> bool:
        """Still open, nothing arrived while idle (an early close or garbage), not expired."""
        transport = self.transport
        return (
            transport is not None
            and not self._eof
            and not self._buffer
            and not transport.is_closing()
            and (expiry is None or now - self.idle_since < expiry)
        )

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def exchange(
        self,
        request: httpx.Request,
        read_timeout: float | None,
        write_timeout: float | None,
    ) -> Answer:
        """Send ``request``, read its answer; raise an httpx.TransportError on failure."""
        try:
            await self._send(request, write_timeout)
        except httpx.WriteError:
            # The hub may have answered (e.g. 413) and closed before taking the whole body.
            if b"\r\n\r\n" not in self._buffer:
                raise
        return await self._read_answer(request, request.method, read_timeout)

    async def exchange_bytes(
        self, data: bytes, read_timeout: float | None, write_timeout: float | None
    ) -> Answer:
        """Send a POST already in its wire form (head and body), read its answer; errors as
        :meth:`exchange` (without a request attached: the caller built none)."""
        transport = self.transport
        assert transport is not None
        transport.write(data)
        try:
            await self._drained(None, write_timeout)
        except httpx.WriteError:
            if b"\r\n\r\n" not in self._buffer:
                raise
        return await self._read_answer(None, "POST", read_timeout)

    # --- sending ------------------------------------------------------------------------------

    async def _send(self, request: httpx.Request, timeout: float | None) -> None:
        transport = self.transport
        assert transport is not None
        url = request.url
        head = bytearray(b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path))
        for name, value in request.headers.raw:
            head += b"%s: %s\r\n" % (name, value)
        head += b"\r\n"
        stream = request.stream
        if isinstance(stream, httpx.ByteStream):  # content given as bytes: already in memory
            body = request.content
            if len(body) <= _ONE_WRITE:
                transport.write(bytes(head + body) if body else bytes(head))
            else:
                transport.write(bytes(head))
                transport.write(body)
            await self._drained(request, timeout)
            return
        chunked = request.headers.get("Transfer-Encoding", "").lower() == "chunked"
        transport.write(bytes(head))
        async for chunk in _chunks(stream):
            if not chunk:
                continue
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            await self._drained(request, timeout)
        if chunked:
            transport.write(b"0\r\n\r\n")
        await self._drained(request, timeout)

    async def _drained(self, request: httpx.Request | None, timeout: float | None) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        if self._eof:
            raise self._write_error(request)
        if not self._paused:
            return
        loop = asyncio.get_running_loop()
        self._drain = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._drain
        except TimeoutError:
            raise httpx.WriteTimeout("timed out sending the request", request=request) from None
        if self._eof:
            raise self._write_error(request)

    def _write_error(self, request: httpx.Request | None) -> httpx.WriteError:
        exc = httpx.WriteError(_lost_text(self._lost), request=request)
        exc.__cause__ = self._lost
        return exc

    # --- reading ------------------------------------------------------------------------------

    async def _more(self, request: httpx.Request | None, timeout: float | None) -> None:
        """Wait for more bytes (or the end of the connection)."""
        self._waiter = asyncio.get_running_loop().create_future()
        if timeout is None:
            await self._waiter
            return
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        except TimeoutError:
            raise httpx.ReadTimeout("timed out reading the answer", request=request) from None

    def _read_error(self, request: httpx.Request | None, message: str) -> httpx.TransportError:
        """The connection ended before the answer was complete."""
        lost = self._lost
        if lost is not None and (isinstance(lost, ssl.SSLError) or lost.args):
            exc: httpx.TransportError = httpx.ReadError(_lost_text(lost), request=request)
            exc.__cause__ = lost
            return exc
        return httpx.RemoteProtocolError(message, request=request)

    async def _read_answer(
        self, request: httpx.Request | None, method: str, timeout: float | None
    ) -> Answer:
        buffer = self._buffer
        while True:  # skip interim (1xx) answers
            end = buffer.find(b"\r\n\r\n")
            while end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise httpx.RemoteProtocolError("answer head too long", request=request)
                if self._eof:
                    if buffer:
                        raise self._read_error(request, "Bad status line: incomplete answer head")
                    raise self._read_error(request, NO_RESPONSE)
                await self._more(request, timeout)
                end = buffer.find(b"\r\n\r\n")
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            status, reason, version, headers = _parse_head(head, request)
            if status >= 200:
                break
        keep_alive = version == b"HTTP/1.1"
        length: int | None = None
        chunked = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise httpx.RemoteProtocolError(
                        f"invalid Content-Length {value!r}", request=request
                    ) from None
            elif lower == b"transfer-encoding":
                chunked = value.strip().lower().endswith(b"chunked")
            elif lower == b"connection":
                tokens = value.lower()
                keep_alive = b"close" not in tokens and (keep_alive or b"keep-alive" in tokens)
        if method == "HEAD" or status in _NO_BODY_STATUS:
            body = b""
        elif chunked:
            body = await self._read_chunked(request, timeout)
        elif length is not None:
            while len(buffer) < length:
                if self._eof:
                    raise self._read_error(
                        request,
                        f"Not enough data: the connection ended after {len(buffer)} of "
                        f"{length} body bytes",
                    )
                await self._more(request, timeout)
            body = bytes(buffer[:length])
            del buffer[:length]
        else:  # delimited by the end of the connection
            while not self._eof:
                await self._more(request, timeout)
            body = bytes(buffer)
            buffer.clear()
            keep_alive = False
        if buffer:  # more than the answer: the connection is out of step
            keep_alive = False
        return Answer(status, reason, headers, body, keep_alive)

    async def _read_chunked(self, request: httpx.Request | None, timeout: float | None) -> bytes:
        buffer = self._buffer
        body = bytearray()
        while True:
            end = buffer.find(b"\r\n")
            while end < 0:
                if self._eof:
                    raise self._read_error(request, "Not enough data: chunked body cut short")
                await self._more(request, timeout)
                end = buffer.find(b"\r\n")
            size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise httpx.RemoteProtocolError(
                    f"invalid chunk size {size_text[:20]!r}", request=request
                ) from None
            if size == 0:  # trailers (ignored) up to an empty line
                while True:
                    end = buffer.find(b"\r\n")
                    while end < 0:
                        if self._eof:
                            raise self._read_error(request, "Not enough data: no end of trailers")
                        await self._more(request, timeout)
                        end = buffer.find(b"\r\n")
                    del buffer[: end + 2]
                    if end == 0:
                        return bytes(body)
            need = end + 2 + size + 2
            while len(buffer) < need:
                if self._eof:
                    raise self._read_error(request, "Not enough data: chunked body cut short")
                await self._more(request, timeout)
            body += buffer[end + 2 : end + 2 + size]
            del buffer[:need]


def _parse_head(
    head: bytes, request: httpx.Request | None
) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
        raise httpx.RemoteProtocolError(f"Bad status line {lines[0][:40]!r}", request=request)
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpx.RemoteProtocolError(f"Bad header line {line[:40]!r}", request=request)
        headers.append((name, value.strip()))
    return int(parts[1]), parts[2] if len(parts) == 3 else b"", parts[0], headers


def _lost_text(exc: BaseException | None) -> str:
    if exc is None:
        return "connection closed"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


async def _chunks(stream: httpx.AsyncByteStream | httpx.SyncByteStream) -> AsyncIterable[bytes]:
    if isinstance(stream, httpx.AsyncByteStream):
        async for chunk in stream:
            yield chunk
    else:  # a sync iterator handed to the async client
        iterable: Iterable[bytes] = stream
        for chunk in iterable:
            yield chunk
