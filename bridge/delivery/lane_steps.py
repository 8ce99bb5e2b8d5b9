"""Carrying out the lane's requests beside single statuses: the fullLoad and network assignments.

The push worker (``bridge.delivery.worker``) owns the lane, decides what goes next and reacts
to hub-wide failures (backoff, settle time, pause); this module sends the two requests that are
not one EVSE's status and says what each of their outcomes changes:

* the fullLoad replaces the hub's whole set of statuses with what the engine computes now;
  accepted, every EVSE's hub state is known again; refused as it is, it waits for a doubling
  backoff and its callers hear the refusal; any other failure retries it on its own backoff,
  with single pushes going in between;
* a network's group assignment (``bridge.delivery.networks`` says what is due and records what
  the hub acknowledged); refused, it waits for its own backoff or until it changes.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from bridge.delivery.networks import NETWORK
from bridge.delivery.outbox import Current
from bridge.delivery.policy import (
    Verdict,
    backoff,
    classify,
    doubling,
    failure_code,
    failure_detail,
    is_ambiguous,
)
from bridge.errors import HubError
from bridge.oicp.models import ActionType

if TYPE_CHECKING:
    from bridge.delivery.worker import PushWorker

log = structlog.get_logger("bridge.push")

FULL_LOAD = "fullLoad"  # the target of a fullLoad request (EvseIDs are the others)


# -- fullLoad ------------------------------------------------------------------------------------
async def send_full_load(w: PushWorker) -> None:
    """Send the requested fullLoad; its waiters get the record count, or the hub's refusal."""
    full = w.full_load
    timeout = w.retry.full_load_timeout
    if not await w.gate.reserve(timeout) or not await w._sending(FULL_LOAD, timeout):
        full.not_before = time.monotonic() + w.retry.initial
        return  # the lease cannot cover it now: single pushes go on, it is tried again
    batch = list(full.waiters)  # requests made while it is in flight wait for the next
    sent = w.engine.snapshot()
    if w.outbox.gate is not None:  # an EVSE the hub has no data for is not sent
        gate = w.outbox.gate
        sent = {evse_id: v for evse_id, v in sent.items() if gate(evse_id)}
    records = [(evse_id, sent[evse_id][1]) for evse_id in sorted(sent)]
    w.limiter.take()
    started = time.monotonic()
    w.in_flight = True
    try:
        outcome = await w.client.push_evse_status(
            ActionType.FULL_LOAD, records, timeout=w.retry.full_load_timeout
        )
    except HubError as exc:
        w.in_flight = False
        _full_load_failed(w, exc, batch, sent, time.monotonic() - started)
        if not is_ambiguous(exc):
            w.outbox.store.put_in_flight(None)
        w.outbox.store.commit_soon()
        return
    except asyncio.CancelledError:
        w.in_flight = False
        w.outbox.full_load_ambiguous(sent)
        w._unsettled(w.retry.full_load_timeout)
        raise
    w.in_flight = False
    w._succeeded()
    w.outbox.full_load_done(sent, w.engine.snapshot())
    if w.data is not None:
        w.data.recheck_held()
    if w.networks is not None:
        w.networks[0].changed()
    w.last_full_load = w.clock()
    w.outbox.store.put_meta("last_full_load", str(w.last_full_load))
    w.outbox.store.put_in_flight(None)
    w._emit(FULL_LOAD, "ok", outcome.code, outcome.duration_ms / 1000)
    log.info("fullload.ok", action=FULL_LOAD, records=len(records), hub_code=outcome.code,
             duration_ms=round(outcome.duration_ms, 1))  # fmt: skip
    # Raises StoreError if it cannot be kept: the waiters then wait for the retry.
    await w.outbox.store.commit()
    full.resolve(batch, len(records))


