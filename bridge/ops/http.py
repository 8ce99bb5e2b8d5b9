"""The HTTP ops port: liveness, readiness, Prometheus metrics, and the API (unless it has a port
of its own, ``api.port``).

It is separate from the OCPP port so that probes and scrapes never compete with chargers and
can be firewalled differently. Health and metrics need no token; the API does
(``bridge.api``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiohttp import web

from bridge.api.context import ApiContext
from bridge.api.routes import OPENAPI_PATH, add_routes, api_middleware
from bridge.config import ApiSettings, OpsSettings
from bridge.errors import ConfigError
from bridge.ops.details import DetailSource, health_details
from bridge.ops.guard import ConnectionGuard

__all__ = ["Health", "OpsServer", "Probe", "liveness", "readiness"]

log = structlog.get_logger("bridge.ops")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Store(Protocol):
    @property
    def is_open(self) -> bool: ...


class Probe(DetailSource, Protocol):
    """What health and readiness look at (the running bridge provides it)."""

    accepting: bool
    stopping: bool

    @property
    def tasks(self) -> Sequence[asyncio.Task[None]]: ...

    @property
    def store(self) -> _Store: ...


class Renderer(Protocol):
    async def refresh(self) -> None: ...

    def render(self, accept: str | None = None) -> tuple[bytes, str]: ...


@dataclass(slots=True)
class Health:
    ok: bool
    checks: dict[str, bool] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def body(self, key: str) -> dict[str, Any]:
        return {key: self.ok, "checks": self.checks, "reasons": self.reasons}


def liveness(bridge: Probe) -> Health:
    """Alive unless a task the bridge cannot work without has died (a restart is the cure)."""
    reasons = []
    for task in bridge.tasks:
        if task.done() and not bridge.stopping:
            error = None if task.cancelled() else task.exception()
            reasons.append(f"{task.get_name()} stopped: {error!r}" if error else
                           f"{task.get_name()} stopped")  # fmt: skip
    return Health(not reasons, {"tasks": not reasons}, reasons)


def readiness(bridge: Probe) -> Health:
    """Ready while this process can take chargers: listening, state durable, tasks alive.

    Not the hub: a bridge whose hub is down or refusing keeps recording every status and sends
    it later; taking it out of service would only lose chargers' reports (healthz details say
    how the hub is doing)."""
    checks: dict[str, bool] = {}
    reasons: list[str] = []

    def check(name: str, ok: bool, reason: str) -> None:
        checks[name] = ok
        if not ok:
            reasons.append(reason)

    check("ocpp_listening", bridge.accepting, "the OCPP endpoint is not accepting connections"
          + (" (shutting down)" if bridge.stopping else ""))  # fmt: skip
    check("state_store", bridge.store.is_open, "the state database is not open")
    alive = liveness(bridge)
    check("tasks", alive.ok, "; ".join(alive.reasons))
    return Health(all(checks.values()), checks, reasons)


class OpsServer:
    def __init__(
        self,
        probe: Probe,
        settings: OpsSettings,
        *,
        metrics: Renderer,
        api: ApiContext | None = None,
        api_settings: ApiSettings | None = None,
    ) -> None:
        self.probe = probe
        self.settings = settings
        self.metrics = metrics
        self.api = api
        self.api_settings = api_settings or ApiSettings()
        self._runners: list[web.AppRunner] = []
        self._listeners: list[asyncio.Server] = []
        self._port: int | None = None
        self._api_port: int | None = None
        #: The connection caps of the ops port (and of the API's own port, if it has one).
        self.guard: ConnectionGuard | None = None
        self.api_guard: ConnectionGuard | None = None
        #: Called with the reason of every connection refused by a guard (metrics hook).
        self.on_refused: Callable[[str], None] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("ops server not started")
        return self._port

    @property
    def api_port(self) -> int:
        """The port the API is served on (the ops port unless api.port is set)."""
        return self._api_port if self._api_port is not None else self.port

    @property
    def api_url(self) -> str:
        scheme = "https" if self.api_settings.tls_cert is not None else "http"
        host = self.api_settings.host if self.api_settings.port is not None else self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"{scheme}://{host}:{self.api_port}"

    def app(self) -> web.Application:
        app = self._app(with_api=self.api_settings.port is None)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    def _app(self, *, with_api: bool) -> web.Application:
        app = web.Application(
            middlewares=[self._time_limit, api_middleware],
            client_max_size=self.api_settings.max_body_bytes,
        )
        if with_api and self.api is not None:
            add_routes(app, self.api)
        return app

    async def start(self) -> None:
        s = self.settings
        self._port, self.guard = await self._listen(self.app(), s.host, s.port, "ops.port", None)
        endpoints = ["/healthz", "/readyz", "/metrics"]
        a = self.api_settings
        if self.api is not None and a.port is not None:
            context = _server_tls(a) if a.tls_cert is not None else None
            self._api_port, self.api_guard = await self._listen(
                self._app(with_api=True), a.host, a.port, "api.port", context
            )
            log.info("api.listening", host=a.host, port=self._api_port, tls=context is not None,
                     openapi=OPENAPI_PATH)  # fmt: skip
        elif self.api is not None:
            endpoints += ["/api/v1/", "/api/v2/"]
        log.info("ops.listening", host=s.host, port=self._port, endpoints=endpoints)

    async def _listen(
        self, app: web.Application, host: str, port: int, field_name: str,
        context: ssl.SSLContext | None,
    ) -> tuple[int, ConnectionGuard]:  # fmt: skip
        s = self.settings
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, keepalive_timeout=s.keepalive_timeout
        )
        await runner.setup()
        assert runner.server is not None
        # Our own listener instead of web.TCPSite: the guard caps the connections (guard.py).
        guard = ConnectionGuard(
            runner.server,
            max_connections=s.max_connections,
            per_address=s.max_connections_per_address,
            descriptor_reserve=s.descriptor_reserve,
        )
        guard.on_refused = self.on_refused
        try:
            listener = await asyncio.get_running_loop().create_server(
                guard, host, port, backlog=128, ssl=context
            )
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                field_name,
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "stop what uses it or choose another port",
            ) from exc
        self._runners.append(runner)
        self._listeners.append(listener)
        return int(listener.sockets[0].getsockname()[1]), guard

    async def close(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()

    @web.middleware
    async def _time_limit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A probe or scrape that takes longer than ``request_timeout`` gets 503 instead of
        holding on. API requests are not cut short: a write is committed or refused whole."""
        if request.path.startswith("/api/"):
            return await handler(request)
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                return await handler(request)
        except TimeoutError:
            return web.json_response({"error": "request timed out"}, status=503)

    # -- handlers --------------------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        health = liveness(self.probe)
        body = {"status": "ok" if health.ok else "failing", **health.body("alive"),
                "details": health_details(self.probe)}  # fmt: skip
        return web.json_response(body, status=200 if health.ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        health = readiness(self.probe)
        # Followers are ready (they take chargers); the role says which one pushes.
        body = {**health.body("ready"), "role": self.probe.replication_status()["role"]}
        return web.json_response(body, status=200 if health.ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        await self.metrics.refresh()  # what is kept and stale is made again, off the loop
        body, content_type = self.metrics.render(request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response


def _server_tls(settings: ApiSettings) -> ssl.SSLContext:
    assert settings.tls_cert is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(settings.tls_cert),
                                str(settings.tls_key) if settings.tls_key else None)  # fmt: skip
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("api.tls_cert", f"cannot use {settings.tls_cert}: {exc}") from exc
    return context
