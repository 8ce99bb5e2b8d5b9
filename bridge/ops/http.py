"""The HTTP ops port: liveness, readiness, Prometheus metrics and the read-only status API.

It is separate from the OCPP port so that probes and scrapes never compete with chargers and
can be firewalled differently. It has no authentication: keep it on an internal network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from bridge.config import OpsSettings
from bridge.errors import ConfigError
from bridge.ops import api
from bridge.ops.guard import ConnectionGuard

if TYPE_CHECKING:
    from bridge.app import Bridge

__all__ = ["Health", "OpsServer", "liveness", "readiness"]

log = structlog.get_logger("bridge.ops")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Health:
    ok: bool
    checks: dict[str, bool] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def body(self, key: str) -> dict[str, Any]:
        return {key: self.ok, "checks": self.checks, "reasons": self.reasons}


def liveness(bridge: Bridge) -> Health:
    """Alive unless a task the bridge cannot work without has died (a restart is the cure)."""
    reasons = []
    for task in bridge.tasks:
        if task.done() and not bridge.stopping:
            error = None if task.cancelled() else task.exception()
            reasons.append(f"{task.get_name()} stopped: {error!r}" if error else
                           f"{task.get_name()} stopped")  # fmt: skip
    return Health(not reasons, {"tasks": not reasons}, reasons)


def readiness(bridge: Bridge) -> Health:
    """Ready when chargers can connect, state is durable and the hub accepts our set-up."""
    checks: dict[str, bool] = {}
    reasons: list[str] = []

    def check(name: str, ok: bool, reason: str) -> None:
        checks[name] = ok
        if not ok:
            reasons.append(reason)

    check("ocpp_listening", bridge.accepting, "the OCPP endpoint is not accepting connections"
          + (" (shutting down)" if bridge.stopping else ""))  # fmt: skip
    check("state_store", bridge.store.is_open, "the state database is not open")
    worker = bridge.worker
    paused = worker.paused_reason if worker is not None else "push worker not started"
    check("hub", paused is None, f"pushes paused: {paused}")
    alive = liveness(bridge)
    check("tasks", alive.ok, "; ".join(alive.reasons))
    return Health(all(checks.values()), checks, reasons)


class OpsServer:
    def __init__(self, bridge: Bridge, settings: OpsSettings) -> None:
        self.bridge = bridge
        self.settings = settings
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._port: int | None = None
        self.guard: ConnectionGuard | None = None
        #: Called with the reason of every connection refused by the guard (metrics hook).
        self.on_refused: Callable[[str], None] | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("ops server not started")
        return self._port

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._time_limit, api.api_middleware])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        api.add_routes(app, self.bridge)
        return app

    async def start(self) -> None:
        s = self.settings
        runner = web.AppRunner(
            self.app(), access_log=None, shutdown_timeout=1.0,
            keepalive_timeout=s.keepalive_timeout,
        )  # fmt: skip
        await runner.setup()
        assert runner.server is not None
        # Our own listener instead of web.TCPSite: the guard caps the connections (guard.py).
        self.guard = ConnectionGuard(
            runner.server,
            max_connections=s.max_connections,
            per_address=s.max_connections_per_address,
            descriptor_reserve=s.descriptor_reserve,
        )
        self.guard.on_refused = self.on_refused
        try:
            listener = await asyncio.get_running_loop().create_server(
                self.guard, s.host, s.port, backlog=128
            )
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                "ops.port", f"cannot listen on {s.host}:{s.port}: {exc.strerror or exc}"
            ) from exc
        self._runner, self._listener = runner, listener
        self._port = int(listener.sockets[0].getsockname()[1])
        log.info("ops.listening", host=s.host, port=self._port,
                 endpoints=["/healthz", "/readyz", "/metrics", f"{api.API_PREFIX}/"])  # fmt: skip

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @web.middleware
    async def _time_limit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A request that takes longer than ``request_timeout`` gets 503 instead of holding on."""
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                return await handler(request)
        except TimeoutError:
            return web.json_response({"error": "request timed out"}, status=503)

    # -- handlers --------------------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        health = liveness(self.bridge)
        body = {"status": "ok" if health.ok else "failing", **health.body("alive")}
        return web.json_response(body, status=200 if health.ok else 503)

    async def _readyz(self, request: web.Request) -> web.Response:
        health = readiness(self.bridge)
        return web.json_response(health.body("ready"), status=200 if health.ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = self.bridge.metrics.render(request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response
