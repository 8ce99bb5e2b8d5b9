"""The push worker: the one lane to the hub, one request at a time.

OICP requires data pushes to be strictly sequential ("MUST never be executed in parallel"), so
a single task sends every push and every fullLoad; nothing else calls the hub.

What goes to the hub next is one decision (:func:`bridge.delivery.lane.next_step`); the loop in
:meth:`PushWorker.run` carries it out, and this module says what each outcome changes.

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
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from bridge.delivery.data_outbox import DataOutbox
from bridge.delivery.data_push import DataSender
from bridge.delivery.lane import (
    DataLane,
    FullLoadRequests,
    Limiter,
    SendData,
    SendDataFullLoad,
    SendFullLoad,
    SendNetwork,
    SendRecord,
    Step,
    Wait,
    next_step,
)
from bridge.delivery.networks import NETWORK, NetworkPushes
from bridge.delivery.outbox import Current, Outbox
from bridge.delivery.policy import Verdict, backoff, classify, doubling, is_ambiguous
from bridge.errors import HubError, NotLeaderError
from bridge.oicp.client import PushOutcome
from bridge.oicp.models import ActionType
from bridge.oicp.networks import NetworkClient
from bridge.status.engine import StatusEngine
from bridge.status.table import OicpStatus
from bridge.store.base import EvseRow

log = structlog.get_logger("bridge.push")

FULL_LOAD = "fullLoad"  # the target of a fullLoad request (EvseIDs are the others)


class Gate(Protocol):
    """Whether this process may use the lane (``bridge.cluster.lease``)."""

    def lease_until(self) -> float:
        """Monotonic time until which this process holds the lane (-inf: it does not)."""
        ...

    async def reserve(self, seconds: float) -> bool:
        """Make the lease outlive a request of ``seconds`` from now; False: it cannot."""
        ...


class AlwaysLeader:
    """The one process of a SQLite database: the lane is always its own."""

    def lease_until(self) -> float:
        return math.inf

    async def reserve(self, seconds: float) -> bool:
        return True


class PushClient(Protocol):
    async def push_evse_status(
        self,
        action: ActionType,
        records: Sequence[tuple[str, OicpStatus]],
        *,
        timeout: float | None = None,
    ) -> PushOutcome: ...


@dataclass(frozen=True)
class RetrySettings:
    initial: float = 1.0  # first backoff (s); doubles per consecutive failure
    cap: float = 300.0  # longest backoff (s)
    pause: float = 60.0  # retry interval while the hub reports a configuration error (s)
    max_flips: int = 2  # insert<->update switches per EVSE before it is parked
    max_attempts: int = 10  # per-EVSE refusals (retryable codes) before it is parked
    settle: float | None = None  # hold after an ambiguous outcome; None: that request's timeout
    push_timeout: float = 20.0  # whole-request timeout of a single push (oicp.request_timeout)
    full_load_timeout: float = 120.0  # whole-request timeout of a fullLoad
    data_full_load_timeout: float = 300.0  # whole-request timeout of a data fullLoad


@dataclass(frozen=True)
class PushEvent:
    """What the metrics hook is told about every attempt."""

    action: str
    outcome: str  # ok | retry | defer | flip | absent | pause | park | refused (a fullLoad)
    code: str | None
    duration_s: float


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
        self.data_limiter: Limiter = data_limiter or _Unlimited()
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
                    await self._full_load()
                elif isinstance(step, SendNetwork):
                    await self._network(step.name)
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
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieved)  # a caller that does not wait must not leak a warning
        self.full_load.waiters.append(fut)
        self.outbox.changed.set()
        return fut

    def request_data_full_load(self) -> asyncio.Future[int]:
        """Ask for a data fullLoad (every valid record in one request); the future gives the
        record count, or the hub's refusal."""
        if self.data is None:
            raise HubError("EVSE data is not enabled (evse_data.enabled)")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieved)
        self.data_full_load.waiters.append(fut)
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
        log.info("push.ok", hub_code=outcome.code, duration_ms=round(outcome.duration_ms, 1),
                 pending=len(self.outbox), **fields)  # fmt: skip
        # The acknowledgment rides with the next group commit instead of holding up the next
        # push: losing it in a crash only means one identical re-push (insert/update recover).
        # (Replicas: the next push's in-flight marker commits it first, fenced.)
        self.outbox.store.put_in_flight(None)
        self.outbox.store.commit_soon()

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
        detail = _detail(exc, duration, fields)
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
            self._last_deferred = evse_id
            if self._hub_refuses or deferred_before not in (None, evse_id):
                # Two different requests in a row refused for now: that is the hub. Every
                # request waits, and none is held against its EVSE, until one succeeds.
                self._hub_refuses = True
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
        self._emit(action.value, verdict.value, exc.code or _http(exc), duration)

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

    # -- fullLoad --------------------------------------------------------------------------
    async def _full_load(self) -> None:
        full = self.full_load
        timeout = self.retry.full_load_timeout
        if not await self.gate.reserve(timeout) or not await self._sending(FULL_LOAD, timeout):
            full.not_before = time.monotonic() + self.retry.initial
            return  # the lease cannot cover it now: single pushes go on, it is tried again
        batch = list(full.waiters)  # requests made while it is in flight wait for the next
        sent = self.engine.snapshot()
        if self.outbox.gate is not None:  # an EVSE the hub has no data for is not sent
            gate = self.outbox.gate
            sent = {evse_id: v for evse_id, v in sent.items() if gate(evse_id)}
        records = [(evse_id, sent[evse_id][1]) for evse_id in sorted(sent)]
        self.limiter.take()
        started = time.monotonic()
        self.in_flight = True
        try:
            outcome = await self.client.push_evse_status(
                ActionType.FULL_LOAD, records, timeout=self.retry.full_load_timeout
            )
        except HubError as exc:
            self.in_flight = False
            self._full_load_failed(exc, batch, sent, time.monotonic() - started)
            if not is_ambiguous(exc):
                self.outbox.store.put_in_flight(None)
            self.outbox.store.commit_soon()
            return
        except asyncio.CancelledError:
            self.in_flight = False
            self.outbox.full_load_ambiguous(sent)
            self._unsettled(self.retry.full_load_timeout)
            raise
        self.in_flight = False
        self._succeeded()
        self.outbox.full_load_done(sent, self.engine.snapshot())
        if self.data is not None:
            self.data.recheck_held()
        if self.networks is not None:
            self.networks[0].changed()
        self.last_full_load = self.clock()
        self.outbox.store.put_meta("last_full_load", str(self.last_full_load))
        self.outbox.store.put_in_flight(None)
        self._emit(FULL_LOAD, "ok", outcome.code, outcome.duration_ms / 1000)
        log.info("fullload.ok", action=FULL_LOAD, records=len(records), hub_code=outcome.code,
                 duration_ms=round(outcome.duration_ms, 1))  # fmt: skip
        # Raises StoreError if it cannot be kept: the waiters then wait for the retry.
        await self.outbox.store.commit()
        full.resolve(batch, len(records))

    def _full_load_failed(
        self,
        exc: HubError,
        batch: list[asyncio.Future[int]],
        sent: Current,
        duration: float,
    ) -> None:
        full = self.full_load
        verdict = classify(exc, FULL_LOAD)
        ambiguous = is_ambiguous(exc)
        detail = _detail(exc, duration, {"action": FULL_LOAD, "records": len(sent)})
        if ambiguous:
            self.outbox.full_load_ambiguous(sent)
            self._flips.clear()
        deferred_before, self._last_deferred = self._last_deferred, None
        now = time.monotonic()
        outcome = verdict.value
        if verdict is Verdict.RETRY:
            self._hub_failed(exc, detail, ambiguous, self.retry.full_load_timeout)
        elif verdict is Verdict.PAUSE:
            self._pause(exc, detail)
        elif verdict is Verdict.DEFER:
            self._last_deferred = FULL_LOAD
            if self._hub_refuses or deferred_before not in (None, FULL_LOAD):
                self._hub_refuses = True
                self._hub_failed(exc, detail, ambiguous, self.retry.full_load_timeout)
        if verdict is Verdict.PARK:  # the hub refuses this body: give up until asked again
            outcome = "refused"
            full.refusals += 1
            wait = doubling(full.refusals, self.retry.initial, self.retry.cap)
            full.not_before = now + wait
            full.fail(batch, exc)
            log.error("fullload.failed", retry_not_before_s=round(wait, 2), **detail)
        else:  # retried on its own backoff, after the hold: single pushes go in between
            full.failures += 1
            wait = backoff(full.failures, self.retry.initial, self.retry.cap, exc.retry_after)
            full.not_before = max(self._hold_until, now) + max(wait, self.retry.initial)
            if verdict is Verdict.DEFER:
                log.warning("fullload.retry", retry_in_s=round(full.not_before - now, 2),
                            **detail)  # fmt: skip
        self._emit(FULL_LOAD, outcome, exc.code or _http(exc), duration)

    # -- network assignments ---------------------------------------------------------------------
    async def _network(self, name: str) -> None:
        """Send one network's assignment (``bridge.delivery.networks`` says what and records
        what the hub acknowledged); failures are handled as for the other requests."""
        assert self.networks is not None
        pushes, client = self.networks
        body = pushes.body(name)
        timeout = self.retry.push_timeout
        if body is None or not await self._sending(f"{NETWORK}:{name}", timeout):
            return
        self.limiter.take()
        fields = {"action": NETWORK, "network": name,
                  "evses": sum(len(g["Evses"]) for g in body["GroupsAssignments"])}  # fmt: skip
        started = time.monotonic()
        self.in_flight = True
        try:
            outcome = await client.assign(body, timeout=timeout)
        except HubError as exc:
            self.in_flight = False
            duration = time.monotonic() - started
            verdict, detail = classify(exc, NETWORK), _detail(exc, duration, fields)
            if verdict is Verdict.RETRY:
                self._hub_failed(exc, detail, is_ambiguous(exc), timeout)
            elif verdict is Verdict.PAUSE:
                self._pause(exc, detail)
            else:  # refused for now (own backoff), or as it is (held until it changes)
                wait = pushes.refused(name, body, exc, retry=verdict is Verdict.DEFER)
                log.error("network.refused", retry_in_s=round(wait, 2) or None, **detail)
            if not is_ambiguous(exc):
                self.outbox.store.put_in_flight(None)
            self.outbox.store.commit_soon()
            self._emit(NETWORK, verdict.value, exc.code or _http(exc), duration)
            return
        except asyncio.CancelledError:  # the hub may still apply it: the next process waits
            self.in_flight = False
            self._unsettled(timeout)
            raise
        self.in_flight = False
        self._succeeded()
        pushes.acknowledged(name, body, self.clock())
        self.outbox.store.put_in_flight(None)
        self._emit(NETWORK, "ok", outcome.code, outcome.duration_ms / 1000)
        log.info("network.ok", hub_code=outcome.code, duration_ms=round(outcome.duration_ms, 1),
                 **fields)  # fmt: skip
        await self.outbox.store.commit()  # what the hub assigned is durable before it counts


class _Unlimited:
    def free_at(self, now: float | None = None) -> float:
        return 0.0

    def take(self) -> float:
        return 0.0


def _detail(exc: HubError, duration: float, fields: dict[str, object]) -> dict[str, object]:
    return {
        "hub_code": exc.code,
        "http_status": exc.http_status,
        "duration_ms": round(duration * 1000, 1),
        "error": str(exc),
        "additional_info": exc.additional_info,
        **fields,
    }


def _http(exc: HubError) -> str | None:
    return f"http_{exc.http_status}" if exc.http_status is not None else "transport"


def _retrieved(fut: asyncio.Future[int]) -> None:
    if not fut.cancelled():
        fut.exception()
