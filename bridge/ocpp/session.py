"""One charger connection: decode frames, validate, dispatch to the version's handlers, answer.

Messages of one connection are handled one at a time (OCPP-J allows one outstanding CALL per
direction), so handlers never race for the same charger.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from bridge.errors import BridgeError, OcppCallError
from bridge.ocpp import schemas
from bridge.ocpp.rpc import Call, Dialect, FrameError, call_error, call_result, parse
from bridge.status.table import OcppStatus

log = structlog.get_logger("bridge.ocpp")


class StatusSink(Protocol):
    """Where connector status reports go (delivery's Ingest), from a session or the proxy tap."""

    async def status(
        self,
        charge_point_id: str,
        evse_key: int,
        connector_id: int,
        status: OcppStatus,
        *,
        error_code: str | None = None,
        reported_at: str | None = None,
    ) -> None: ...


class Sink(StatusSink, Protocol):
    """Where handlers put what chargers report (implemented by delivery's Ingest)."""

    async def boot(self, charge_point_id: str, info: dict[str, Any]) -> None: ...

    def seen(self, charge_point_id: str) -> None: ...


Handler = Callable[["Session", dict[str, Any]], Awaitable[dict[str, Any]]]


def utc_now() -> str:
    """Current UTC time as OCPP wants it: RFC 3339 with ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Session:
    def __init__(
        self,
        charge_point_id: str,
        dialect: Dialect,
        handlers: dict[str, Handler],
        sink: Sink,
        *,
        heartbeat_interval: int,
    ) -> None:
        self.charge_point_id = charge_point_id
        self.dialect = dialect
        self.handlers = handlers
        self.sink = sink
        self.heartbeat_interval = heartbeat_interval

    async def handle(self, frame: str | bytes) -> str | None:
        """Answer one frame; None when no answer is due (a CALLRESULT/CALLERROR).

        Never raises for anything a charger sends: every CALL gets a CALLRESULT or CALLERROR,
        so one bad message cannot end the connection or disturb other chargers.
        """
        self.sink.seen(self.charge_point_id)
        try:
            call = parse(frame, self.dialect)
        except FrameError as exc:
            if not exc.reply:
                log.debug("ocpp.ignored", charge_point_id=self.charge_point_id, reason=str(exc))
                return None
            log.warning("ocpp.bad_frame", charge_point_id=self.charge_point_id,
                        code=exc.code, reason=exc.description[:200])  # fmt: skip
            return call_error(exc.unique_id, exc.code, exc.description)
        if call is None:
            return None
        try:
            result = await self._dispatch(call)
        except OcppCallError as exc:
            log.warning("ocpp.call_error", charge_point_id=self.charge_point_id,
                        action=call.action[:60], code=exc.code,
                        reason=exc.description[:200])  # fmt: skip
            return call_error(call.unique_id, exc.code, exc.description, exc.details)
        except BridgeError as exc:  # e.g. the state store failed: no confirmation, charger retries
            log.error("ocpp.internal_error", charge_point_id=self.charge_point_id,
                      action=call.action, error=str(exc))  # fmt: skip
            return call_error(call.unique_id, "InternalError", "Could not record the message")
        except Exception:  # a bug must cost one CALLERROR, not the connection
            log.exception("ocpp.internal_error", charge_point_id=self.charge_point_id,
                          action=call.action)  # fmt: skip
            return call_error(call.unique_id, "InternalError", "Could not process the message")
        try:
            schemas.validate(self.dialect, call.action, result, response=True)
        except OcppCallError as exc:  # our bug; the charger must not get an invalid answer
            log.error("ocpp.invalid_response", charge_point_id=self.charge_point_id,
                      action=call.action, reason=exc.description)  # fmt: skip
            return call_error(call.unique_id, "InternalError", "Could not build a valid response")
        return call_result(call.unique_id, result)

    async def _dispatch(self, call: Call) -> dict[str, Any]:
        handler = self.handlers.get(call.action)
        if handler is None:
            if call.action in schemas.known_actions(self.dialect):
                raise OcppCallError(
                    "NotSupported", f"{call.action} is recognized but not supported"
                )
            raise OcppCallError("NotImplemented", f"Unknown action {call.action[:60]!r}")
        schemas.validate(self.dialect, call.action, call.payload)
        log.debug("ocpp.call", charge_point_id=self.charge_point_id, action=call.action)
        return await handler(self, call.payload)
