"""An httpx transport over the bridge's own HTTP/1.1 connections (bridge/oicp/http11.py).

httpx stays the client API (requests, responses, headers, content decoding, error types); this
transport only moves bytes: a small pool of keep-alive connections per origin, opened with the
TLS context of the hub settings (mutual TLS) and replaced when the certificate is reloaded.
A connection that failed, was cancelled mid-exchange or was told ``Connection: close`` is never
used again. The exceptions are those httpcore raises in the same situation: only a
:class:`httpx.ConnectError` / :class:`httpx.ConnectTimeout` means the request did not leave this
process, which the push worker relies on to tell a failed push from an ambiguous one.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import httpx

from bridge.oicp.http11 import Answer, Http11Connection

__all__ = ["Http11Transport"]

Origin = tuple[bytes, bytes, int]
_DEFAULT_PORTS = {b"http": 80, b"https": 443}


class Http11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive; TLS by ``ssl_context`` for https URLs."""

    def __init__(self, ssl_context: ssl.SSLContext, *, limits: httpx.Limits) -> None:
        self._ssl_context = ssl_context
        self._generation = 0  # bumped by use_ssl_context: older connections are not reused
        self._max_idle = limits.max_keepalive_connections
        self._expiry = limits.keepalive_expiry
        self._max = limits.max_connections
        self._idle: dict[Origin, list[Http11Connection]] = {}
        self._retired: list[Http11Connection] = []  # idle ones to close before the next request
        self._slots: asyncio.Semaphore | None = None  # created in the loop that uses it
        self._closed = False

    def use_ssl_context(self, ssl_context: ssl.SSLContext) -> None:
        """New connections use ``ssl_context`` (a renewed client certificate).

        Idle connections are closed before the next request; the one a request is in flight on
        finishes that request and is then closed.
        """
        self._ssl_context = ssl_context
        self._generation += 1
        for connections in self._idle.values():
            self._retired.extend(connections)
        self._idle.clear()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        answer = await self._send(request.url, request, None, timeouts)
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=httpx.ByteStream(answer.body),  # httpx decodes it (Content-Encoding) as usual
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason},
        )

    async def send_bytes(
        self, url: httpx.URL, data: bytes, connect_timeout: float | None
    ) -> Answer:
        """POST ``data`` (head and body in wire form, built once per push by the caller) to
        ``url``'s origin and return the raw answer (body not decoded); no read, write or pool
        timeout (the caller bounds the whole exchange). Pool, reuse and errors as
        :meth:`handle_async_request`: a push needs neither an httpx.Request nor a Response,
        and building them cost a fifth of the push lane (bench/RESULTS.md)."""
        timeouts = {"connect": connect_timeout}
        return await self._send(url, None, data, timeouts)

    async def _send(
        self,
        url: httpx.URL,
        request: httpx.Request | None,
        data: bytes | None,
        timeouts: dict[str, float | None],
    ) -> Answer:
        if self._closed:
            raise RuntimeError("the transport is closed")
        if self._retired:
            retired, self._retired = self._retired, []
            for connection in retired:
                connection.close()
        slots = self._slots
        if slots is None and self._max is not None:
            slots = self._slots = asyncio.Semaphore(self._max)
        if slots is not None:
            pool = timeouts.get("pool")
            if pool is None:  # no timer when there is no bound (the pushes: one at a time)
                await slots.acquire()
            else:
                try:
                    async with asyncio.timeout(pool):
                        await slots.acquire()
                except TimeoutError:
                    raise httpx.PoolTimeout("no free connection", request=request) from None
        try:
            return await self._exchange(url, request, data, timeouts)
        finally:
            if slots is not None:
                slots.release()

    async def _exchange(
        self,
        url: httpx.URL,
        request: httpx.Request | None,
        data: bytes | None,
        timeouts: dict[str, float | None],
    ) -> Answer:
        scheme = url.raw_scheme
        port = url.port or _DEFAULT_PORTS.get(scheme)
        if port is None:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}")
        origin = (scheme, url.raw_host, port)
        connection = self._reuse(origin)
        if connection is None:
            connection = await self._connect(request, origin, timeouts.get("connect"))
        read, write = timeouts.get("read"), timeouts.get("write")
        try:
            if data is not None:
                answer = await connection.exchange_bytes(data, read, write)
            else:
                assert request is not None
                answer = await connection.exchange(request, read, write)
        except BaseException:  # an error or a cancellation (the caller's total timeout)
            connection.abort()  # out of step: never used again
            raise
        if answer.keep_alive and not self._closed:
            self._release(origin, connection)
        else:
            connection.close()
        return answer

    def _reuse(self, origin: Origin) -> Http11Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used one
            if connection.reusable(now, self._expiry):
                return connection
            connection.close()
        return None

    def _release(self, origin: Origin, connection: Http11Connection) -> None:
        if connection.generation != self._generation:  # opened with a replaced certificate
            connection.close()
            return
        idle = self._idle.setdefault(origin, [])
        if self._max_idle is not None and len(idle) >= self._max_idle:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(
        self, request: httpx.Request | None, origin: Origin, timeout: float | None
    ) -> Http11Connection:
        scheme, raw_host, port = origin
        host = raw_host.decode("ascii").strip("[]")  # IPv6 literals come bracketed
        tls = self._ssl_context if scheme == b"https" else None
        connection = Http11Connection(self._generation)
        loop = asyncio.get_running_loop()
        try:
            # TCP and the TLS handshake together, as httpx's connect timeout.
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: connection,
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
        except TimeoutError:
            connection.abort()
            raise httpx.ConnectTimeout("timed out connecting", request=request) from None
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, DNS, TLS handshake
            raise httpx.ConnectError(str(exc), request=request) from exc
        return connection

    async def aclose(self) -> None:
        self._closed = True
        for connections in [*self._idle.values(), self._retired]:
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._retired = []
