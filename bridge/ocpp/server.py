"""The OCPP-J websocket endpoint: ``ws(s)://host/ocpp/{chargePointId}``.

Every connection passes, in order: the TLS handshake (if the port has a certificate), the
websocket handshake with the charge point ID and its security profile checked in
``_process_request``, then the message loop with a per-connection message budget.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote, urlsplit

import structlog
from cryptography import x509
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from bridge.config import ChargerSettings, OcppSettings
from bridge.errors import ConfigError
from bridge.ocpp import auth, tls, v16, v201
from bridge.ocpp.auth import Failure
from bridge.ocpp.rpc import DIALECTS, OCPP16
from bridge.ocpp.session import Handler, Session, Sink
from bridge.ratelimit import TokenBucket
from bridge.status.registry import Registry

log = structlog.get_logger("bridge.ocpp")

PATH_PREFIX = "/ocpp/"
SUBPROTOCOLS = [Subprotocol(name) for name in DIALECTS]
HANDLERS: dict[str, dict[str, Handler]] = {"1.6": v16.HANDLERS, "2.0.1": v201.HANDLERS}
THROTTLE_LOG_WINDOW = 60.0  # s: at most one ocpp.throttled line per connection and window
BUSY_LOG_WINDOW = 10.0  # s: at most one ocpp.auth_busy line per window
_YIELD_EVERY = 8  # messages handled back to back before giving other connections a turn
_CERT_CHECKS_PER_TURN = 500  # connections checked against a new CRL between event-loop turns
_BASIC_CHALLENGE = 'Basic realm="OCPP", charset="UTF-8"'
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


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
        self.throttle = auth.FailureThrottle(
            security.auth_failure_limit, security.auth_failure_window
        )
        self.tls_files = tls.TlsFiles(security, self.auth.client_cert_mode())
        #: Called with a Failure label on every refused login (metrics hook).
        self.on_auth_failure: Callable[[str], None] | None = None
        self._server: Server | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._tls_watch: asyncio.Task[None] | None = None
        self._tls_lock = asyncio.Lock()
        self._busy_refused, self._busy_logged_at = 0, -math.inf

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
            compression="deflate" if s.compression == "deflate" else None,
            backlog=s.listen_backlog,
            open_timeout=s.security.handshake_timeout,
            create_connection=_connection_class(self),
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

    # -- TLS files ------------------------------------------------------------------------
    async def _watch_tls(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._reload_logged()

    def request_tls_reload(self) -> None:
        """Check the TLS files now (SIGHUP), in the background."""
        self._track(asyncio.create_task(self._reload_logged(unchanged_log=True)))

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
                self._track(asyncio.create_task(connection.close(1008, "certificate revoked")))

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

    def _track(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- handshake -------------------------------------------------------------------------
    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        peer = _peer(connection)
        cp_id = charge_point_id_from_path(request.path)
        if cp_id is None:
            log.warning("ocpp.rejected", status=404, path=urlsplit(request.path).path[:120],
                        peer=peer, reason="not an OCPP path /ocpp/{chargePointId}")  # fmt: skip
            return connection.respond(HTTPStatus.NOT_FOUND, "Unknown charge point\n")
        address = _address(connection)
        wait = self.throttle.retry_after(address)
        if wait > 0:
            self._refused(address, peer, cp_id, Failure.THROTTLED, status=429)
            response = connection.respond(
                HTTPStatus.TOO_MANY_REQUESTS, "Too many failed logins; try again later\n"
            )
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        profile = self.auth.profile_for(cp_id)
        known = self.registry.knows(cp_id)
        failure: Failure | None
        if profile in (1, 2):
            # Unknown IDs get the same 401 as a wrong password: no enumeration of IDs.
            failure = await self.auth.check_basic(
                cp_id, request.headers.get_all("Authorization"), known=known
            )
            if failure is Failure.BUSY:
                return self._busy(connection)
            if failure is not None:
                self._refused(address, peer, cp_id, failure, status=401, profile=profile)
                response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
                response.headers["WWW-Authenticate"] = _BASIC_CHALLENGE
                return response
            return None
        if profile == 3:
            ssl_object = connection.transport.get_extra_info("ssl_object")
            peercert = ssl_object.getpeercert() if ssl_object is not None else None
            failure = auth.check_client_cert(cp_id, peercert)
            detail = None
            if failure is None and self._revoked_peer(connection):
                # Its TLS handshake finished before a CRL that lists it was loaded.
                failure, detail = Failure.CLIENT_CERT_REJECTED, "certificate revoked"
            if failure is not None:
                self._refused(address, peer, cp_id, failure, status=403, profile=profile,
                              detail=detail)  # fmt: skip
                return connection.respond(HTTPStatus.FORBIDDEN, "Forbidden\n")
        if not known:
            # Profile 0 (no secret to protect) or 3 (the peer proved it is this ID): say so.
            self._refused(
                address, peer, cp_id, Failure.UNKNOWN_CHARGE_POINT, status=404, profile=profile
            )
            return connection.respond(HTTPStatus.NOT_FOUND, "Unknown charge point\n")
        return None

    def _refused(
        self,
        address: str,
        peer: str,
        charge_point_id: str | None,
        failure: Failure,
        *,
        status: int | None,
        profile: int | None = None,
        detail: str | None = None,
    ) -> None:
        """One log line per refused login (no credential in it), count it, call the hook."""
        fields: dict[str, Any] = {
            "reason": failure.value, "status": status, "peer": peer,
            "charge_point_id": charge_point_id, "profile": profile,
        }  # fmt: skip
        if detail is not None:
            fields["detail"] = detail
        if failure is Failure.THROTTLED or self.throttle.retry_after(address) > 0:
            log.debug("ocpp.auth_failed", **fields)  # announced once by ocpp.auth_throttled
        else:
            log.warning("ocpp.auth_failed", **fields)
            if self.throttle.failed(address):
                log.warning("ocpp.auth_throttled", address=self.throttle.key(address),
                            peer=peer, limit=int(self.throttle.limit),
                            retry_after=round(self.throttle.retry_after(address), 1),
                            window_s=self.settings.security.auth_failure_window)  # fmt: skip
        self._notify(failure)

    def _busy(self, connection: ServerConnection) -> Response:
        """HTTP 503 + Retry-After: the password check did not start in time (a login storm).

        Not a failed login (the address is not throttled for it); logged at most once per
        ``BUSY_LOG_WINDOW`` with the number refused since the previous line.
        """
        checks = self.auth.checks
        retry_after = checks.retry_after()
        self._busy_refused += 1
        now = time.monotonic()
        if now - self._busy_logged_at >= BUSY_LOG_WINDOW:
            log.warning("ocpp.auth_busy", refused=self._busy_refused, waited_s=checks.limit,
                        queued_s=round(checks.wait(), 1), retry_after=retry_after)  # fmt: skip
            self._busy_refused, self._busy_logged_at = 0, now
        self._notify(Failure.BUSY)
        response = connection.respond(
            HTTPStatus.SERVICE_UNAVAILABLE, "Too many logins at once; try again later\n"
        )
        response.headers["Retry-After"] = str(retry_after)
        return response

    def _notify(self, failure: Failure) -> None:
        if self.on_auth_failure is not None:
            try:
                self.on_auth_failure(failure.value)
            except Exception:  # a metrics bug must not break the handshake
                log.exception("ocpp.hook_failed", hook="on_auth_failure")

    def _tls_failed(self, transport: asyncio.BaseTransport, exc: BaseException) -> None:
        peername = transport.get_extra_info("peername")
        peer = _format_peer(peername)
        reason = _tls_reason(exc)
        failure = auth.tls_failure(exc)
        if failure is None:  # scanners, plain http on the TLS port, dropped mobile links
            log.info("ocpp.tls_failed", peer=peer, reason=reason)
            return
        address = str(peername[0]) if peername else "?"
        self._refused(address, peer, None, failure, status=None, detail=reason)

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
            self._track(asyncio.create_task(previous.close(1000, "replaced by a new connection")))
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
        while True:
            try:
                async with asyncio.timeout(idle_limit):
                    frame = await connection.recv()
            except TimeoutError:
                log.warning("charger.silent", charge_point_id=session.charge_point_id,
                            idle_s=idle_limit)  # fmt: skip
                await connection.close(1001, "no message within the heartbeat interval")
                return
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
            if answer is not None:
                await connection.send(answer)
            in_a_row += 1
            if in_a_row >= _YIELD_EVERY:  # queued frames are read without suspending
                in_a_row = 0
                await asyncio.sleep(0)


# -- TLS handshake -----------------------------------------------------------------------------
class _OcppConnection(ServerConnection):
    """A websockets connection whose TLS handshake the OCPP server runs itself.

    With ``serve(ssl=...)`` the event loop runs the handshake and drops failures silently; here a
    refused client certificate is logged with the peer address and counts as a failed login.
    """

    owner: ClassVar[OcppServer]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tls = self.owner.tls
        if tls is None:
            super().connection_made(transport)
            return
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # start_tls takes over reading
        self.owner._track(self.loop.create_task(self._tls_handshake(transport, tls)))

    async def _tls_handshake(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        timeout = self.owner.settings.security.handshake_timeout
        held = _HeldData()
        try:
            transport = await self.loop.start_tls(
                raw, held, context, server_side=True,
                ssl_handshake_timeout=timeout, ssl_shutdown_timeout=timeout,
            )  # fmt: skip
        except (OSError, TimeoutError, ssl.SSLError, ConnectionError) as exc:
            self.owner._tls_failed(raw, exc)
            raw.abort()
            return
        if transport is None:
            raw.abort()
            return
        transport.set_protocol(self)
        super().connection_made(transport)
        held.hand_over(self)


def _connection_class(owner: OcppServer) -> type[ServerConnection]:
    return type("OcppConnection", (_OcppConnection,), {"owner": owner})


class _HeldData(asyncio.Protocol):
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


def _tls_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    if isinstance(exc, TimeoutError):
        return "TLS handshake timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


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
    return _format_peer(connection.remote_address)


def _format_peer(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if address else "?"


def _address(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else "?"
