"""Proxy mode: relay a charger's connection to the operator's CSMS and tap its status reports.

For a charger in ``proxy`` mode the OCPP server does its own checks (path, throttle, security
profile, registry) and then hands over twice:

* in the handshake, :meth:`Proxy.open` opens the CSMS connection first, offering exactly the
  subprotocols the charger offered; the charger's handshake completes with the one the CSMS
  selected, or is refused with the CSMS's own 401/403/404, or 502/503 with Retry-After;
* for the connection, :meth:`Proxy.relay` passes every frame both ways unchanged (same bytes,
  same order, text or binary as sent), CALLs of the CSMS included, until one side closes; the
  other side is then closed with the same code.

On the way, the tap (``bridge.ocpp.tap``) notes status reports going to the CSMS. When the
CSMS's CALLRESULT for one comes back, the report is stored (status engine, outbox) **before**
that CALLRESULT is relayed, so a status the charger saw confirmed is never lost; a CALLERROR
means the report is not taken. The tap never stops the relay: frames it cannot read are relayed
and logged, and storing may hold the CSMS's answer for at most ``upstream.tap_timeout``.

Websocket pings are per hop (the server pings the charger, the client pings the CSMS). The
charger's frames are read at most at its message budget, as in ``csms`` mode.
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

import structlog
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed, InvalidHeader
from websockets.frames import Close
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response

from bridge.config import ChargerSettings, OcppSettings
from bridge.ocpp.auth import Authenticator
from bridge.ocpp.failure import Failure
from bridge.ocpp.rpc import DIALECTS
from bridge.ocpp.session import StatusSink
from bridge.ocpp.tap import Note, Tap, Verdict
from bridge.ocpp.upstream import Refusal, Upstream, refusal_for
from bridge.ocpp.wire import send_now
from bridge.ratelimit import TokenBucket

log = structlog.get_logger("bridge.proxy")

TO_CSMS, TO_CHARGER = "to_csms", "to_charger"
DIRECTIONS = (TO_CSMS, TO_CHARGER)
#: Added latency of one relayed frame (received on one hop → written to the other), seconds.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0)
NOTE_LOG_WINDOW = 60.0  # s: at most one proxy.unparsable line per connection and window
REFUSAL_LOG_WINDOW = 10.0  # s: at most one proxy.upstream_refused line per window
THROTTLE_LOG_WINDOW = 60.0
_YIELD_EVERY = 8  # frames relayed back to back before other connections get a turn
_UNSENDABLE = {1005: 1000, 1006: 1001, 1015: 1001}  # codes never sent in a close frame


class Host(Protocol):
    """What the proxy needs of the OCPP server it is attached to."""

    settings: OcppSettings
    auth: Authenticator
    sessions: dict[str, ServerConnection]

    @property
    def handshake(self) -> Refusals: ...


class Refusals(Protocol):
    """Where a login the CSMS refused is logged and throttled (the server's handshake)."""

    def refused(
        self,
        address: str,
        peer: str,
        charge_point_id: str | None,
        failure: Failure,
        *,
        status: int | None,
        profile: int | None = None,
        detail: str | None = None,
    ) -> None: ...


class Sink(StatusSink, Protocol):
    """Where proxied chargers' presence and confirmed status reports go (delivery's Ingest)."""

    async def connected(self, charge_point_id: str, protocol: str) -> None: ...

    async def disconnected(self, charge_point_id: str) -> None: ...

    def seen(self, charge_point_id: str) -> None: ...


class RelayStats:
    """Counters for ``bridge_upstream_*``; read by the metrics collector at scrape time."""

    def __init__(self) -> None:
        self.handshakes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.frames = dict.fromkeys(DIRECTIONS, 0)
        #: per direction: count per bucket of LATENCY_BUCKETS, the last one for +Inf
        self.latency = {d: [0] * (len(LATENCY_BUCKETS) + 1) for d in DIRECTIONS}
        self.latency_sum = dict.fromkeys(DIRECTIONS, 0.0)

    def relayed(self, direction: str, seconds: float) -> None:
        self.frames[direction] += 1
        self.latency[direction][bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum[direction] += seconds


class _Link:
    """One proxied charger connection and its CSMS connection."""

    __slots__ = ("charge_point_id", "charger", "closed_by", "noted", "noted_at", "peer", "tap",
                 "upstream")  # fmt: skip

    def __init__(
        self,
        charge_point_id: str,
        charger: ServerConnection,
        upstream: ClientConnection,
        tap: Tap | None,
    ) -> None:
        self.charge_point_id = charge_point_id
        self.charger = charger
        self.upstream = upstream
        self.tap = tap
        self.peer = _peer(charger)
        self.closed_by: str | None = None
        self.noted = 0  # unparsable frames since the last log line
        self.noted_at = -math.inf


class Proxy:
    """The proxy side of one OCPP server."""

    def __init__(self, host: Host, upstream: Upstream, sink: Sink) -> None:
        self.host = host
        self.upstream = upstream
        self.sink = sink
        self.stats = RelayStats()
        self._opened: dict[ServerConnection, ClientConnection] = {}
        self._links: set[_Link] = set()
        self._background: set[asyncio.Future[Any]] = set()
        self._refused_count, self._refused_logged_at = 0, -math.inf

    @classmethod
    def attach(
        cls, host: Host, chargers: Mapping[str, ChargerSettings], sink: Sink
    ) -> Proxy | None:
        """The proxy for ``host`` if any charger is proxied (None otherwise)."""
        upstream = Upstream(host.settings, chargers)
        if not upstream.any_proxied():
            return None
        host.auth.checked_upstream = upstream.checks_password
        s = upstream.settings
        fields = {
            "upstream": upstream.template, "default_mode": upstream.default_mode,
            "proxied_chargers": upstream.count_proxied(), "credentials": s.credentials,
            "client_cert": str(s.client_cert) if s.client_cert else None,
        }  # fmt: skip
        if upstream.insecure:
            log.warning("proxy.configured", **fields, insecure="plain ws:// to another host: "
                        "credentials and frames cross the network unencrypted")  # fmt: skip
        else:
            log.info("proxy.configured", **fields)
        return cls(host, upstream, sink)

    def proxied(self, charge_point_id: str) -> bool:
        return self.upstream.proxied(charge_point_id)

    @property
    def connections(self) -> int:
        """Open CSMS connections (relays, and handshakes not handed over yet)."""
        return len(self._links) + len(self._opened)

    # -- handshake ---------------------------------------------------------------------------
    async def open(
        self, connection: ServerConnection, request: Request, charge_point_id: str
    ) -> Response | None:
        """Open the CSMS connection; None lets the charger's handshake complete."""
        try:
            offered = [
                protocol
                for value in request.headers.get_all("Sec-WebSocket-Protocol")
                for protocol in parse_subprotocol(value)
            ]
        except InvalidHeader:
            return connection.respond(400, "Malformed Sec-WebSocket-Protocol\n")
        address = _address(connection)
        try:
            upstream = await self.upstream.open(charge_point_id, offered, request.headers, address)
        except Exception as exc:  # every failure is an answer to the charger, never a crash
            return self._refuse(connection, charge_point_id, refusal_for(exc, self._retry()))
        self.stats.handshakes["ok"] += 1
        chosen = upstream.subprotocol
        # Answer the charger with the CSMS's choice. websockets keeps select_subprotocol as an
        # attribute of each connection's protocol (its documented hook), so this one only.
        setattr(connection.protocol, "select_subprotocol", lambda offered: chosen)  # noqa: B010
        self._opened[connection] = upstream
        connection.connection_lost_waiter.add_done_callback(lambda _: self._abandon(connection))
        return None

    def _retry(self) -> int:
        return self.upstream.settings.retry_after

    def _refuse(
        self, connection: ServerConnection, charge_point_id: str, refusal: Refusal
    ) -> Response:
        self.stats.handshakes[refusal.reason] += 1
        peer = _peer(connection)
        if refusal.login:  # the CSMS refused the charger: a failed login, throttled as such
            self.host.handshake.refused(
                _address(connection), peer, charge_point_id, Failure.UPSTREAM_REFUSED,
                status=refusal.status, profile=self.host.auth.profile_for(charge_point_id),
                detail=f"the CSMS answered {refusal.upstream_status}",
            )  # fmt: skip
        else:
            self._log_refusal(charge_point_id, peer, refusal)
        response = connection.respond(refusal.status, refusal.body)
        for name, value in refusal.headers:
            response.headers[name] = value
        if refusal.retry_after is not None:
            response.headers["Retry-After"] = str(refusal.retry_after)
        return response

    def _log_refusal(self, charge_point_id: str, peer: str, refusal: Refusal) -> None:
        """The CSMS down means every charger is refused: one line per window, with a count."""
        self._refused_count += 1
        now = time.monotonic()
        if now - self._refused_logged_at < REFUSAL_LOG_WINDOW:
            return
        log.warning("proxy.upstream_refused", charge_point_id=charge_point_id, peer=peer,
                    status=refusal.status, reason=refusal.reason,
                    upstream_status=refusal.upstream_status, error=refusal.error,
                    refused=self._refused_count, retry_after=refusal.retry_after,
                    upstream=self.upstream.template)  # fmt: skip
        self._refused_count, self._refused_logged_at = 0, now

    def _abandon(self, connection: ServerConnection) -> None:
        """The charger left before its handshake completed: close its CSMS connection."""
        upstream = self._opened.pop(connection, None)
        if upstream is not None:
            self._track(asyncio.ensure_future(upstream.close(1001, "charger went away")))

    # -- connection --------------------------------------------------------------------------
    async def relay(self, connection: ServerConnection, charge_point_id: str) -> None:
        """Relay until both connections are closed (the server's handler for proxied chargers)."""
        upstream = self._opened.pop(connection, None)
        if upstream is None:  # its CSMS connection was closed meanwhile
            await connection.close(1011, "central system connection lost")
            return
        subprotocol = str(connection.subprotocol) if connection.subprotocol else None
        dialect = DIALECTS.get(subprotocol) if subprotocol else None
        protocol = dialect.version if dialect else (subprotocol or "none")
        link = _Link(
            charge_point_id,
            connection,
            upstream,
            Tap(charge_point_id, dialect) if dialect else None,
        )
        sessions = self.host.sessions
        previous = sessions.get(charge_point_id)
        sessions[charge_point_id] = connection
        self._links.add(link)
        try:
            if previous is not None:  # a reconnect while the old TCP connection is half-open
                log.info("charger.replaced", charge_point_id=charge_point_id, peer=link.peer)
                self._track(
                    asyncio.create_task(previous.close(1000, "replaced by a new connection"))
                )
            await self.sink.connected(charge_point_id, protocol)
            log.info("charger.connected", charge_point_id=charge_point_id, protocol=protocol,
                     peer=link.peer, mode="proxy", tapped=dialect is not None,
                     upstream=self.upstream.template)  # fmt: skip
            await self._run(link)
        finally:
            self._links.discard(link)
            if sessions.get(charge_point_id) is connection:
                del sessions[charge_point_id]
            await asyncio.gather(
                connection.close(1011), upstream.close(1011), return_exceptions=True
            )  # no-ops unless a bug stopped the relay
            log.info("charger.disconnected", charge_point_id=charge_point_id,
                     code=connection.close_code, reason=connection.close_reason, mode="proxy",
                     closed_by=link.closed_by, upstream_code=upstream.close_code)  # fmt: skip
            await self.sink.disconnected(charge_point_id)

    async def _run(self, link: _Link) -> None:
        to_charger = asyncio.create_task(self._from_csms(link))
        try:
            await self._from_charger(link)
            await to_charger
        except Exception:  # a bug must cost this connection, nothing else
            self.stats.errors["internal"] += 1
            log.exception("proxy.relay_error", charge_point_id=link.charge_point_id)
            to_charger.cancel()
        finally:
            if not to_charger.done():
                to_charger.cancel()

    async def _from_charger(self, link: _Link) -> None:
        """Charger → CSMS, at most at the charger's message budget; ends when either side does."""
        charger, upstream, cp_id = link.charger, link.upstream, link.charge_point_id
        security = self.host.settings.security
        budget = TokenBucket(security.max_messages_per_second, security.message_burst)
        delayed, logged_at, in_a_row = 0, -math.inf, 0
        relayed = self.stats.relayed
        while True:
            try:
                frame = await charger.recv()
            except ConnectionClosed as exc:
                await self._follow(link, exc, "charger", upstream)
                return
            wait = budget.take()
            if wait > 0:
                delayed += 1
                now = time.monotonic()
                if now - logged_at >= THROTTLE_LOG_WINDOW:
                    log.warning("ocpp.throttled", charge_point_id=cp_id, peer=link.peer,
                                delayed=delayed, max_messages_per_second=budget.rate,
                                burst=budget.burst)  # fmt: skip
                    delayed, logged_at = 0, now
                await asyncio.sleep(wait)
                in_a_row = 0
            started = time.perf_counter()
            self.sink.seen(cp_id)
            if link.tap is not None:
                try:
                    note = await link.tap.from_charger(frame)
                except Exception:  # the tap must never break the relay
                    note = Note("failed", "tap error")
                    log.exception("proxy.tap_failed", charge_point_id=cp_id, direction=TO_CSMS)
                if note is not None:
                    self._note(link, note, TO_CSMS)
            try:
                if not send_now(upstream, frame):
                    await upstream.send(frame)
            except ConnectionClosed:
                return  # the CSMS side ended; its pump closes the charger
            relayed(TO_CSMS, time.perf_counter() - started)
            in_a_row += 1
            if in_a_row >= _YIELD_EVERY:  # queued frames are read without suspending
                in_a_row = 0
                await asyncio.sleep(0)

    async def _from_csms(self, link: _Link) -> None:
        """CSMS → charger; a confirmed status report is stored before its CALLRESULT goes on."""
        charger, upstream, tap = link.charger, link.upstream, link.tap
        relayed = self.stats.relayed
        in_a_row = 0
        while True:
            try:
                frame = await upstream.recv()
            except ConnectionClosed as exc:
                await self._follow(link, exc, "csms", charger)
                return
            started = time.perf_counter()
            if tap is not None and tap.pending:
                try:
                    verdict = tap.from_csms(frame)
                except Exception:
                    verdict = None
                    log.exception("proxy.tap_failed", charge_point_id=link.charge_point_id,
                                  direction=TO_CHARGER)  # fmt: skip
                if isinstance(verdict, Verdict):
                    await self._verdict(link, verdict)
                elif isinstance(verdict, Note):
                    self._note(link, verdict, TO_CHARGER)
            try:
                if not send_now(charger, frame):
                    await charger.send(frame)
            except ConnectionClosed:
                return  # the charger side ended; its pump closes the CSMS connection
            relayed(TO_CHARGER, time.perf_counter() - started)
            in_a_row += 1
            if in_a_row >= _YIELD_EVERY:
                in_a_row = 0
                await asyncio.sleep(0)

    async def _follow(
        self,
        link: _Link,
        exc: ConnectionClosed,
        side: str,
        other: ServerConnection | ClientConnection,
    ) -> None:
        """One hop ended: close the other with the same code (where the protocol allows)."""
        code, reason, by = _closing(exc, side)
        if link.closed_by is None:
            link.closed_by = by
            if by == side and exc.rcvd is None:
                self.stats.errors["abnormal_close"] += 1
        await other.close(code, reason)

    # -- tap -------------------------------------------------------------------------------------
    async def _verdict(self, link: _Link, verdict: Verdict) -> None:
        cp_id = link.charge_point_id
        if verdict.error_code is not None:
            self.stats.errors["status_refused"] += 1
            log.info("proxy.status_refused", charge_point_id=cp_id, action=verdict.action,
                     code=verdict.error_code, reports=len(verdict.reports),
                     outcome="not recorded: the CSMS did not take it")  # fmt: skip
            return
        stored = asyncio.ensure_future(self._store(cp_id, verdict))
        budget = self.upstream.settings.tap_timeout
        try:
            await asyncio.wait_for(asyncio.shield(stored), budget)
        except TimeoutError:
            self.stats.errors["tap_failed"] += 1
            self._track(stored)  # it still completes (and logs if it fails) in the background
            log.error("proxy.tap_failed", charge_point_id=cp_id, action=verdict.action,
                      error=f"not stored within {budget:g} s; the CSMS's answer is relayed "
                      "and the report is stored when the state database catches up")  # fmt: skip
        except Exception as exc:
            self.stats.errors["tap_failed"] += 1
            log.error("proxy.tap_failed", charge_point_id=cp_id, action=verdict.action,
                      error=str(exc) or type(exc).__name__,
                      outcome="the CSMS's answer is relayed; the report is not stored")  # fmt: skip

    async def _store(self, charge_point_id: str, verdict: Verdict) -> None:
        for report in verdict.reports:
            await self.sink.status(
                charge_point_id, report.evse_key, report.connector_id, report.status,
                error_code=report.error_code, reported_at=report.reported_at,
            )  # fmt: skip

    def _note(self, link: _Link, note: Note, direction: str) -> None:
        self.stats.errors[note.kind] += 1
        if note.kind != "unparsable":
            log.warning("proxy.tap_ignored", charge_point_id=link.charge_point_id,
                        action=note.action, kind=note.kind, reason=note.reason,
                        outcome="relayed, not recorded")  # fmt: skip
            return
        link.noted += 1
        now = time.monotonic()
        if now - link.noted_at >= NOTE_LOG_WINDOW:
            log.warning("proxy.unparsable", charge_point_id=link.charge_point_id,
                        direction=direction, reason=note.reason, frames=link.noted,
                        outcome="relayed unchanged")  # fmt: skip
            link.noted, link.noted_at = 0, now

    def _track(self, task: asyncio.Future[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None and not isinstance(exc, ConnectionClosed):
            log.error("proxy.tap_failed", error=str(exc) or type(exc).__name__,
                      outcome="a report stored late failed to store")  # fmt: skip


def _closing(exc: ConnectionClosed, side: str) -> tuple[int, str, str]:
    """(code, reason, who ended it) to close the other hop the way this one ended.

    The first close frame of the hop counts: the peer's (``side`` closed) or the bridge's own
    (shutdown 1001, a newer connection 1000, a revoked certificate 1008, a frame over the
    limit 1009, a ping timeout 1011). Codes that never travel in a close frame become 1000
    (1005, closed without a code) or 1001 (1006, the connection was lost; 1015, TLS failed).
    """
    first: Close | None
    if exc.rcvd is not None and (exc.sent is None or exc.rcvd_then_sent):
        first, by = exc.rcvd, side
    elif exc.sent is not None:
        first, by = exc.sent, "bridge"
    else:
        return 1001, f"{side} connection lost", side
    code = first.code
    if code in _UNSENDABLE:
        return _UNSENDABLE[code], "" if code == 1005 else f"{side} connection lost", by
    return code, first.reason, by


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if address else "?"


def _address(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else "?"
