"""The push worker: the only code that talks to the hub, one request at a time.

OICP requires data pushes to be strictly sequential ("MUST never be executed in parallel"), so
a single task sends every push and every fullLoad; nothing else calls the hub.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from bridge.delivery.outbox import Outbox
from bridge.delivery.policy import Verdict, backoff, classify
from bridge.errors import HubError
from bridge.oicp.client import PushOutcome
from bridge.oicp.models import ActionType
from bridge.ratelimit import TokenBucket
from bridge.status.engine import StatusEngine
from bridge.status.table import OicpStatus
from bridge.store.sqlite import EvseRow

log = structlog.get_logger("bridge.push")


class PushClient(Protocol):
    async def push_evse_status(
        self, action: ActionType, records: Sequence[tuple[str, OicpStatus]]
    ) -> PushOutcome: ...


@dataclass(frozen=True)
class RetrySettings:
    initial: float = 1.0  # first backoff (s); doubles per consecutive failure
    cap: float = 300.0  # longest backoff (s)
    pause: float = 60.0  # retry interval while the hub reports a configuration error (s)
    max_flips: int = 2  # insert<->update switches per EVSE before it is parked


@dataclass(frozen=True)
class PushEvent:
    """What the metrics hook is told about every attempt."""

    action: str
    outcome: str  # ok | retry | flip | pause | park (the Verdict values)
    code: str | None
    duration_s: float


class PushWorker:
    def __init__(
        self,
        outbox: Outbox,
        engine: StatusEngine,
        client: PushClient,
        *,
        limiter: TokenBucket,
        retry: RetrySettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.outbox = outbox
        self.engine = engine
        self.client = client
        self.limiter = limiter
        self.retry = retry or RetrySettings()
        self.clock = clock
        self.paused_reason: str | None = None  # set while the hub reports a config error
        self.last_full_load: float | None = None
        self.in_flight = False
        self.on_push: Callable[[PushEvent], None] | None = None
        self._failures = 0  # consecutive transient failures (the hub's health, not an EVSE's)
        self._hold_until = 0.0  # monotonic time before which nothing is sent
        self._flips: dict[str, int] = {}
        self._full_load_waiters: list[asyncio.Future[int]] = []
        self._full_load_requested = asyncio.Event()
        self._stop = asyncio.Event()

    # -- control ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Push until :meth:`stop`; the push in flight when stop is called finishes first."""
        while not self._stop.is_set():
            try:
                await self._step()
            except Exception:
                # A bug or a failing state store must not end pushing for good: log it, back
                # off like a hub failure, and go on. Nothing was acknowledged, so nothing is lost.
                self.in_flight = False
                delay = self._back_off()
                log.exception("push.error", retry_in_s=round(delay, 2))
        self._fail_waiters(HubError("bridge is shutting down"))

    async def _step(self) -> None:
        hold = self._hold_until - time.monotonic()
        if hold > 0:
            await self._wait(self._stop, hold)
        elif self._full_load_waiters:
            await self._full_load()
        elif (row := self.outbox.head()) is not None:
            await self._push(row)
        else:
            self.outbox.changed.clear()
            await self._wait(self.outbox.changed, None, also=self._full_load_requested)

    def stop(self) -> None:
        self._stop.set()

    def request_full_load(self) -> asyncio.Future[int]:
        """Queue a fullLoad behind the push in flight; the future gives the record count."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._full_load_waiters.append(fut)
        self._full_load_requested.set()
        return fut

    async def _wait(
        self, event: asyncio.Event, limit: float | None, also: asyncio.Event | None = None
    ) -> None:
        waits = {asyncio.ensure_future(event.wait()), asyncio.ensure_future(self._stop.wait())}
        if also is not None:
            waits.add(asyncio.ensure_future(also.wait()))
        _, rest = await asyncio.wait(waits, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        for task in rest:
            task.cancel()

    # -- one push --------------------------------------------------------------------------
    async def _push(self, row: EvseRow) -> None:
        evse_id = row.evse_id
        status = OicpStatus(row.status)
        action = ActionType.UPDATE if row.hub_holds else ActionType.INSERT
        await self.limiter.acquire()
        fields: dict[str, object] = {
            "charge_point_id": row.charge_point_id,
            "evse_id": evse_id,
            "ocpp_status": self.engine.ocpp_statuses(evse_id),
            "oicp_status": status.value,
            "action": action.value,
        }
        started = time.monotonic()
        self.in_flight = True
        try:
            outcome = await self.client.push_evse_status(action, [(evse_id, status)])
        except HubError as exc:
            duration = time.monotonic() - started
            self.in_flight = False
            await self._failed(exc, action, duration, fields, evse_id)
            return
        self.in_flight = False
        self._succeeded()
        self._flips.pop(evse_id, None)
        self.outbox.acknowledged(evse_id, status, "ok", outcome.code)
        self._emit(action, "ok", outcome.code, outcome.duration_ms / 1000)
        log.info("push.ok", hub_code=outcome.code, duration_ms=round(outcome.duration_ms, 1),
                 pending=len(self.outbox), **fields)  # fmt: skip
        # The acknowledgment rides with the next group commit instead of holding up the next
        # push: losing it in a crash only means one identical re-push (insert/update recover).
        self.outbox.store.commit_soon()

    async def _failed(
        self,
        exc: HubError,
        action: ActionType,
        duration: float,
        fields: dict[str, object],
        evse_id: str | None,
    ) -> None:
        verdict = classify(exc, action.value)
        detail = {
            "hub_code": exc.code,
            "http_status": exc.http_status,
            "duration_ms": round(duration * 1000, 1),
            "error": str(exc),
            "additional_info": exc.additional_info,
            **fields,
        }
        if evse_id is not None:
            self.outbox.failed(evse_id, verdict.value, exc.code, exc.additional_info or str(exc))
        if verdict is Verdict.RETRY:
            delay = self._back_off(exc.retry_after)
            log.warning("push.retry", retry_in_s=round(delay, 2), failures=self._failures,
                        **detail)  # fmt: skip
        elif verdict is Verdict.PAUSE:
            self.paused_reason = f"hub answered {exc.code or exc.http_status}: {exc}"
            self._hold_until = time.monotonic() + self.retry.pause
            log.error("push.paused", reason=self.paused_reason, retry_in_s=self.retry.pause,
                      pending=len(self.outbox), **detail)  # fmt: skip
        elif verdict is Verdict.FLIP and evse_id is not None:
            flips = self._flips[evse_id] = self._flips.get(evse_id, 0) + 1
            if flips > self.retry.max_flips:
                verdict = Verdict.PARK
            else:
                # 022 to update: the hub lacks the record -> insert it (and the reverse).
                self.outbox.set_hub_holds(evse_id, action is ActionType.INSERT)
                log.warning("push.flip", next_action="update" if action is ActionType.INSERT
                            else "insert", **detail)  # fmt: skip
        if verdict is Verdict.PARK and evse_id is not None:
            self._flips.pop(evse_id, None)
            self.outbox.park(evse_id, exc.code)
            log.error("push.parked", **detail)
        self._emit(action, verdict.value, exc.code or _http(exc), duration)
        self.outbox.store.commit_soon()

    def _back_off(self, retry_after: float | None = None) -> float:
        """One more consecutive failure: hold every push for the next backoff delay."""
        self._failures += 1
        delay = backoff(self._failures, self.retry.initial, self.retry.cap, retry_after)
        self._hold_until = time.monotonic() + delay
        return delay

    def _succeeded(self) -> None:
        self._failures = 0
        if self.paused_reason is not None:
            log.info("push.resumed", after=self.paused_reason)
            self.paused_reason = None

    def _emit(self, action: ActionType, outcome: str, code: str | None, duration: float) -> None:
        if self.on_push is not None:
            self.on_push(PushEvent(action.value, outcome, code, duration))

    # -- fullLoad --------------------------------------------------------------------------
    async def _full_load(self) -> None:
        waiters, self._full_load_waiters = self._full_load_waiters, []
        self._full_load_requested.clear()
        try:
            await self._send_full_load(waiters)
        except BaseException:
            # Not a hub answer (e.g. the state store failed after the hub accepted it): the
            # request stays queued for the next attempt instead of leaving its callers waiting.
            queued = self._full_load_waiters
            self._full_load_waiters[:0] = [f for f in waiters if not f.done() and f not in queued]
            self._full_load_requested.set()
            raise

    async def _send_full_load(self, waiters: list[asyncio.Future[int]]) -> None:
        sent = {
            evse_id: (cp_id, self.engine.status(evse_id))
            for evse_id in self.engine.evse_ids()
            if (cp_id := self.engine.charge_point_of(evse_id)) is not None
        }
        records = [(evse_id, status) for evse_id, (_, status) in sent.items()]
        await self.limiter.acquire()
        started = time.monotonic()
        self.in_flight = True
        try:
            outcome = await self.client.push_evse_status(ActionType.FULL_LOAD, records)
        except HubError as exc:
            self.in_flight = False
            self._full_load_waiters[:0] = waiters  # try again after the backoff / pause
            self._full_load_requested.set()
            await self._failed(
                exc, ActionType.FULL_LOAD, time.monotonic() - started,
                {"action": "fullLoad", "records": len(records)}, None,
            )  # fmt: skip
            if classify(exc, "fullLoad") is Verdict.PARK:  # the hub refuses this body: give up
                self._fail_waiters(exc)
            return
        self.in_flight = False
        self._succeeded()
        self.outbox.full_load_done(sent)
        self.last_full_load = self.clock()
        self.outbox.store.put_meta("last_full_load", str(self.last_full_load))
        self._emit(ActionType.FULL_LOAD, "ok", outcome.code, outcome.duration_ms / 1000)
        log.info("fullload.ok", action="fullLoad", records=len(records), hub_code=outcome.code,
                 duration_ms=round(outcome.duration_ms, 1))  # fmt: skip
        await self.outbox.store.commit()
        for fut in waiters:
            if not fut.done():
                fut.set_result(len(records))

    def _fail_waiters(self, exc: HubError) -> None:
        waiters, self._full_load_waiters = self._full_load_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_exception(exc)


def _http(exc: HubError) -> str | None:
    return f"http_{exc.http_status}" if exc.http_status is not None else "transport"
