"""A development/test double of Hubject's OICP hub (EVSE status and EVSE data pushes).

It is a real HTTP(S) server (aiohttp), so the bridge talks to it exactly as to Hubject,
including mutual TLS. It applies the OICP ActionType semantics per operator and endpoint,
records every push, measures how many pushes were in flight at once (OICP demands strictly
sequential pushes) and injects faults, in-process or over HTTP under ``/sim/``.

Not a production component: no authentication beyond optional TLS client certificates.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bridge.hubsim.actions import apply_push
from bridge.hubsim.control import control_routes, json_object
from bridge.hubsim.data import DATA_ROUTE_22, data_version, validation_errors, without_data
from bridge.hubsim.faults import (
    Endpoint,
    Faults,
    _Answer,
    _fault_body,
    _http_failure,
    _Summary,
    _summary,
    acknowledgment,
)
from bridge.hubsim.networks import NETWORK_ROUTES, SimNetworks
from bridge.hubsim.statefile import StateFile
from bridge.oicp.models import ActionType, PushEvseDataRequest, PushEvseStatusRequest

__all__ = ["BodyValidator", "Faults", "HubSimulator", "ReceivedPush"]
BodyValidator = Callable[[str, dict[str, Any]], None]

STATUS_ROUTE = "/api/oicp/evsepush/v21/operators/{operatorID}/status-records"
DATA_ROUTE = "/api/oicp/evsepush/v23/operators/{operatorID}/data-records"


@dataclass(frozen=True, slots=True)
class ReceivedPush:
    """One push request as the simulator saw and answered it.

    Kept lean on purpose: the simulator keeps every push, and tens of thousands of parsed
    bodies would make each full cyclic-GC pass stall it for ~100 ms, which would show up as
    push latency in the benchmark. The body is kept as bytes and parsed when asked for.
    """

    time: float  # time.monotonic() on arrival
    endpoint: Endpoint
    operator_id: str  # from the URL path
    action: str | None  # None if the body had no usable ActionType
    records: tuple[tuple[str, str | None], ...]  # (EvseID, EvseStatus); None for data pushes
    raw: bytes  # the request body as received
    http_status: int | None  # None: no answer reached the client (it went away, or a drop)
    code: str | None  # OICP StatusCode.Code of what the hub did; None if nothing was applied

    @property
    def body(self) -> dict[str, Any] | None:
        """The parsed JSON body, None if it is not a JSON object."""
        return json_object(self.raw)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "endpoint": self.endpoint,
            "operator_id": self.operator_id,
            "action": self.action,
            "records": [list(r) for r in self.records],
            "body": self.body,
            "http_status": self.http_status,
            "code": self.code,
        }


class HubSimulator:
    """In-process OICP hub double; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        body_validator: BodyValidator | None = None,
        latency: float = 0.0,
        on_push: Callable[[ReceivedPush], None] | None = None,
        state_file: StateFile | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._ssl_context = ssl_context
        self.body_validator = body_validator
        self.latency = latency
        self.on_push = on_push
        self.faults = Faults(self)
        self.received: list[ReceivedPush] = []
        self.schema_errors: list[str] = []
        self.max_in_flight = 0
        self.in_flight = 0
        # operator → EvseID → EvseStatus / EvseDataRecord: the "currently valid data".
        self._status: dict[str, dict[str, str]] = {}
        self._data: dict[str, dict[str, dict[str, Any]]] = {}
        #: EVSE network assignments (bridge.hubsim.networks): EVSEs it holds a record of.
        self.networks = SimNetworks(lambda op: {**self._status.get(op, {}),
                                                **self._data.get(op, {})})  # fmt: skip
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.state_file = state_file  # where the records survive a restart (None: nowhere)
        #: Refuse status (022) for EVSEs without an EVSE data record (``bridge.hubsim.data``).
        self.require_data_for_status = False
        self._keeper: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("hub simulator already started")
        if self.state_file is not None:
            self._status, self._data = self.state_file.load()
            self.networks.networks = self.state_file.networks
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(STATUS_ROUTE, self._on_status)
        app.router.add_post(DATA_ROUTE, self._on_data)
        for route in NETWORK_ROUTES:
            app.router.add_post(route, self._on_network)
        app.router.add_post(DATA_ROUTE_22, self._on_data)
        app.add_routes(control_routes(self))
        # handler_cancellation: a client that timed out must not stay "in flight" while its
        # handler sleeps on; short shutdown_timeout so stop() does not wait for hung handlers.
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        try:
            site = web.TCPSite(
                runner, self.host, self._requested_port, ssl_context=self._ssl_context
            )
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        if self.state_file is not None:
            self._keeper = asyncio.create_task(self.state_file.keep(self._records))

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        if self.state_file is not None and runner is not None:
            self.state_file.save(self._status, self._data, self.networks.networks)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("hub simulator not started")
        return self._port

    @property
    def base_url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    # -- state -----------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, str]:
        """EvseID → EvseStatus of the currently valid status set (all operators)."""
        return {k: v for per_op in self._status.values() for k, v in per_op.items()}

    @property
    def state_by_operator(self) -> dict[str, dict[str, str]]:
        return {op: dict(per_op) for op, per_op in self._status.items()}

    @property
    def data_state(self) -> dict[str, dict[str, Any]]:
        """EvseID → EvseDataRecord of the currently valid data set (all operators)."""
        return {k: v for per_op in self._data.values() for k, v in per_op.items()}

    def reset(self) -> None:
        """Forget everything: state, received pushes, statistics and faults."""
        self._status.clear()
        self._data.clear()
        self.networks.reset()
        self.received.clear()
        self.schema_errors.clear()
        self.max_in_flight = self.in_flight
        self.faults.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "max_in_flight": self.max_in_flight,
            "in_flight": self.in_flight,
            "requests": len(self.received),
            "by_http_status": dict(Counter(str(p.http_status) for p in self.received)),
            "by_code": dict(Counter(str(p.code) for p in self.received)),
            "schema_errors": list(self.schema_errors),
        }

    def _records(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        return self._status, self._data, self.networks.networks

    def _forget(self, evse_id: str) -> bool:
        found = False
        for per_op in self._status.values():
            found = per_op.pop(evse_id, None) is not None or found
        return found

    # -- push endpoints --------------------------------------------------------------------

    async def _on_status(self, request: web.Request) -> web.Response:
        return await self._handle_push(request, "status")

    async def _on_data(self, request: web.Request) -> web.Response:
        return await self._handle_push(request, "data")

    async def _on_network(self, request: web.Request) -> web.Response:
        return await self._handle_push(request, "network")

    async def _handle_push(self, request: web.Request, endpoint: Endpoint) -> web.Response:
        # In flight from arrival until the hub is done with the request: for a late fault that
        # is after the client gave up.
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        work = _Work(time.monotonic(), endpoint, request.match_info["operatorID"])
        handed_off = False
        try:
            work.raw = await request.read()
            work.body = json_object(work.raw)
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            summary = self.faults._summary(endpoint, work.body)
            late = self.faults._take("late", summary)
            if late is not None:
                delay = late.seconds - (time.monotonic() - work.arrived)
                task = asyncio.create_task(self._late(work, request, delay))
                handed_off = True
                try:
                    answer = await asyncio.shield(task)
                except asyncio.CancelledError:
                    work.delivered = False  # the client gave up; the hub goes on
                    raise
                return answer.response()
            drop = self.faults._take("drop", summary)
            if drop is not None and drop.code != "apply":
                work.delivered = False
                return _drop(request)  # nothing applied, nothing answered
            work.answer = await self._answer(request, endpoint, work.operator, work.body,
                                             work.arrived)  # fmt: skip
            if drop is not None:
                work.delivered = False
                return _drop(request)  # applied, but the client gets no answer
            return work.answer.response()
        finally:
            if not handed_off:
                self.in_flight -= 1
                self._record(work)

    async def _late(self, work: _Work, request: web.Request, delay: float) -> _Answer:
        try:
            await asyncio.sleep(max(0.0, delay))
            work.answer = await self._answer(request, work.endpoint, work.operator, work.body,
                                             work.arrived)  # fmt: skip
            return work.answer
        finally:
            self.in_flight -= 1
            self._record(work)

    def _record(self, work: _Work) -> None:
        """Keep one push: what the hub did (``code``) and what the client got (``http_status``,
        None when no answer reached it)."""
        action, records = _summary(work.endpoint, work.body)
        answer = work.answer
        push = ReceivedPush(
            time=work.arrived,
            endpoint=work.endpoint,
            operator_id=work.operator,
            action=action,
            records=records,
            raw=work.raw,
            http_status=answer.status if answer is not None and work.delivered else None,
            code=answer.code if answer is not None else None,
        )
        self.received.append(push)
        if self.on_push is not None:
            self.on_push(push)

    async def _answer(
        self,
        request: web.Request,
        endpoint: Endpoint,
        operator: str,
        body: dict[str, Any] | None,
        arrived: float,
    ) -> _Answer:
        # Validate first so that schema errors are recorded even for faulted requests.
        problem = self._check_body(request, endpoint, body)

        summary = self.faults._summary(endpoint, body)
        hang = self.faults._take("hang", summary)
        if hang is None:
            return self._decide(endpoint, operator, body, summary, problem)
        if not hang.round_trip:
            await asyncio.sleep(hang.seconds)
            return self._decide(endpoint, operator, body, summary, problem)
        # A hub whose round trip is ``seconds``: its work first, then the rest of the time.
        answer = self._decide(endpoint, operator, body, summary, problem)
        await asyncio.sleep(max(0.0, hang.seconds - (time.monotonic() - arrived)))
        return answer

    def _decide(
        self,
        endpoint: Endpoint,
        operator: str,
        body: dict[str, Any] | None,
        summary: _Summary,
        problem: _Answer | None,
    ) -> _Answer:
        """The answer to a push the faults let through (and, if it is taken, its effect)."""
        failure = self.faults._take("fail_http", summary)
        if failure is not None:
            return _http_failure(failure)
        coded = self.faults._take("answer_code", summary)
        if coded is not None:
            return acknowledgment(coded.code, f"simulated answer {coded.code}")

        if problem is not None:
            return problem
        assert body is not None  # _check_body returns a problem otherwise
        if endpoint == "network":
            return _Answer(*self.networks.answer(operator, body))
        if endpoint == "status":
            status_req = PushEvseStatusRequest.model_validate(body)
            ose = status_req.OperatorEvseStatus
            items: list[tuple[str, Any]] = [
                (r.EvseID, str(r.EvseStatus)) for r in ose.EvseStatusRecord
            ]
            if self.require_data_for_status and status_req.ActionType is not ActionType.DELETE:
                missing = without_data(self._data, operator, (e for e, _ in items))
                if missing:
                    listed = ", ".join(missing[:20])
                    return acknowledgment("022", f"no EVSE data for EvseID {listed}")
            return apply_push(self._status, operator, ose.OperatorID, status_req.ActionType, items)
        data_req = PushEvseDataRequest.model_validate(body)
        oed = data_req.OperatorEvseData
        items = [(r["EvseID"], r) for r in oed.EvseDataRecord]
        return apply_push(self._data, operator, oed.OperatorID, data_req.ActionType, items)

    def _check_body(
        self, request: web.Request, endpoint: Endpoint, body: dict[str, Any] | None
    ) -> _Answer | None:
        """An HTTP 4xx answer if the request is malformed, else None."""
        if request.content_type != "application/json":
            return _fault_body(
                415, f"Content-Type must be application/json, not {request.content_type!r}"
            )
        if request.charset is not None and request.charset.lower() not in ("utf-8", "utf8"):
            return _fault_body(415, f"charset must be UTF-8, not {request.charset!r}")
        if body is None:
            return _fault_body(400, "request body is not a JSON object")
        if endpoint == "network":
            return None  # no published schema; its rules: bridge.hubsim.networks
        version = data_version(request.path)
        if endpoint == "data":  # Hubject's own schema check, with its validationErrors
            errors = validation_errors(body, version)
            if errors:
                self.schema_errors.append(f"data {version}: {errors[:5]}")
                return _fault_body(400, "Error parsing/validating JSON.", errors)
        if self.body_validator is not None and not (endpoint == "data" and version == "2.2"):
            try:
                self.body_validator(endpoint, body)
            except Exception as exc:
                self.schema_errors.append(f"{endpoint}: {exc}")
                return _fault_body(400, f"schema violation: {exc}")
        model: type[BaseModel] = (
            PushEvseStatusRequest if endpoint == "status" else PushEvseDataRequest
        )
        try:
            model.model_validate(body)
        except ValidationError as exc:
            errors = [
                {
                    "fieldReference": ".".join(str(p) for p in err["loc"]),
                    "errorMessage": err["msg"],
                }
                for err in exc.errors()
            ]
            return _fault_body(400, "Validation error", errors)
        return None


@dataclass(slots=True)
class _Work:
    """One push request while the simulator handles it."""

    arrived: float  # time.monotonic() on arrival
    endpoint: Endpoint
    operator: str  # from the URL path
    raw: bytes = b""
    body: dict[str, Any] | None = None
    answer: _Answer | None = None
    delivered: bool = True  # False: the client never got ``answer`` (gone, or dropped)


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer (the response is never written)."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=500)
