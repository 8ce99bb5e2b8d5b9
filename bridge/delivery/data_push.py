"""Carrying out the lane's data steps: a batch of EVSE data records, or the data fullLoad.

The push worker (``bridge.delivery.worker``) owns the lane and its hub-wide reactions (backoff,
settle time, pause); this module says what each outcome of a data request changes. Before a
request goes out its records' hub state is written as unknown (durably: a crash or SIGKILL
while it is in flight leaves them pending, and they are pushed again as updates; a 022 then
switches to insert). After the answer:

* accepted: the hub holds the records sent (a delete: no longer); statuses held for them go;
* HTTP 400 with ``validationErrors`` naming records (``evseDataRecord[3]...``): those records
  are parked with the hub's field errors, the others go again;
* 022 (insert of an existing / update of a missing record): a single record flips insert <->
  update as statuses do; in a batch, each of its records goes alone from then on (``solo``);
* any other refusal of a batch: each record alone; of a single record: parked;
* hub-wide failures (5xx, 429, timeouts, 017/300): as for statuses.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import structlog

from bridge.delivery.data_outbox import DataBatch, DataOutbox
from bridge.delivery.policy import (
    Verdict,
    backoff,
    classify,
    doubling,
    failure_code,
    is_ambiguous,
)
from bridge.errors import HubError
from bridge.oicp.client import PushOutcome
from bridge.oicp.models import ActionType
from bridge.store.base import EvseDataRow

if TYPE_CHECKING:
    from bridge.delivery.worker import PushWorker

log = structlog.get_logger("bridge.push")

DATA_FULL_LOAD = "data:fullLoad"  # the in-flight marker of a data fullLoad
_RECORD_INDEX = re.compile(r"evseDataRecord\[(\d+)\]", re.IGNORECASE)


class DataClient(Protocol):
    async def push_evse_data(
        self, action: ActionType, records: Sequence[str], *, timeout: float | None = None
    ) -> PushOutcome: ...


def named_records(exc: HubError, size: int) -> dict[int, list[str]]:
    """Index of each record the hub's ``validationErrors`` name → its field errors."""
    named: dict[int, list[str]] = {}
    for ref, message in getattr(exc, "field_errors", ()):
        match = _RECORD_INDEX.search(ref)
        if match is not None and int(match[1]) < size:
            named.setdefault(int(match[1]), []).append(f"{ref}: {message}")
    return named


