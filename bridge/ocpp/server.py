"""The OCPP-J websocket endpoint: ``ws(s)://host/ocpp/{chargePointId}``.

Every connection passes, in order: the TLS handshake (if the port has a certificate; run by
``connection.OcppConnection``), the websocket handshake with the charge point ID and its
security profile checked (``handshake.Handshake``), then the message loop here with a
per-connection message budget.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog
from cryptography import x509
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from bridge.config import ChargerSettings, OcppSettings
from bridge.errors import ConfigError
from bridge.ocpp import auth, proxy, tls, v16, v201
from bridge.ocpp.admission import Admission
from bridge.ocpp.client_cert import tls_failure
from bridge.ocpp.connection import connection_class, tls_reason
from bridge.ocpp.handshake import Attempt, Handshake, charge_point_id_from_path, format_peer
from bridge.ocpp.idle import IdleWatch
from bridge.ocpp.rpc import DIALECTS, OCPP16
from bridge.ocpp.session import Handler, Session, Sink
from bridge.ocpp.throttle import FailureThrottle, network_key
from bridge.ocpp.wire import send_now
from bridge.ratelimit import LogLimiter, TokenBucket
from bridge.status.registry import Registry

log = structlog.get_logger("bridge.ocpp")

SUBPROTOCOLS = [Subprotocol(name) for name in DIALECTS]
HANDLERS: dict[str, dict[str, Handler]] = {"1.6": v16.HANDLERS, "2.0.1": v201.HANDLERS}
THROTTLE_LOG_WINDOW = 60.0  # s: at most one ocpp.throttled line per connection and window
TLS_FAILED_LOG_WINDOW, TLS_FAILED_LOG_BUDGET = 60.0, 100
_YIELD_EVERY = 8  # messages handled back to back before giving other connections a turn
_CERT_CHECKS_PER_TURN = 500  # connections checked against a new CRL between event-loop turns
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


class Presence(Sink, Protocol):
    async def connected(self, charge_point_id: str, protocol: str) -> None: ...

    async def disconnected(self, charge_point_id: str) -> None: ...


class OcppServer:
    def __init__(
        self,
        settings: OcppSettings,
        registry: Registry,
        sink: Presence,
        *,
        chargers: Mapping[str, ChargerSettings] | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.sink = sink
        self.sessions: dict[str, ServerConnection] = {}
        security = settings.security
        self.auth = auth.Authenticator(security, chargers or {})
        self.handshake = Handshake(security, registry, self.auth)
        self.tls_files = tls.TlsFiles(security, self.auth.client_cert_mode())
        self.admission = Admission(
            per_address=security.max_connections_per_address,
            handshakes=security.max_tls_handshakes,
            handshakes_per_address=security.max_tls_handshakes_per_address,
        )
        #: Relays chargers in ``proxy`` mode to the operator's CSMS (None: no charger is).
        self.proxy = proxy.Proxy.attach(self, chargers or {}, sink)
        self._server: Server | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._tls_watch: asyncio.Task[None] | None = None
        self._tls_lock = asyncio.Lock()
        # Idle or garbage connections to the TLS port: one ocpp.tls_failed line per address
        # and window, at most TLS_FAILED_LOG_BUDGET per window in all.
        self._tls_failed_lines = LogLimiter(TLS_FAILED_LOG_WINDOW, TLS_FAILED_LOG_BUDGET)

    @property
    def throttle(self) -> FailureThrottle:
        return self.handshake.throttle

    @property
    def on_auth_failure(self) -> Callable[[str], None] | None:
        """Called with a Failure label on every refused login (metrics hook)."""
        return self.handshake.on_auth_failure

    @on_auth_failure.setter
    def on_auth_failure(self, hook: Callable[[str], None] | None) -> None:
        self.handshake.on_auth_failure = hook

    @property
    def handshake_timeout(self) -> float:
        return self.settings.security.handshake_timeout

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The context for the next TLS handshake (None: plain ws)."""
        return self.tls_files.context

    @property
    def port(self) -> int:
        assert self._server is not None
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    def connected_by_protocol(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for conn in self.sessions.values():
            dialect = DIALECTS.get(str(conn.subprotocol))  # a proxied one may speak another
            version = dialect.version if dialect else str(conn.subprotocol or "none")
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
            compression="deflate" if s.compression == "deflate" else None,
            backlog=s.listen_backlog,
            open_timeout=s.security.handshake_timeout,
            create_connection=connection_class(self),
            logger=_RedactingLogger(logging.getLogger("websockets.server")),
            server_header=None,
        )
        log.info("ocpp.listening", host=s.host, port=self.port, subprotocols=list(DIALECTS),
                 tls=self.tls is not None, profiles=sorted(self.auth.profiles_in_use()),
                 default_profile=self.auth.default_profile)  # fmt: skip
        if costs := self.auth.hash_costs():
            log.info("ocpp.password_hashes", costs=costs)
        if self.auth.default_profile == 0:
            log.warning("ocpp.insecure", reason="security profile 0: chargers connect without "
                        "credentials (development only)")  # fmt: skip
        self.tls_files.log_state()
        interval = s.security.tls_reload_interval
        if self.tls is not None and interval > 0:
            self._tls_watch = asyncio.create_task(self._watch_tls(interval))

    async def close(self) -> None:
        """Stop accepting and close every charger connection with 1001 (going away)."""
        if self._tls_watch is not None:
            self._tls_watch.cancel()
        if self._server is None:
            return
        self._server.close(close_connections=False)
        for task in list(self._background):  # TLS handshakes still in progress
            task.cancel()
        await asyncio.gather(
            *(conn.close(1001, "server shutting down") for conn in list(self.sessions.values())),
            return_exceptions=True,
        )
        await self._server.wait_closed()

    def disconnect(self, charge_point_id: str, reason: str) -> bool:
        """Close a charger's connection (1008, policy violation), e.g. it was deprecated."""
        connection = self.sessions.get(charge_point_id)
        if connection is None:
            return False
        self.track(asyncio.create_task(connection.close(1008, reason[:120])))
        return True

    # -- TLS files ------------------------------------------------------------------------
    async def _watch_tls(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._reload_logged()

    def request_tls_reload(self) -> None:
        """Check the TLS files now (SIGHUP), in the background."""
        self.track(asyncio.create_task(self._reload_logged(unchanged_log=True)))

    async def _reload_logged(self, *, unchanged_log: bool = False) -> None:
        try:
            await self.reload_tls(unchanged_log=unchanged_log)
        except Exception:  # a bug here must not end the watching for good
            log.exception("ocpp.tls_reload_failed")

    async def reload_tls(self, *, unchanged_log: bool = False) -> bool:
        """Load changed TLS files; disconnect chargers whose certificate is now revoked.

        True if a new context is in use. Files that do not load, or a CRL that would refuse
        chargers by mistake, keep the previous context (``ocpp.tls_reload_failed``, once per
        change of the files).
        """
        async with self._tls_lock:
            files = self.tls_files
            if self.tls is None or not files.note_change():
                if unchanged_log:
                    log.info("ocpp.tls_unchanged")
                return False
            try:
                # Parsing a large CRL takes a while: not on the event loop.
                state = await asyncio.to_thread(files.build)
            except ConfigError as exc:
                log.error("ocpp.tls_reload_failed", field=exc.field, error=exc.reason,
                          keeping="the previous certificates and CRLs")  # fmt: skip
                return False
            files.use(state)
            await self._disconnect_revoked()
            return True

    async def _disconnect_revoked(self) -> None:
        for n, (cp_id, connection) in enumerate(list(self.sessions.items()), 1):
            if n % _CERT_CHECKS_PER_TURN == 0:
                await asyncio.sleep(0)  # thousands of chargers: let the others be served
            try:
                revoked = self._revoked_peer(connection)
            except Exception:  # one odd certificate must not spare the others
                log.exception("ocpp.cert_check_failed", charge_point_id=cp_id)
                continue
            if revoked:
                log.warning("ocpp.cert_revoked", charge_point_id=cp_id, peer=_peer(connection),
                            action="disconnected")  # fmt: skip
                self.track(asyncio.create_task(connection.close(1008, "certificate revoked")))

    def _revoked_peer(self, connection: ServerConnection) -> bool:
        """Whether the connection's client certificate is in the current CRLs."""
        revocations = self.tls_files.revocations
        if revocations is None:
            return False
        ssl_object = connection.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return False
        peercert = ssl_object.getpeercert()
        serial = peercert.get("serialNumber") if peercert else None
        if not isinstance(serial, str) or int(serial, 16) not in revocations.serials:
            return False  # cheap: no certificate parsing for the many that are not listed
        der = ssl_object.getpeercert(binary_form=True)
        return der is not None and revocations.lists(x509.load_der_x509_certificate(der))

    def track(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- handshake -------------------------------------------------------------------------
    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        ssl_object = connection.transport.get_extra_info("ssl_object")
        attempt = Attempt(
            path=request.path,
            address=_address(connection),
            peer=_peer(connection),
            authorization=request.headers.get_all("Authorization"),
            peercert=ssl_object.getpeercert() if ssl_object is not None else None,
            revoked=lambda: self._revoked_peer(connection),
        )
        refusal = await self.handshake.decide(attempt)
        if refusal is None:
            cp_id = charge_point_id_from_path(request.path)
            if cp_id is not None and self.proxy is not None and self.proxy.proxied(cp_id):
                return await self.proxy.open(connection, request, cp_id)  # CSMS first, then 101
            return None
        response = connection.respond(refusal.status, refusal.body)
        for name, value in refusal.headers.items():
            response.headers[name] = value
        return response

    def tls_failed(self, transport: asyncio.BaseTransport, exc: BaseException) -> None:
        """A TLS handshake failed: a refused client certificate is a failed login."""
        peername = transport.get_extra_info("peername")
        peer = format_peer(peername)
        reason = tls_reason(exc)
        failure = tls_failure(exc)
        address = str(peername[0]) if peername else "?"
        if failure is None:  # scanners, plain http on the TLS port, dropped mobile links
            left_out = self._tls_failed_lines.admit(network_key(address))
            if left_out is not None:
                log.info("ocpp.tls_failed", peer=peer, reason=reason, repeated=left_out,
                         others_left_out=self._tls_failed_lines.take_over_budget())  # fmt: skip
            return
        self.handshake.refused(address, peer, None, failure, status=None, detail=reason)

    # -- connection ------------------------------------------------------------------------
    async def _handle(self, connection: ServerConnection) -> None:
        cp_id = charge_point_id_from_path(connection.request.path if connection.request else "")
        if cp_id is None:  # process_request already refused these
            return
        if self.proxy is not None and self.proxy.proxied(cp_id):
            return await self.proxy.relay(connection, cp_id)
        if connection.subprotocol is None:
            # OCPP-J §3.2: complete the handshake without a subprotocol, then close.
            request = connection.request
            log.warning("ocpp.rejected", status=101, close_code=1002, charge_point_id=cp_id,
                        path=urlsplit(request.path).path[:120] if request else None,
                        peer=_peer(connection), reason="no supported OCPP subprotocol offered",
                        offered=_offered(request.headers if request else Headers()))  # fmt: skip
            await connection.close(1002, "No supported OCPP subprotocol")
            return
        dialect = DIALECTS.get(str(connection.subprotocol), OCPP16)
        previous = self.sessions.get(cp_id)
        self.sessions[cp_id] = connection
        if previous is not None:
            # Chargers reconnect while the old TCP connection is half-open: the new one wins.
            log.info("charger.replaced", charge_point_id=cp_id, peer=_peer(connection))
            self.track(asyncio.create_task(previous.close(1000, "replaced by a new connection")))
        session = Session(
            cp_id,
            dialect,
            HANDLERS[dialect.version],
            self.sink,
            heartbeat_interval=self.settings.heartbeat_interval,
        )
        try:
            # Inside the try: if recording the connection fails, the finally still undoes it.
            await self.sink.connected(cp_id, dialect.version)
            log.info("charger.connected", charge_point_id=cp_id, protocol=dialect.version,
                     peer=_peer(connection))  # fmt: skip
            await self._serve(connection, session)
        except ConnectionClosed:
            pass
        finally:
            if self.sessions.get(cp_id) is connection:
                del self.sessions[cp_id]
            log.info("charger.disconnected", charge_point_id=cp_id,
                     code=connection.close_code, reason=connection.close_reason)  # fmt: skip
            await self.sink.disconnected(cp_id)

    async def _serve(self, connection: ServerConnection, session: Session) -> None:
        """Answer frames one at a time, at most at the configured rate, until the socket closes.

        Above the rate the next frame is read only when the budget allows: the charger's frames
        wait in the socket (TCP backpressure), none is dropped, the event loop stays free.
        """
        s = self.settings
        idle_limit = s.heartbeat_interval + s.silence_margin
        budget = TokenBucket(s.security.max_messages_per_second, s.security.message_burst)
        delayed, logged_at, in_a_row = 0, -math.inf, 0
        idle = IdleWatch(idle_limit)
        loop = idle.loop
        try:
            while True:
                idle.waiting_since = loop.time()
                try:
                    frame = await connection.recv()
                except asyncio.CancelledError:
                    if not idle.expired():
                        raise
                    log.warning("charger.silent", charge_point_id=session.charge_point_id,
                                idle_s=idle_limit)  # fmt: skip
                    await connection.close(1001, "no message within the heartbeat interval")
                    return
                idle.waiting_since = None
                wait = budget.take()
                if wait > 0:
                    delayed += 1
                    now = time.monotonic()
                    if now - logged_at >= THROTTLE_LOG_WINDOW:
                        log.warning("ocpp.throttled", charge_point_id=session.charge_point_id,
                                    peer=_peer(connection), delayed=delayed,
                                    max_messages_per_second=budget.rate,
                                    burst=budget.burst)  # fmt: skip
                        delayed, logged_at = 0, now
                    await asyncio.sleep(wait)
                    in_a_row = 0
                if self.sessions.get(session.charge_point_id) is not connection:
                    return  # replaced by a newer connection: nothing more from this one
                answer = await session.handle(frame)
                if answer is not None and not send_now(connection, answer):
                    await connection.send(answer)
                in_a_row += 1
                if in_a_row >= _YIELD_EVERY:  # queued frames are read without suspending
                    in_a_row = 0
                    await asyncio.sleep(0)
        finally:
            idle.stop()


# -- logging -----------------------------------------------------------------------------------
class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs every handshake header at DEBUG; credentials must not reach the log."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if len(args) == 2 and isinstance(args[0], str) and args[0].lower() in _SECRET_HEADERS:
            args = (args[0], "[redacted]")
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs


# -- helpers -----------------------------------------------------------------------------------
def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    # Returning None completes the handshake without the header; websockets' default would
    # answer HTTP 400, which OCPP-J forbids.
    return next((p for p in SUBPROTOCOLS if p in offered), None)


def _offered(headers: Headers) -> list[str]:
    return [v.strip() for h in headers.get_all("Sec-WebSocket-Protocol") for v in h.split(",")]


def _peer(connection: ServerConnection) -> str:
    return format_peer(connection.remote_address)


def _address(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else "?"
