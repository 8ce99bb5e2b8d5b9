"""An httpx transport that sends requests with aiohttp.

httpx stays the client API (requests, responses, headers, cookies, redirects, error types);
aiohttp only moves bytes. Per push, httpx's own HTTP/1.1 stack (httpcore, h11, anyio) costs
several times aiohttp's, and the push worker sends strictly one request at a time, so the
per-request cost caps the push rate. Errors are raised as the httpx exceptions httpcore would
raise in the same situation, chained to the underlying OSError or ssl error.
"""

from __future__ import annotations

import math
import ssl

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport"]

_NO_RESPONSE = "Server disconnected without sending a response."


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive over one ``aiohttp.ClientSession``, TLS by ``ssl_context``."""

    def __init__(self, ssl_context: ssl.SSLContext, *, limits: httpx.Limits) -> None:
        self._ssl_context = ssl_context
        self._limits = limits
        # Created on first use: a session belongs to the event loop it was created in.
        self._session: aiohttp.ClientSession | None = None
        self._retired: aiohttp.ClientSession | None = None  # to close before the next request
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        limits = self._limits
        keepalive = limits.max_keepalive_connections != 0
        connector = aiohttp.TCPConnector(
            ssl=self._ssl_context,
            limit=limits.max_connections or 0,  # 0: unlimited, as None in httpx
            force_close=not keepalive,
            keepalive_timeout=limits.keepalive_expiry if keepalive else None,
        )
        return aiohttp.ClientSession(
            connector=connector,
            # httpx does all of this itself, exactly as with its default transport.
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept", "Accept-Encoding", "Content-Type", "User-Agent"),
            trust_env=False,
            requote_redirect_url=False,
        )

    def use_ssl_context(self, ssl_context: ssl.SSLContext) -> None:
        """New connections use ``ssl_context`` (a renewed client certificate).

        The keep-alive connections of the old one are closed before the next request, not now:
        a request may be in flight on one of them.
        """
        self._ssl_context = ssl_context
        if self._session is not None:
            self._retired, self._session = self._session, None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._retired is not None:
            retired, self._retired = self._retired, None
            await retired.close()
        session = self._session
        if session is None:
            session = self._session = self._open()
        body: object = request.stream
        if isinstance(body, httpx.ByteStream) or not isinstance(body, httpx.AsyncByteStream):
            body = await request.aread()
        # else a streamed body (a large EVSE data fullLoad, its Content-Length given): it goes
        # out chunk by chunk; joined first it would sit in memory twice, and again in the
        # socket's buffer.
        try:
            async with session.request(
                request.method,
                self._url(request.url),
                data=body or None,
                headers=[
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw
                ],
                timeout=self._timeout(request.extensions.get("timeout", {})),
                allow_redirects=False,
            ) as response:
                content = await response.read()
        except aiohttp.ClientError as exc:
            raise _map_error(exc, request) from (exc.__cause__ or exc)
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=httpx.ByteStream(content),  # httpx decodes it (Content-Encoding) as usual
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
        )

    def _url(self, url: httpx.URL) -> URL:
        # Already encoded by httpx; the OperatorID's ``*`` and ``+`` must reach the hub as is.
        text = str(url)
        cached = self._urls.get(text)
        if cached is None:
            cached = self._urls[text] = URL(text, encoded=True)
        return cached

    def _timeout(self, timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (timeout.get("connect"), timeout.get("read"))
        cached = self._timeouts.get(key)
        if cached is None:
            cached = self._timeouts[key] = aiohttp.ClientTimeout(
                # connect: TCP + TLS handshake, as httpx's; read: between two reads. The caller
                # bounds the whole exchange. No rounding up to whole seconds (aiohttp's default).
                sock_connect=key[0],
                sock_read=key[1],
                ceil_threshold=math.inf,
            )
        return cached

    async def aclose(self) -> None:
        for session in (self._session, self._retired):
            if session is not None:
                await session.close()
        self._session = self._retired = None


def _map_error(exc: aiohttp.ClientError, request: httpx.Request) -> httpx.TransportError:
    """The httpx exception httpcore raises in the same situation."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(exc), request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(str(exc), request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(exc.__cause__ or exc), request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(_NO_RESPONSE, request=request)
    if isinstance(exc, aiohttp.ClientConnectionResetError):
        return httpx.WriteError(str(exc), request=request)
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.ReadError(str(exc), request=request)
    if isinstance(exc, aiohttp.ClientResponseError):  # an answer that is not HTTP/1.x
        return httpx.RemoteProtocolError(" ".join(exc.message.split()), request=request)
    if isinstance(exc, aiohttp.ClientPayloadError):  # body cut short or malformed
        detail = getattr(exc.__cause__, "message", None) or str(exc)
        return httpx.RemoteProtocolError(" ".join(str(detail).split()), request=request)
    return httpx.TransportError(str(exc), request=request)
