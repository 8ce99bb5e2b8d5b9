"""The OCPP-J websocket endpoint: ``ws(s)://host/ocpp/{chargePointId}``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from http import HTTPStatus
from typing import Protocol
from urllib.parse import unquote, urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from bridge.config import OcppSettings
from bridge.ocpp import v16, v201
from bridge.ocpp.rpc import DIALECTS, OCPP16
from bridge.ocpp.session import Handler, Session, Sink
from bridge.status.registry import Registry

log = structlog.get_logger("bridge.ocpp")

PATH_PREFIX = "/ocpp/"
SUBPROTOCOLS = [Subprotocol(name) for name in DIALECTS]
HANDLERS: dict[str, dict[str, Handler]] = {"1.6": v16.HANDLERS, "2.0.1": v201.HANDLERS}


class Presence(Sink, Protocol):
    async def connected(self, charge_point_id: str, protocol: str) -> None: ...

    async def disconnected(self, charge_point_id: str) -> None: ...


def charge_point_id_from_path(path: str) -> str | None:
    """``/ocpp/RDAM%20123`` → ``RDAM 123``; None if the path is not ``/ocpp/{id}``."""
    route = urlsplit(path).path
    if not route.startswith(PATH_PREFIX):
        return None
    raw = route[len(PATH_PREFIX) :].rstrip("/")
    if not raw or "/" in raw:
        return None
    cp_id = unquote(raw)
    if not cp_id or len(cp_id) > 48 or not cp_id.isprintable():  # OCPP identity: ≤48 chars
        return None
    return cp_id


class OcppServer:
    def __init__(self, settings: OcppSettings, registry: Registry, sink: Presence) -> None:
        self.settings = settings
        self.registry = registry
        self.sink = sink
        self.sessions: dict[str, ServerConnection] = {}
        self._server: Server | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    def connected_by_protocol(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for conn in self.sessions.values():
            version = DIALECTS[str(conn.subprotocol)].version if conn.subprotocol else "none"
            counts[version] = counts.get(version, 0) + 1
        return counts

    async def start(self) -> None:
        s = self.settings
        self._server = await serve(
            self._handle,
            s.host,
            s.port,
            subprotocols=SUBPROTOCOLS,
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            ping_interval=s.ping_interval,
            ping_timeout=s.response_timeout,
            max_size=s.max_message_size,
            server_header=None,
        )
        log.info("ocpp.listening", host=s.host, port=self.port, subprotocols=list(DIALECTS))

    async def close(self) -> None:
        """Stop accepting and close every charger connection with 1001 (going away)."""
        if self._server is None:
            return
        self._server.close(close_connections=False)
        await asyncio.gather(
            *(conn.close(1001, "server shutting down") for conn in list(self.sessions.values())),
            return_exceptions=True,
        )
        await self._server.wait_closed()

    # -- handshake -------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        cp_id = charge_point_id_from_path(request.path)
        if cp_id is None or not self.registry.knows(cp_id):
            log.warning("ocpp.rejected", status=404, path=request.path[:120],
                        peer=_peer(connection), reason="unknown charge point")  # fmt: skip
            return connection.respond(HTTPStatus.NOT_FOUND, "Unknown charge point\n")
        return None

    # -- connection ------------------------------------------------------------------------
    async def _handle(self, connection: ServerConnection) -> None:
        cp_id = charge_point_id_from_path(connection.request.path if connection.request else "")
        if cp_id is None:  # process_request already refused these
            return
        if connection.subprotocol is None:
            # OCPP-J §3.2: complete the handshake without a subprotocol, then close.
            log.warning("ocpp.rejected", charge_point_id=cp_id, peer=_peer(connection),
                        reason="no supported OCPP subprotocol offered",
                        offered=_offered(connection.request.headers if connection.request
                                         else Headers()))  # fmt: skip
            await connection.close(1002, "No supported OCPP subprotocol")
            return
        dialect = DIALECTS.get(str(connection.subprotocol), OCPP16)
        previous = self.sessions.get(cp_id)
        self.sessions[cp_id] = connection
        if previous is not None:
            # Chargers reconnect while the old TCP connection is half-open: the new one wins.
            log.info("charger.replaced", charge_point_id=cp_id, peer=_peer(connection))
            closing = asyncio.create_task(previous.close(1000, "replaced by a new connection"))
            self._background.add(closing)
            closing.add_done_callback(self._background.discard)
        session = Session(
            cp_id,
            dialect,
            HANDLERS[dialect.version],
            self.sink,
            heartbeat_interval=self.settings.heartbeat_interval,
        )
        await self.sink.connected(cp_id, dialect.version)
        log.info("charger.connected", charge_point_id=cp_id, protocol=dialect.version,
                 peer=_peer(connection))  # fmt: skip
        idle_limit = self.settings.heartbeat_interval + self.settings.silence_margin
        try:
            while True:
                try:
                    async with asyncio.timeout(idle_limit):
                        frame = await connection.recv()
                except TimeoutError:
                    log.warning("charger.silent", charge_point_id=cp_id, idle_s=idle_limit)
                    await connection.close(1001, "no message within the heartbeat interval")
                    break
                answer = await session.handle(frame)
                if answer is not None:
                    await connection.send(answer)
        except ConnectionClosed:
            pass
        finally:
            if self.sessions.get(cp_id) is connection:
                del self.sessions[cp_id]
            log.info("charger.disconnected", charge_point_id=cp_id,
                     code=connection.close_code, reason=connection.close_reason)  # fmt: skip
            await self.sink.disconnected(cp_id)


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    # Returning None completes the handshake without the header; websockets' default would
    # answer HTTP 400, which OCPP-J forbids.
    return next((p for p in SUBPROTOCOLS if p in offered), None)


def _offered(headers: Headers) -> list[str]:
    return [v.strip() for h in headers.get_all("Sec-WebSocket-Protocol") for v in h.split(",")]


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if address else "?"
