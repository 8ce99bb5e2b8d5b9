"""The websockets connection of the OCPP port, with the TLS handshake run by the bridge itself.

With ``serve(ssl=...)`` the event loop runs the handshake and drops failures silently; here a
refused client certificate is logged with the peer address and counts as a failed login.
"""

from __future__ import annotations

import asyncio
import gc
import math
import ssl
import time
from asyncio import sslproto
from typing import ClassVar, Protocol

from websockets.asyncio.server import ServerConnection

from bridge.ocpp.admission import Admission


class Owner(Protocol):
    """What a connection needs from the server that accepted it."""

    @property
    def tls(self) -> ssl.SSLContext | None: ...

    @property
    def handshake_timeout(self) -> float: ...

    @property
    def admission(self) -> Admission: ...

    def track(self, task: asyncio.Task[None]) -> None: ...

    def tls_failed(self, transport: asyncio.BaseTransport, exc: BaseException) -> None: ...


class OcppConnection(ServerConnection):
    """A websockets server connection whose TLS handshake (if any) runs in ``start_tls``.

    Counted by the owner's ``Admission`` from accept to close; refused at once (before any
    byte is read) beyond its caps.
    """

    owner: ClassVar[Owner]
    _slot: str | None = None  # the address key counted by Admission.open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        admission = self.owner.admission
        peername = transport.get_extra_info("peername")
        key = admission.open(str(peername[0]) if peername else "?")
        if key is None:
            _refuse(transport)
            return
        self._slot = key
        tls = self.owner.tls
        if tls is None:
            super().connection_made(transport)
            return
        if not admission.start_handshake(key):
            self._release()
            _refuse(transport)
            return
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # start_tls takes over reading
        self.owner.track(self.loop.create_task(self._tls_handshake(transport, tls, key)))

    async def _tls_handshake(
        self, raw: asyncio.Transport, context: ssl.SSLContext, key: str
    ) -> None:
        timeout = self.owner.handshake_timeout
        held = HeldData()
        try:
            transport = await start_tls(self.loop, raw, held, context, timeout=timeout)
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
            self.owner.tls_failed(raw, exc)
            _unlink(exc)
            transport = None
        except BaseException:  # cancelled: the server is closing
            raw.abort()
            self._release()
            raise
        finally:
            self.owner.admission.end_handshake(key)
        if transport is None:
            raw.abort()
            self._release()
            SWEEPER.discarded()
            return
        transport.set_protocol(self)
        super().connection_made(transport)
        held.hand_over(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def _release(self) -> None:
        if self._slot is not None:
            self.owner.admission.close(self._slot)
            self._slot = None


_DISCARD = asyncio.Protocol()  # takes the refused transport's connection_lost


def _refuse(transport: asyncio.BaseTransport) -> None:
    assert isinstance(transport, asyncio.Transport)
    transport.set_protocol(_DISCARD)
    transport.abort()
    SWEEPER.discarded()


class Sweeper:
    """Collects the young garbage that refused and failed connections leave, whatever the GC
    settings.

    Each accepted socket leaves a few KiB in reference cycles inside asyncio and websockets
    (a transport's bound callbacks, a connection's subprotocol closure) even when it is
    refused at once. Normally the cyclic GC frees them, but the bridge collects rarely
    (``cli._tune_gc``) and an operator may tune it further; a flood of refused connections
    must not grow memory meanwhile. So every ``every`` discarded connections the two young
    generations are collected (a few ms: they hold at most a few ten thousand objects), at
    most once per ``interval`` seconds.
    """

    def __init__(self, every: int = 1000, interval: float = 1.0) -> None:
        self.every, self.interval = every, interval
        self._count = 0
        self._last = -math.inf

    def discarded(self) -> None:
        self._count += 1
        if self._count < self.every:
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._count, self._last = 0, now
            gc.collect(1)


SWEEPER = Sweeper()


#: Read buffer of a TLS connection. asyncio allocates 256 KiB per connection, for the whole
#: connection; OCPP frames are a few hundred bytes (at most ``max_message_size``, read in
#: chunks), so 32 KiB saves ~220 KiB per TLS charger and per pending handshake.
TLS_READ_BUFFER = 32 * 1024


class _SSLProtocol(sslproto.SSLProtocol):
    max_size = TLS_READ_BUFFER


async def start_tls(
    loop: asyncio.AbstractEventLoop,
    raw: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    *,
    timeout: float,
) -> asyncio.Transport:
    """``loop.start_tls(server_side=True)`` step for step, with the smaller read buffer."""
    waiter = loop.create_future()
    tls = _SSLProtocol(
        loop, protocol, context, waiter, server_side=True,
        ssl_handshake_timeout=timeout,  # type: ignore[arg-type]  # a float, as asyncio's own
        ssl_shutdown_timeout=timeout, call_connection_made=False,
    )  # fmt: skip
    # Paused first, so that data_received cannot come before connection_made.
    raw.pause_reading()
    raw.set_protocol(tls)
    made = loop.call_soon(tls.connection_made, raw)
    resumed = loop.call_soon(raw.resume_reading)
    try:
        await waiter
    except BaseException:
        raw.close()
        made.cancel()
        resumed.cancel()
        raise
    return tls._app_transport


def connection_class(owner: Owner) -> type[ServerConnection]:
    """An ``OcppConnection`` subclass bound to ``owner`` (websockets' ``create_connection``)."""
    return type("OcppConnection", (OcppConnection,), {"owner": owner})


class HeldData(asyncio.Protocol):
    """Keeps what arrives between the end of the TLS handshake and the websocket taking over."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool | None:
        self.eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)

    def hand_over(self, protocol: asyncio.Protocol) -> None:
        if self.data:
            protocol.data_received(bytes(self.data))
        if self.eof:
            protocol.eof_received()
        if self.lost is not None:
            protocol.connection_lost(self.lost[0])


def _unlink(exc: BaseException) -> None:
    """Drop the traceback of a failed handshake's exception.

    asyncio's handshake future keeps the exception, its traceback keeps the frames that awaited
    the future: a reference cycle per failed handshake, holding the connection and its TLS
    objects (~100 KiB; ~300 KiB with asyncio's own read buffer), that only the cyclic GC would
    free, and the bridge's GC tuning runs that rarely (``cli._tune_gc``). Reference counting
    frees it all at once without the cycle.
    """
    exc.__traceback__ = None
    exc.__context__ = exc.__cause__ = None


def tls_reason(exc: BaseException) -> str:
    """A short reason for a failed TLS handshake, for ``ocpp.tls_failed`` / ``ocpp.auth_failed``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
