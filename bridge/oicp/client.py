"""HTTP client for Hubject's eRoamingPushEvseStatus V2.1.

One push at a time: OICP requires data pushes to be strictly sequential, so the caller awaits
each :meth:`OicpClient.push_evse_status` before sending the next. The client never retries;
it turns every outcome into either a :class:`PushOutcome` or a :class:`~bridge.errors.HubError`
with enough detail (OICP code, HTTP status, Retry-After) for the caller to decide. This module
does the I/O; reading the hub's answers (:mod:`bridge.oicp.answers`) and saying what a failed
exchange means (:mod:`bridge.oicp.transport_errors`) are done without I/O in modules of their own.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self
from urllib.parse import quote

import httpx

from bridge.config import OicpSettings
from bridge.errors import ConfigError
from bridge.oicp.answers import PushOutcome, parse_retry_after, push_outcome
from bridge.oicp.deadline import Deadlines
from bridge.oicp.models import Acknowledgment, ActionType, StatusRequestEncoder
from bridge.oicp.transport import Http11Transport
from bridge.oicp.transport_errors import transport_error
from bridge.status.table import OicpStatus

__all__ = ["OicpClient", "PushOutcome", "parse_retry_after", "ssl_context_for"]

STATUS_PATH = "/api/oicp/evsepush/v21/operators/{operator}/status-records"
DATA_PATHS = {
    "2.3": "/api/oicp/evsepush/v23/operators/{operator}/data-records",
    "2.2": "/api/oicp/evsepush/v22/operators/{operator}/data-records",
}
# A data push of more records than this is streamed (chunks of _CHUNK_RECORDS records).
_STREAM_FROM = 1000
_CHUNK_RECORDS = 200
_READ = httpx.ByteStream(b"")  # stands in for a response's stream once its body has been read
# Answer headers that send a push's answer through httpx (header decoding, body decoding).
_SPECIAL = frozenset({b"retry-after", b"content-encoding"})


class OicpClient:
    """Pushes EVSE statuses to the OICP hub over (mutual) TLS."""

    def __init__(
        self, settings: OicpSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._settings = settings
        self.status_url = settings.base_url + STATUS_PATH.format(
            # Hubject expects the ID as is (``DE*ABC``, ``+49*536``), not percent-encoded.
            operator=quote(settings.operator_id, safe="*+")
        )
        self._url = httpx.URL(self.status_url)  # parsed once, not per push
        self.data_url = settings.base_url + DATA_PATHS[settings.evse_data_version].format(
            operator=quote(settings.operator_id, safe="*+")
        )
        self._data_url = httpx.URL(self.data_url)
        # OperatorName is mandatory for data in OICP 2.3: the OperatorID stands in for it.
        name = settings.operator_name or settings.operator_id
        self._data_head = json.dumps(
            {"OperatorID": settings.operator_id, "OperatorName": name}, ensure_ascii=False
        )[:-1].encode()  # the object without its closing brace: records follow
        self._encoder = StatusRequestEncoder(settings.operator_id, settings.operator_name)
        # The last success answer and its model: the hub sends the same bytes every time.
        self._known_ack: tuple[bytes, Acknowledgment] | None = None
        context = ssl_context_for(settings)
        # Pushes are sequential; a second connection only covers a stale keep-alive one.
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2, keepalive_expiry=30.0)
        self._transport: Http11Transport | None = None
        if transport is None:
            transport = self._transport = Http11Transport(context, limits=limits)
        self._sender = transport
        # What httpx.AsyncClient would put on every push, built once (see _post).
        self._headers = httpx.Headers({
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "Connection": "keep-alive",
            "User-Agent": f"python-httpx/{httpx.__version__}",
            "Content-Type": "application/json; charset=utf-8",
        })  # fmt: skip
        timeouts = {"connect": settings.connect_timeout, "read": None, "write": None, "pool": None}
        self._extensions = {"timeout": timeouts}
        # A status push in wire form around its body, from a request httpx builds once: the
        # same bytes as before, without an httpx.Request (and Response) per push.
        self._head = _head_template(self._url, self._headers)
        self._deadlines = Deadlines()  # the pushes' time limits, on one loop timer
        # TLS, connection limits and keep-alive belong to the transport; HTTP(S)_PROXY is not
        # used (the hub is reached directly, as httpx does whenever a transport is given).
        self._http = httpx.AsyncClient(
            # _post bounds the whole exchange by request_timeout: a read timeout of the same
            # length could never fire first and would only cost a timer per read.
            timeout=httpx.Timeout(None, connect=settings.connect_timeout),
            trust_env=False,
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Accept": "application/json",
            },
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def use_tls(self, context: ssl.SSLContext) -> None:
        """Connect with ``context`` from the next request on (a renewed client certificate,
        built by :func:`ssl_context_for`); the request in flight finishes on its connection."""
        if self._transport is not None:
            self._transport.use_ssl_context(context)

    async def push_evse_status(
        self,
        action: ActionType,
        records: Sequence[tuple[str, OicpStatus]],
        *,
        timeout: float | None = None,
    ) -> PushOutcome:
        """Send one eRoamingPushEvseStatus; raise HubTransportError or HubRejectedError.

        ``timeout`` bounds the whole exchange (default ``oicp.request_timeout``). Records that
        are not valid OICP (e.g. a malformed EvseID) raise pydantic's ValidationError (a
        ValueError) before anything is sent.
        """
        content = self._encoder.encode(action, records)
        started = time.monotonic()
        total = timeout or self._settings.request_timeout
        if self._transport is None:  # a transport given by the caller: through httpx
            response = await self._post(content, total)
            status, retry_after = response.status_code, response.headers.get("Retry-After")
            body = response.content
        else:
            status, retry_after, body = await self._push(content, total)
        duration_ms = (time.monotonic() - started) * 1000.0
        outcome = push_outcome(status, retry_after, body, duration_ms, self._known_ack)
        self._known_ack = (body, outcome.acknowledgment)
        return outcome

    def data_body(self, action: ActionType, records: Sequence[str]) -> bytes:
        """The eRoamingPushEvseData body of ``records`` (each a record's JSON text), joined
        as bytes: a 50,000-record fullLoad is never a tree of Python objects at once."""
        parts = [b'{"ActionType":"', action.value.encode(), b'","OperatorEvseData":',
                 self._data_head, b',"EvseDataRecord":[']  # fmt: skip
        parts.append(",".join(records).encode())
        parts.append(b"]}}")
        return b"".join(parts)

    async def push_evse_data(
        self,
        action: ActionType,
        records: Sequence[str],
        *,
        timeout: float | None = None,
    ) -> PushOutcome:
        """Send one eRoamingPushEvseData (2.3 or 2.2, ``oicp.evse_data_version``) with the
        given records (JSON texts built and validated by ``bridge.oicp.records``). A large
        request (a fullLoad) is streamed in chunks with its Content-Length: its body is never
        in memory as a whole."""
        total = timeout or self._settings.request_timeout
        started = time.monotonic()
        if len(records) <= _STREAM_FROM:
            response = await self._post(self.data_body(action, records), total, self.data_url)
        else:
            response = await self._post(
                self._data_chunks(action, records), total, self.data_url,
                {"Content-Length": str(self._data_length(action, records))},
            )  # fmt: skip
        duration_ms = (time.monotonic() - started) * 1000.0
        body = response.content
        outcome = push_outcome(
            response.status_code, response.headers.get("Retry-After"), body, duration_ms,
            self._known_ack,
        )  # fmt: skip
        self._known_ack = (body, outcome.acknowledgment)
        return outcome

    def _data_parts(self, action: ActionType) -> tuple[bytes, bytes]:
        head = b'{"ActionType":"' + action.value.encode() + b'","OperatorEvseData":'
        return head + self._data_head + b',"EvseDataRecord":[', b"]}}"

    def _data_length(self, action: ActionType, records: Sequence[str]) -> int:
        head, tail = self._data_parts(action)
        size = sum(len(r) if r.isascii() else len(r.encode()) for r in records)
        return len(head) + size + max(0, len(records) - 1) + len(tail)

    async def _data_chunks(
        self, action: ActionType, records: Sequence[str]
    ) -> AsyncIterator[bytes]:
        head, tail = self._data_parts(action)
        yield head
        for start in range(0, len(records), _CHUNK_RECORDS):
            text = ",".join(records[start : start + _CHUNK_RECORDS])
            yield (b"," if start else b"") + text.encode()
        yield tail

    async def post(
        self, url: str, content: bytes, *, timeout: float | None = None
    ) -> httpx.Response:
        """POST a JSON body of another hub service (e.g. ``bridge.oicp.networks``) over the
        same connections and client certificate; errors as for a push, answers unread."""
        return await self._post(content, timeout or self._settings.request_timeout, url=url)

    async def _post(
        self,
        content: bytes | AsyncIterator[bytes],
        total: float,
        url: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST ``content``; HubTransportError says whether the hub may have got it."""
        target = self._url if url is None else httpx.URL(url)
        shown = self.status_url if url is None else url
        try:
            # The whole exchange, not each read (httpx's read timeout restarts with every chunk).
            # Straight to the transport: a push needs none of what AsyncClient.send adds around
            # it (auth, redirects, cookies, event hooks), and that wrapping cost as much CPU per
            # push as the whole exchange on the wire (bench/RESULTS.md, push lane).
            request = httpx.Request(
                "POST", target, content=content, extensions=self._extensions,
                headers=self._headers if headers is None else {**self._headers, **headers},
            )  # fmt: skip
            async with asyncio.timeout(total):
                response = await self._sender.handle_async_request(request)
                await response.aread()  # a streaming transport's body; decoded as httpx does
            # httpx links a response and its (already read) stream both ways. Unlinking them
            # lets reference counting free each exchange at once; left to the cyclic GC, a
            # thousand pushes a second pile up into sweeps that stall the event loop for
            # tens of milliseconds, which is the whole latency tail.
            response.stream = _READ
            return response
        except (TimeoutError, httpx.RequestError) as exc:
            error = transport_error(exc, total, shown, self._settings)
            raise error from error.__cause__

    async def _push(self, content: bytes, total: float) -> tuple[int, str | None, bytes]:
        """A status push on the own transport: (HTTP status, Retry-After, decoded body)."""
        assert self._transport is not None
        start, end = self._head
        limit = self._deadlines.start(total)  # the whole exchange, as in _post
        try:
            try:
                answer = await self._transport.send_bytes(
                    self._url,
                    b"%s%d%s%s" % (start, len(content), end, content),
                    self._settings.connect_timeout,
                )
                body = answer.body
                retry_after = None
                special = [(n, v) for n, v in answer.headers if n.lower() in _SPECIAL]
                if special:  # rare: let httpx read the headers and decode the body as before
                    response = httpx.Response(
                        answer.status, headers=answer.headers, stream=httpx.ByteStream(body)
                    )
                    retry_after = response.headers.get("Retry-After")
                    body = await response.aread()
                    response.stream = _READ  # no reference cycle (see _post)
            except asyncio.CancelledError:
                if self._deadlines.timed_out(limit):
                    raise TimeoutError from None
                raise
            finally:
                self._deadlines.stop(limit)
            return answer.status, retry_after, body
        except (TimeoutError, httpx.RequestError) as exc:
            error = transport_error(exc, total, self.status_url, self._settings)
            raise error from error.__cause__


def _head_template(url: httpx.URL, headers: httpx.Headers) -> tuple[bytes, bytes]:
    """The head of a push as httpx builds it, split around the Content-Length value."""
    request = httpx.Request("POST", url, headers=headers, content=b"-")
    start = bytearray(b"POST %s HTTP/1.1\r\n" % url.raw_path)
    end = bytearray()
    for name, value in request.headers.raw:
        if name.lower() == b"content-length":
            start += b"%s: " % name
            end += b"\r\n"
        elif end:
            end += b"%s: %s\r\n" % (name, value)
        else:
            start += b"%s: %s\r\n" % (name, value)
    end += b"\r\n"
    return bytes(start), bytes(end)


def ssl_context_for(settings: OicpSettings) -> ssl.SSLContext:
    """Verifying context (always), with the client certificate for mutual TLS if configured."""
    cafile = str(settings.ca_bundle) if settings.ca_bundle is not None else None
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("oicp.ca_bundle", f"cannot load {cafile}: {exc}") from exc
    if settings.client_cert is not None:
        key = str(settings.client_key) if settings.client_key is not None else None
        try:
            context.load_cert_chain(str(settings.client_cert), key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "oicp.client_cert", f"cannot load {settings.client_cert} / {key}: {exc}"
            ) from exc
    return context
