"""The push worker: the one lane to the hub, one request at a time.

OICP requires data pushes to be strictly sequential ("MUST never be executed in parallel"), so
a single task sends every push and every fullLoad; nothing else calls the hub.

What goes to the hub next is one decision (:func:`bridge.delivery.lane.next_step`); the loop in
:meth:`PushWorker.run` carries it out, and this module says what each outcome of a status push
changes and how the whole lane reacts to failures. The requests that are not one EVSE's status
have modules of their own: the fullLoad and network assignments (``bridge.delivery.lane_steps``),
EVSE data (``bridge.delivery.data_push``).

After a request, failures are told apart by what they concern:

* the hub (HTTP 5xx, 408, 429, timeouts, network errors): every request waits (backoff, honouring
  Retry-After); when the request may have been applied all the same, also the settle time, and
  that EVSE's status at the hub counts as unknown (it is pushed again whatever was acknowledged);
* one request (a retryable OICP code answered for it): that EVSE goes to the back of the queue
  with a backoff of its own, and is parked after ``max_attempts``; when two different requests in
  a row get such answers it is the hub after all, and the lane backs off instead (not counting
  against the EVSEs) until a request succeeds;
* the set-up (017, 210, 300, HTTP 401/403): every request waits ``pause``, nothing is dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from bridge.delivery.data_outbox import DataOutbox
from bridge.delivery.data_push import DataSender
from bridge.delivery.lane import (
    AlwaysLeader,
    DataLane,
    FullLoadRequests,
    Gate,
    Limiter,
    PushClient,
    PushEvent,
    RetrySettings,
    SendData,
    SendDataFullLoad,
    SendFullLoad,
    SendNetwork,
    SendRecord,
    Step,
    Unlimited,
    Wait,
    next_step,
)
from bridge.delivery.lane_steps import send_full_load, send_network
from bridge.delivery.networks import NetworkPushes
from bridge.delivery.outbox import Outbox
from bridge.delivery.policy import (
    Verdict,
    backoff,
    classify,
    failure_code,
    failure_detail,
    is_ambiguous,
)
from bridge.errors import HubError, NotLeaderError
from bridge.hotlog import HotLogger
from bridge.oicp.models import ActionType
from bridge.oicp.networks import NetworkClient
from bridge.status.engine import StatusEngine
from bridge.status.table import OicpStatus
from bridge.store.base import EvseRow

log = structlog.get_logger("bridge.push")
hot_log = HotLogger("bridge.push")  # push.ok: a line per push

#: Acknowledged pushes are written within this many seconds (with the next commit that comes
#: sooner): a crash in between costs an identical re-push, and a busy lane one commit per
#: window instead of one per push.
ACK_COMMIT_S = 0.05


class PushWorker:
    def __init__(
        self,
        outbox: Outbox,
        engine: StatusEngine,
        client: PushClient,
        *,
        limiter: Limiter,
        retry: RetrySettings | None = None,
        clock: Callable[[], float] = time.time,
        gate: Gate | None = None,
        data: DataOutbox | None = None,
        data_limiter: Limiter | None = None,
        data_batch_size: int = 100,
    ) -> None:
        self.gate: Gate = gate or AlwaysLeader()
        self.outbox = outbox
        self.engine = engine
        self.client = client
        self.limiter = limiter
        self.retry = retry or RetrySettings()
        self.clock = clock
        self.paused_reason: str | None = None  # set while the hub reports a config error
        self.last_full_load: float | None = None
        self.in_flight = False
        #: Wall-clock time until which the hub may still apply a request of ours whose outcome
        #: we do not know (kept over a restart, so the next process waits too).
        self.unsettled_until = 0.0
        self.on_push: Callable[[PushEvent], None] | None = None
        self.full_load = FullLoadRequests()
        #: Network assignments and their client (None: the lane carries none).
        self.networks: tuple[NetworkPushes, NetworkClient] | None = None
        self._failures = 0  # consecutive hub-wide failures (the hub's health, not an EVSE's)
        self._hold_until = 0.0  # monotonic time before which nothing is sent
        self._flips: dict[str, int] = {}
        self._last_deferred: str | None = None  # target of the previous request if deferred
        self._hub_refuses = False  # different requests deferred in a row: the hub, not them
        self._stop = asyncio.Event()
        #: EVSE data in the same lane (None: statuses only).
        self.data = data
        self.data_full_load = FullLoadRequests()
        self.last_data_full_load: float | None = None
        self.data_limiter: Limiter = data_limiter or Unlimited()
        self._data_lane: DataLane | None = None
        self._data_sender: DataSender | None = None
        if data is not None:
            data.changed = outbox.changed  # one wake-up for the lane
            self._data_lane = DataLane(data, self.data_limiter, self.data_full_load,
                                       data_batch_size)  # fmt: skip
            self._data_sender = DataSender(self, data, client)  # type: ignore[arg-type]
            # The order between the services: status after data, data delete after status.
            outbox.gate = data.status_may_go
            data.on_ready = outbox.release
            data.status_at_hub = self._status_at_hub

    def _status_at_hub(self, evse_id: str) -> bool:
        row = self.outbox.rows.get(evse_id)
        return row is not None and row.hub_holds

    # -- the decision ------------------------------------------------------------------------
    def next_step(self, now: float) -> Step:
        """What the lane does next at monotonic ``now`` (see :func:`lane.next_step`)."""
        return next_step(
            hold_until=self._hold_until, full_load=self.full_load, outbox=self.outbox,
            limiter=self.limiter, now=now, lease_until=self.gate.lease_until(),
            request_timeout=self.retry.push_timeout, data=self._data_lane,
            networks=self.networks[0] if self.networks is not None else None,
        )  # fmt: skip

    def reset(self) -> None:
        """Forget the lane's transient state (a replica that becomes the leader starts from
        what the database says, not from what it knew when it last led)."""
        self._failures = 0
        self._hold_until = 0.0
        self._flips.clear()
        self._last_deferred = None
        self._hub_refuses = False
        self.paused_reason = None
        self.full_load.not_before = 0.0
        self.data_full_load.not_before = 0.0

    def wake(self) -> None:
        """Decide again now (the lease was renewed, taken or lost)."""
        self.outbox.changed.set()

    @property
    def idle(self) -> bool:
        """Nothing pending, nothing in flight, no fullLoad asked for."""
        data = self.data is not None and (bool(self.data) or self.data_full_load.requested)
        return not self.in_flight and not self.outbox and not self.full_load.requested and not data

    # -- control ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Push until :meth:`stop`; the request in flight when stop is called finishes first."""
        while not self._stop.is_set():
            try:
                self.outbox.changed.clear()  # before deciding: a later change wakes the wait
                step = self.next_step(time.monotonic())
                if isinstance(step, Wait):
                    await self._wait(step.until)
                elif isinstance(step, SendFullLoad):
                    await send_full_load(self)
                elif isinstance(step, SendNetwork):
                    await send_network(self, step.name)
                elif isinstance(step, SendRecord):
                    await self._push(step.row, step.action)
                    self._turn(data_next=True)
                elif isinstance(step, SendData):
                    assert self._data_sender is not None
                    await self._data_sender.push(step.batch)
                    self._turn(data_next=False)
                elif isinstance(step, SendDataFullLoad):
                    assert self._data_sender is not None
                    await self._data_sender.full_load()
            except NotLeaderError:
                self.in_flight = False  # deposed before sending: the gate is closed now
            except Exception:
                # A bug or a failing state store must not end pushing for good: log it, back
                # off like a hub failure, and go on. Nothing was acknowledged, so nothing is lost.
                self.in_flight = False
                delay = self._back_off()
                log.exception("push.error", retry_in_s=round(delay, 2))
        self.full_load.fail(list(self.full_load.waiters), HubError("bridge is shutting down"))
        self.data_full_load.fail(
            list(self.data_full_load.waiters), HubError("bridge is shutting down")
        )

    def _turn(self, *, data_next: bool) -> None:
        """Statuses and data take turns when both wait (a data push delays a status by at
        most one request)."""
        if self._data_lane is not None:
            self._data_lane.turn = data_next

    def stop(self) -> None:
        self._stop.set()
        self.outbox.changed.set()

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (e.g. after a start, while the hub may still apply a
        request of the previous process)."""
        self._hold_until = max(self._hold_until, time.monotonic() + seconds)
        self.outbox.changed.set()

    def request_full_load(self) -> asyncio.Future[int]:
        """Ask for a fullLoad (sent between pushes); the future gives the record count, or the
        hub's refusal. Requests made while one waits are served by the same fullLoad."""
        fut = self.full_load.request()
        self.outbox.changed.set()
        return fut

    def request_data_full_load(self) -> asyncio.Future[int]:
        """Ask for a data fullLoad (every valid record in one request); the future gives the
        record count, or the hub's refusal."""
        if self.data is None:
            raise HubError("EVSE data is not enabled (evse_data.enabled)")
        fut = self.data_full_load.request()
        self.outbox.changed.set()
        return fut

    async def _wait(self, until: float | None) -> None:
        timeout = None if until is None else until - time.monotonic()
        if timeout is not None and timeout <= 0:
            return
        try:
            async with asyncio.timeout(timeout):
                await self.outbox.changed.wait()  # also set by stop() and request_full_load()
        except TimeoutError:
            pass

    # -- one record ------------------------------------------------------------------------
    async def _sending(self, target: str, timeout: float) -> bool:
        """Durable (and fenced) "``target`` is in flight" before it goes out; then whether the
        lease still outlives the request (the write took a moment)."""
        await self.outbox.store.sending(target)
        return self.gate.lease_until() - time.monotonic() > timeout

    async def _push(self, row: EvseRow, action: ActionType) -> None:
        evse_id = row.evse_id
        status = OicpStatus(row.status)
        if not await self._sending(evse_id, self.retry.push_timeout):
            return  # decide again: the lane now waits for the lease
        if self.outbox.rows.get(evse_id) is not row or OicpStatus(row.status) is not status:
            return  # changed while the marker was written: decide again
        self.limiter.take()
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
            outcome = await self.client.push_evse_status(
                action, [(evse_id, status)], timeout=self.retry.push_timeout
            )
        except HubError as exc:
            self.in_flight = False
            self._record_failed(exc, action, time.monotonic() - started, fields, evse_id)
            if not is_ambiguous(exc):
                self.outbox.store.put_in_flight(None)
            self.outbox.store.commit_soon()
            return
        except asyncio.CancelledError:  # abandoned at shutdown: the hub may still apply it
            self.in_flight = False
            self.outbox.ambiguous(evse_id)
            self._unsettled(self.retry.push_timeout)
            raise
        self.in_flight = False
        self._succeeded()
        self._flips.pop(evse_id, None)
        if action is ActionType.DELETE:
            self.outbox.deleted(evse_id, outcome.code)
            if self.data is not None:
                self.data.release(evse_id)  # its data delete may go now
        else:
            self.outbox.acknowledged(evse_id, status, outcome.code)
        if action is not ActionType.UPDATE and self.networks is not None:
            self.networks[0].hub_learned(evse_id)
        self._emit(action.value, "ok", outcome.code, outcome.duration_ms / 1000)
        hot_log.info("push.ok", hub_code=outcome.code, duration_ms=round(outcome.duration_ms, 1),
                 pending=len(self.outbox), **fields)  # fmt: skip
        # The acknowledgment rides with the next commit (within ACK_COMMIT_S) instead of
        # holding up the next push: losing it in a crash only means one identical re-push
        # (insert/update recover). (Replicas: the next push's in-flight marker commits it
        # first, fenced.)
        self.outbox.store.put_in_flight(None)
        self.outbox.store.commit_within(ACK_COMMIT_S)

    def _record_failed(
        self,
        exc: HubError,
        action: ActionType,
        duration: float,
        fields: dict[str, object],
        evse_id: str,
    ) -> None:
        verdict = classify(exc, action.value)
        ambiguous = is_ambiguous(exc)
        detail = failure_detail(exc, duration, fields)
        self.outbox.failed(evse_id, verdict.value, exc.code, exc.additional_info or str(exc))
        if ambiguous:
            self.outbox.ambiguous(evse_id)
            self._flips.pop(evse_id, None)  # a 022 after this is expected, not a data error
        deferred_before, self._last_deferred = self._last_deferred, None
        if verdict is Verdict.RETRY:
            self._hub_failed(exc, detail, ambiguous, self.retry.push_timeout)
        elif verdict is Verdict.PAUSE:
            self._pause(exc, detail)
        elif verdict is Verdict.DEFER:
            if self._deferred(evse_id, deferred_before):
                # Every request waits, and none is held against its EVSE, until one succeeds.
                self.outbox.move_back(evse_id)
                self._hub_failed(exc, detail, ambiguous, self.retry.push_timeout)
            else:  # this EVSE's problem: to the back of the queue, on a backoff of its own
                attempts = self.outbox.defer(evse_id)
                if attempts >= self.retry.max_attempts:
                    verdict = Verdict.PARK
                    detail["reason"] = f"refused {attempts} times while other EVSEs went through"
                else:
                    wait = backoff(attempts, self.retry.initial, self.retry.cap, exc.retry_after)
                    self.outbox.move_back(evse_id, time.monotonic() + wait)
                    log.warning("push.deferred", retry_in_s=round(wait, 2), attempts=attempts,
                                **detail)  # fmt: skip
        elif verdict is Verdict.FLIP:
            flips = self._flips[evse_id] = self._flips.get(evse_id, 0) + 1
            if flips > self.retry.max_flips:
                verdict = Verdict.PARK
                detail["reason"] = f"022 to insert and to update ({flips} times)"
            else:
                # 022 to update: the hub lacks the record -> insert it (and the reverse).
                self.outbox.set_hub_holds(evse_id, action is ActionType.INSERT)
                self.outbox.move_back(evse_id)
                log.warning("push.flip", next_action="update" if action is ActionType.INSERT
                            else "insert", **detail)  # fmt: skip
        elif verdict is Verdict.ABSENT:  # a delete of a record the hub does not hold
            self._succeeded()
            self.outbox.deleted(evse_id, exc.code)
            log.info("push.ok", hub_code=exc.code, pending=len(self.outbox), **fields)
        if verdict is Verdict.PARK:
            self._flips.pop(evse_id, None)
            self.outbox.park(evse_id, exc.code)
            log.error("push.parked", attempts=self.outbox.rows[evse_id].attempts, **detail)
        if self.data is not None and not self._status_at_hub(evse_id):
            self.data.release(evse_id)  # gone (or given up on): its data delete may go
        self._emit(action.value, verdict.value, failure_code(exc), duration)

    # -- outcomes for the whole lane -----------------------------------------------------------
    def _hub_failed(
        self, exc: HubError, detail: dict[str, object], ambiguous: bool, timeout: float
    ) -> None:
        """A hub-wide failure: hold every request for the backoff (and the settle time)."""
        delay = self._back_off(exc.retry_after)
        if ambiguous:
            settle = self._unsettled(timeout)
            delay = max(delay, settle)
            self._hold_until = max(self._hold_until, time.monotonic() + settle)
        log.warning("push.retry", retry_in_s=round(delay, 2), failures=self._failures,
                    ambiguous=ambiguous, **detail)  # fmt: skip

    def _deferred(self, target: str, before: str | None) -> bool:
        """A request for ``target`` was refused for now; True: so was a different one just
        before it (``before``), or the hub refuses still: that is the hub, not the request."""
        self._last_deferred = target
        if self._hub_refuses or before not in (None, target):
            self._hub_refuses = True
        return self._hub_refuses

    def _unsettled(self, timeout: float) -> float:
        """The hub may still apply a request: note until when (wall clock) and return the
        settle time."""
        settle = self.retry.settle if self.retry.settle is not None else timeout
        self.unsettled_until = max(self.unsettled_until, self.clock() + settle)
        return settle

    def _pause(self, exc: HubError, detail: dict[str, object]) -> None:
        self.paused_reason = f"hub answered {exc.code or exc.http_status}: {exc}"
        self._hold_until = max(self._hold_until, time.monotonic() + self.retry.pause)
        log.error("push.paused", reason=self.paused_reason, retry_in_s=self.retry.pause,
                  pending=len(self.outbox), **detail)  # fmt: skip

    def _back_off(self, retry_after: float | None = None) -> float:
        """One more consecutive failure: hold every request for the next backoff delay."""
        self._failures += 1
        delay = backoff(self._failures, self.retry.initial, self.retry.cap, retry_after)
        self._hold_until = max(self._hold_until, time.monotonic() + delay)
        return delay

    def _succeeded(self) -> None:
        self._failures = 0
        self._hub_refuses = False
        self._last_deferred = None
        if self.paused_reason is not None:
            log.info("push.resumed", after=self.paused_reason)
            self.paused_reason = None

    def _emit(self, action: str, outcome: str, code: str | None, duration: float) -> None:
        if self.on_push is not None:
            self.on_push(PushEvent(action, outcome, code, duration))
