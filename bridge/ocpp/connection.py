"""The websockets connection of the OCPP port, with the TLS handshake run by the bridge itself.

With ``serve(ssl=...)`` the event loop runs the handshake and drops failures silently; here a
refused client certificate is logged with the peer address and counts as a failed login.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import ClassVar, Protocol

from websockets.asyncio.server import ServerConnection


class Owner(Protocol):
    """What a connection needs from the server that accepted it."""

    @property
    def tls(self) -> ssl.SSLContext | None: ...

    @property
    def handshake_timeout(self) -> float: ...

    def track(self, task: asyncio.Task[None]) -> None: ...

    def tls_failed(self, transport: asyncio.BaseTransport, exc: BaseException) -> None: ...


class OcppConnection(ServerConnection):
    """A websockets server connection whose TLS handshake (if any) runs in ``start_tls``."""

    owner: ClassVar[Owner]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tls = self.owner.tls
        if tls is None:
            super().connection_made(transport)
            return
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # start_tls takes over reading
        self.owner.track(self.loop.create_task(self._tls_handshake(transport, tls)))

    async def _tls_handshake(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        timeout = self.owner.handshake_timeout
        held = HeldData()
        try:
            transport = await self.loop.start_tls(
                raw, held, context, server_side=True,
                ssl_handshake_timeout=timeout, ssl_shutdown_timeout=timeout,
            )  # fmt: skip
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
            self.owner.tls_failed(raw, exc)
            raw.abort()
            return
        if transport is None:
            raw.abort()
            return
        transport.set_protocol(self)
        super().connection_made(transport)
        held.hand_over(self)


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


def tls_reason(exc: BaseException) -> str:
    """A short reason for a failed TLS handshake, for ``ocpp.tls_failed`` / ``ocpp.auth_failed``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