class DataSender:
    def __init__(self, worker: PushWorker, outbox: DataOutbox, client: DataClient) -> None:
        self.worker = worker
        self.outbox = outbox
        self.client = client
        self._flips: dict[str, int] = {}

    async def _durable(self, target: str, timeout: float) -> bool:
        """Everything staged (the records' unknown hub state) durable before the request."""
        store = self.outbox.store
        if store.shared:
            await store.sending(target)  # fenced: raises NotLeaderError if deposed
        else:
            await store.commit()
        return self.worker.gate.lease_until() - time.monotonic() > timeout

    # -- a batch ---------------------------------------------------------------------------------
    async def push(self, batch: DataBatch) -> None:
        w = self.worker
        timeout = w.retry.push_timeout
        records = [r.record or "" for r in batch.rows]
        before = [(r.hub_digest, r.hub_holds) for r in batch.rows]
        self.outbox.sending(batch)
        if not await self._durable("data:" + batch.rows[0].evse_id, timeout):
            self._restore(batch, before)
            return
        w.data_limiter.take()
        action = "data_" + batch.action.value
        started = time.monotonic()
        w.in_flight = True
        try:
            outcome = await self.client.push_evse_data(batch.action, records, timeout=timeout)
        except HubError as exc:
            w.in_flight = False
            if not is_ambiguous(exc):
                self._restore(batch, before)  # not applied: the hub holds what it held
                self.outbox.store.put_in_flight(None)
            self._failed(exc, batch, time.monotonic() - started)
            self.outbox.store.commit_soon()
            return
        except asyncio.CancelledError:
            w.in_flight = False
            w._unsettled(timeout)  # the records stay unknown (written before sending)
            raise
        w.in_flight = False
        w._succeeded()
        for row in batch.rows:
            self._flips.pop(row.evse_id, None)
        self.outbox.acknowledged(batch, outcome.code)
        if w.networks is not None and batch.action is not ActionType.UPDATE:
            for row in batch.rows:  # the hub's knowledge of these EVSEs changed
                w.networks[0].hub_learned(row.evse_id)
        w._emit(action, "ok", outcome.code, outcome.duration_ms / 1000)
        log.info("data.ok", action=batch.action.value, records=len(batch.rows),
                 hub_code=outcome.code, duration_ms=round(outcome.duration_ms, 1),
                 evse_ids=[r.evse_id for r in batch.rows[:20]],
                 pending=len(self.outbox))  # fmt: skip
        self.outbox.store.put_in_flight(None)
        self.outbox.store.commit_soon()

    def _restore(self, batch: DataBatch, before: list[tuple[str | None, bool]]) -> None:
        for row, (digest, holds) in zip(batch.rows, before, strict=True):
            row.hub_digest, row.hub_holds = digest, holds
            self.outbox.refresh(row)

    def _failed(self, exc: HubError, batch: DataBatch, duration: float) -> None:
        w = self.worker
        outbox = self.outbox
        rows = batch.rows
        verdict = classify(exc, batch.action.value)
        info = exc.additional_info or str(exc)
        detail: dict[str, object] = {"hub_code": exc.code, "http_status": exc.http_status,
                  "error": str(exc),
                  "duration_ms": round(duration * 1000, 1), "action": batch.action.value,
                  "records": len(rows), "evse_ids": [r.evse_id for r in rows[:20]]}  # fmt: skip
        for row in rows:
            outbox.failed(row, verdict.value, exc.code, info)
        if verdict is Verdict.RETRY:
            w._hub_failed(exc, detail, is_ambiguous(exc), w.retry.push_timeout)
        elif verdict is Verdict.PAUSE:
            w._pause(exc, detail)
        elif verdict is Verdict.DEFER:
            for row in rows:
                attempts = outbox.defer(row)
                if attempts >= w.retry.max_attempts:
                    outbox.park(row, exc.code)
                    log.error("data.parked", evse_id=row.evse_id, attempts=attempts, **detail)
                else:
                    wait = backoff(attempts, w.retry.initial, w.retry.cap, exc.retry_after)
                    outbox.move_back(row.evse_id, time.monotonic() + wait)
            log.warning("data.deferred", **detail)
        elif len(rows) > 1 and verdict is not Verdict.PARK:
            self._alone(rows, detail, "the hub refused the batch without naming a record")
        elif verdict is Verdict.FLIP:
            self._flip(rows[0], batch.action, exc, detail)
        elif verdict is Verdict.ABSENT:
            w._succeeded()
            outbox.absent(rows[0], exc.code)
            log.info("data.ok", hub_code=exc.code, absent=True, **detail)
        else:
            self._refused(exc, rows, detail)
        w._emit("data_" + batch.action.value, verdict.value, failure_code(exc), duration)

    def _alone(self, rows: Sequence[EvseDataRow], detail: dict[str, object], why: str) -> None:
        """Each record of a refused batch goes on its own, to find the one at fault."""
        for row in rows:
            self.outbox.solo.add(row.evse_id)
            self.outbox.move_back(row.evse_id)
        log.warning("data.split", reason=why, **detail)

    def _flip(
        self, row: EvseDataRow, action: ActionType, exc: HubError, detail: dict[str, object]
    ) -> None:
        flips = self._flips[row.evse_id] = self._flips.get(row.evse_id, 0) + 1
        if flips > self.worker.retry.max_flips:
            self._flips.pop(row.evse_id, None)
            self.outbox.park(row, exc.code)
            log.error("data.parked", reason=f"022 to insert and to update ({flips} times)",
                      **detail)  # fmt: skip
            return
        self.outbox.set_hub_holds(row, action is ActionType.INSERT)
        log.warning("data.flip", next_action="update" if action is ActionType.INSERT
                    else "insert", **detail)  # fmt: skip

    def _refused(
        self, exc: HubError, rows: Sequence[EvseDataRow], detail: dict[str, object]
    ) -> None:
        """The hub refuses records: park the ones it names (or the single one), others retry."""
        named = named_records(exc, len(rows))
        if not named and len(rows) > 1:
            self._alone(rows, detail, "the hub refused the batch without naming a record")
            return
        if not named:
            named = {0: [f"{r}: {m}" for r, m in getattr(exc, "field_errors", ())] or [str(exc)]}
        for i, row in enumerate(rows):
            if i in named:
                self.outbox.park(row, failure_code(exc), "; ".join(named[i]))
                log.error("data.parked", evse_id=row.evse_id, field_errors=named[i], **detail)
            else:
                self.outbox.move_back(row.evse_id)

    # -- the data fullLoad -----------------------------------------------------------------------
    async def full_load(self) -> None:
        w = self.worker
        full = w.data_full_load
        timeout = w.retry.data_full_load_timeout
        if not await w.gate.reserve(timeout):
            full.not_before = time.monotonic() + w.retry.initial
            return
        batch = list(full.waiters)
        sent = self.outbox.full_load_set()
        before = {e: (r.hub_digest, r.hub_holds) for e, r in self.outbox.rows.items()}
        self.outbox.full_load_sending(sent)
        if not await self._durable(DATA_FULL_LOAD, timeout):
            full.not_before = time.monotonic() + w.retry.initial
            return
        records = [record for record, _ in sent.values()]
        w.data_limiter.take()
        started = time.monotonic()
        w.in_flight = True
        try:
            outcome = await self.client.push_evse_data(
                ActionType.FULL_LOAD, records, timeout=timeout
            )
        except HubError as exc:
            w.in_flight = False
            del records
            self._full_load_failed(exc, batch, time.monotonic() - started)
            if not is_ambiguous(exc):  # not applied: the hub holds what it held
                for evse_id, (digest, holds) in before.items():
                    row = self.outbox.rows[evse_id]
                    row.hub_digest, row.hub_holds = digest, holds
                    self.outbox.refresh(row)
                self.outbox.store.put_in_flight(None)
            self.outbox.store.commit_soon()
            return
        except asyncio.CancelledError:
            w.in_flight = False
            w._unsettled(timeout)
            raise
        w.in_flight = False
        w._succeeded()
        del records
        self.outbox.full_load_done(sent, outcome.code)
        if w.networks is not None:
            w.networks[0].changed()
        self._flips.clear()
        w.last_data_full_load = w.clock()
        self.outbox.store.put_meta("last_data_full_load", str(w.last_data_full_load))
        self.outbox.store.put_in_flight(None)
        w._emit("data_fullLoad", "ok", outcome.code, outcome.duration_ms / 1000)
        log.info("data.fullload.ok", records=len(sent), hub_code=outcome.code,
                 duration_ms=round(outcome.duration_ms, 1))  # fmt: skip
        await self.outbox.store.commit()
        full.resolve(batch, len(sent))

    def _full_load_failed(
        self, exc: HubError, batch: list[asyncio.Future[int]], duration: float
    ) -> None:
        w = self.worker
        full = w.data_full_load
        verdict = classify(exc, "fullLoad")
        detail: dict[str, object] = {"hub_code": exc.code, "http_status": exc.http_status,
                  "error": str(exc),
                  "duration_ms": round(duration * 1000, 1), "action": "data_fullLoad"}  # fmt: skip
        now = time.monotonic()
        if verdict is Verdict.RETRY:
            w._hub_failed(exc, detail, is_ambiguous(exc), w.retry.data_full_load_timeout)
        elif verdict is Verdict.PAUSE:
            w._pause(exc, detail)
        if verdict is Verdict.PARK:
            full.refusals += 1
            wait = doubling(full.refusals, w.retry.initial, w.retry.cap)
            full.not_before = now + wait
            field_errors = [f"{r}: {m}" for r, m in getattr(exc, "field_errors", ())]
            full.fail(batch, exc)
            log.error("data.fullload.failed", retry_not_before_s=round(wait, 2),
                      field_errors=field_errors[:50], **detail)  # fmt: skip
            outcome = "refused"
        else:
            full.failures += 1
            wait = backoff(full.failures, w.retry.initial, w.retry.cap, exc.retry_after)
            full.not_before = max(w._hold_until, now) + max(wait, w.retry.initial)
            log.warning("data.fullload.retry", retry_in_s=round(full.not_before - now, 2),
                        **detail)  # fmt: skip
            outcome = verdict.value
        w._emit("data_fullLoad", outcome, failure_code(exc), duration)