def _full_load_failed(
    w: PushWorker,
    exc: HubError,
    batch: list[asyncio.Future[int]],
    sent: Current,
    duration: float,
) -> None:
    full = w.full_load
    verdict = classify(exc, FULL_LOAD)
    ambiguous = is_ambiguous(exc)
    detail = failure_detail(exc, duration, {"action": FULL_LOAD, "records": len(sent)})
    if ambiguous:
        w.outbox.full_load_ambiguous(sent)
        w._flips.clear()
    deferred_before, w._last_deferred = w._last_deferred, None
    now = time.monotonic()
    outcome = verdict.value
    if verdict is Verdict.RETRY:
        w._hub_failed(exc, detail, ambiguous, w.retry.full_load_timeout)
    elif verdict is Verdict.PAUSE:
        w._pause(exc, detail)
    elif verdict is Verdict.DEFER and w._deferred(FULL_LOAD, deferred_before):
        w._hub_failed(exc, detail, ambiguous, w.retry.full_load_timeout)
    if verdict is Verdict.PARK:  # the hub refuses this body: give up until asked again
        outcome = "refused"
        full.refusals += 1
        wait = doubling(full.refusals, w.retry.initial, w.retry.cap)
        full.not_before = now + wait
        full.fail(batch, exc)
        log.error("fullload.failed", retry_not_before_s=round(wait, 2), **detail)
    else:  # retried on its own backoff, after the hold: single pushes go in between
        full.failures += 1
        wait = backoff(full.failures, w.retry.initial, w.retry.cap, exc.retry_after)
        full.not_before = max(w._hold_until, now) + max(wait, w.retry.initial)
        if verdict is Verdict.DEFER:
            log.warning("fullload.retry", retry_in_s=round(full.not_before - now, 2),
                        **detail)  # fmt: skip
    w._emit(FULL_LOAD, outcome, failure_code(exc), duration)


# -- network assignments -------------------------------------------------------------------------
async def send_network(w: PushWorker, name: str) -> None:
    """Send one network's assignment (``bridge.delivery.networks`` says what and records what
    the hub acknowledged); failures are handled as for the other requests."""
    assert w.networks is not None
    pushes, client = w.networks
    body = pushes.body(name)
    timeout = w.retry.push_timeout
    if body is None or not await w._sending(f"{NETWORK}:{name}", timeout):
        return
    w.limiter.take()
    fields = {"action": NETWORK, "network": name,
              "evses": sum(len(g["Evses"]) for g in body["GroupsAssignments"])}  # fmt: skip
    started = time.monotonic()
    w.in_flight = True
    try:
        outcome = await client.assign(body, timeout=timeout)
    except HubError as exc:
        w.in_flight = False
        duration = time.monotonic() - started
        verdict, detail = classify(exc, NETWORK), failure_detail(exc, duration, fields)
        if verdict is Verdict.RETRY:
            w._hub_failed(exc, detail, is_ambiguous(exc), timeout)
        elif verdict is Verdict.PAUSE:
            w._pause(exc, detail)
        else:  # refused for now (own backoff), or as it is (held until it changes)
            wait = pushes.refused(name, body, exc, retry=verdict is Verdict.DEFER)
            log.error("network.refused", retry_in_s=round(wait, 2) or None, **detail)
        if not is_ambiguous(exc):
            w.outbox.store.put_in_flight(None)
        w.outbox.store.commit_soon()
        w._emit(NETWORK, verdict.value, failure_code(exc), duration)
        return
    except asyncio.CancelledError:  # the hub may still apply it: the next process waits
        w.in_flight = False
        w._unsettled(timeout)
        raise
    w.in_flight = False
    w._succeeded()
    pushes.acknowledged(name, body, w.clock())
    w.outbox.store.put_in_flight(None)
    w._emit(NETWORK, "ok", outcome.code, outcome.duration_ms / 1000)
    log.info("network.ok", hub_code=outcome.code, duration_ms=round(outcome.duration_ms, 1),
             **fields)  # fmt: skip
    await w.outbox.store.commit()  # what the hub assigned is durable before it counts
