"""PushWorker and fullLoad scheduler unit tests (a scripted hub client and state store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.delivery.lane import RetrySettings, SendFullLoad, SendNetwork, SendRecord, Wait
from bridge.delivery.outbox import Outbox
from bridge.delivery.scheduler import next_run
from bridge.delivery.worker import PushWorker
from bridge.errors import StoreError
from bridge.oicp.client import PushOutcome
from bridge.oicp.models import Acknowledgment, ActionType
from bridge.ratelimit import SlidingWindow
from bridge.status.engine import StatusEngine, StatusReport
from bridge.status.registry import Registry
from bridge.status.table import OcppStatus, OicpStatus, effective_table
from bridge.store.sqlite import EvseRow, StateStore

ACK = Acknowledgment.model_validate(
    {"Result": True, "StatusCode": {"Code": "000", "Description": "Success."}}
)


class Hub:
    """Accepts every push and records its action."""

    def __init__(self) -> None:
        self.actions: list[str] = []

    async def push_evse_status(
        self,
        action: ActionType,
        records: Sequence[tuple[str, OicpStatus]],
        *,
        timeout: float | None = None,
    ) -> PushOutcome:
        self.actions.append(action.value)
        return PushOutcome("000", 200, 1.0, ACK)


class FailingStore(StateStore):
    """The first ``fail`` commits raise, as a full disk would."""

    fail = 1

    async def commit(self) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise StoreError("disk full")
        await super().commit()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FailingStore]:
    store = FailingStore(tmp_path / "state.db")
    store.open()
    yield store
    store.fail = 0
    await store.close()


async def test_a_fullload_whose_commit_fails_is_sent_again_not_lost(store: FailingStore) -> None:
    """The hub took the fullLoad but the state store failed: the caller must still get its
    answer (after a retry), not wait forever, and the worker must go on."""
    engine = StatusEngine(effective_table({}), Registry({"CP1": {1: "DE*ABC*E1*1"}}, "DE*ABC"))
    engine.apply(StatusReport("CP1", 1, 1, OcppStatus.AVAILABLE))
    hub = Hub()
    worker = PushWorker(
        Outbox(store), engine, hub, limiter=SlidingWindow.per_minute(600_000),
        retry=RetrySettings(initial=0.05, cap=0.05),
    )  # fmt: skip
    running = asyncio.create_task(worker.run())
    try:
        records = await asyncio.wait_for(worker.request_full_load(), 5)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 5)
    assert records == 1
    assert hub.actions == ["fullLoad", "fullLoad"]  # the first one's commit failed
    assert worker.last_full_load is not None


# -- the daily fullLoad's time -------------------------------------------------------------------
BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "at", "due"),
    [
        (utc(2026, 1, 10, 1), time(3), utc(2026, 1, 10, 2)),  # later today (CET = UTC+1)
        (utc(2026, 1, 10, 5), time(3), utc(2026, 1, 11, 2)),  # already past: tomorrow
        (utc(2026, 1, 10, 2), time(3), utc(2026, 1, 11, 2)),  # exactly now is not "after now"
        (utc(2026, 7, 1, 0), time(3), utc(2026, 7, 1, 1)),  # summer time (CEST = UTC+2)
        # 02:30 does not exist on 29 March 2026 (02:00 -> 03:00): one real moment that day
        (utc(2026, 3, 29, 0), time(2, 30), utc(2026, 3, 29, 1, 30)),
        # 02:30 happens twice on 25 October 2026: the first one
        (utc(2026, 10, 24, 23), time(2, 30), utc(2026, 10, 25, 0, 30)),
    ],
)
def test_next_fullload_time_is_the_local_time_of_day(
    now: datetime, at: time, due: datetime
) -> None:
    assert next_run(now, at, BERLIN) == due


# -- the decision: what goes to the hub next (bridge/delivery/lane.py) -------------------------
class Never:
    """A client the decision tests never reach."""

    async def push_evse_status(self, *args: object, **kwargs: object) -> PushOutcome:
        raise AssertionError("next_step only decides")


def lane(store: StateStore, *, limit: int = 600_000) -> tuple[PushWorker, StatusEngine]:
    engine = StatusEngine(
        effective_table({}), Registry({"CP1": {1: "DE*ABC*E1*1", 2: "DE*ABC*E1*2"}}, "DE*ABC")
    )
    worker = PushWorker(Outbox(store), engine, Never(), limiter=SlidingWindow(limit, 60.0))
    return worker, engine


def change(worker: PushWorker, engine: StatusEngine, key: int, status: OcppStatus) -> None:
    worker.outbox.apply(engine.apply(StatusReport("CP1", key, key, status))[1])


async def test_nothing_to_do_waits_for_a_change(store: FailingStore) -> None:
    worker, _ = lane(store)
    assert worker.next_step(100.0) == Wait(None)


async def test_the_oldest_pending_evse_goes_first_as_insert_then_update(
    store: FailingStore,
) -> None:
    worker, engine = lane(store)
    change(worker, engine, 2, OcppStatus.AVAILABLE)
    change(worker, engine, 1, OcppStatus.CHARGING)
    step = worker.next_step(100.0)
    assert isinstance(step, SendRecord)
    assert (step.row.evse_id, step.action) == ("DE*ABC*E1*2", ActionType.INSERT)
    worker.outbox.acknowledged("DE*ABC*E1*2", OicpStatus.AVAILABLE, "000")
    change(worker, engine, 2, OcppStatus.FAULTED)
    first = worker.next_step(100.0)
    assert isinstance(first, SendRecord) and first.row.evse_id == "DE*ABC*E1*1"
    worker.outbox.acknowledged("DE*ABC*E1*1", OicpStatus.OCCUPIED, "000")
    second = worker.next_step(100.0)
    assert isinstance(second, SendRecord)
    assert (second.row.evse_id, second.action) == ("DE*ABC*E1*2", ActionType.UPDATE)


async def test_a_hold_comes_before_everything(store: FailingStore) -> None:
    worker, engine = lane(store)
    change(worker, engine, 1, OcppStatus.AVAILABLE)
    worker.request_full_load()
    worker._hold_until = 105.0
    assert worker.next_step(100.0) == Wait(105.0)
    assert isinstance(worker.next_step(105.0), SendFullLoad)


async def test_a_fullload_waits_for_its_backoff_while_records_go(store: FailingStore) -> None:
    worker, engine = lane(store)
    worker.request_full_load()
    worker.full_load.not_before = 110.0
    assert worker.next_step(100.0) == Wait(110.0)  # nothing else to do: wait for it
    change(worker, engine, 1, OcppStatus.AVAILABLE)
    assert isinstance(worker.next_step(100.0), SendRecord)  # records flow meanwhile
    assert isinstance(worker.next_step(110.0), SendFullLoad)


async def test_the_rate_limit_holds_the_next_request(store: FailingStore) -> None:
    worker, engine = lane(store, limit=2)
    worker.limiter.clock = lambda: 100.0  # type: ignore[attr-defined]
    change(worker, engine, 1, OcppStatus.AVAILABLE)
    worker.limiter.take()
    worker.limiter.take()
    assert worker.next_step(100.0) == Wait(160.0)
    assert isinstance(worker.next_step(160.0), SendRecord)


async def test_a_deferred_evse_goes_to_the_back_and_waits_its_turn(store: FailingStore) -> None:
    worker, engine = lane(store)
    change(worker, engine, 1, OcppStatus.AVAILABLE)
    change(worker, engine, 2, OcppStatus.AVAILABLE)
    assert worker.outbox.defer("DE*ABC*E1*1") == 1
    worker.outbox.move_back("DE*ABC*E1*1", 120.0)
    step = worker.next_step(100.0)
    assert isinstance(step, SendRecord) and step.row.evse_id == "DE*ABC*E1*2"
    worker.outbox.acknowledged("DE*ABC*E1*2", OicpStatus.AVAILABLE, "000")
    assert worker.next_step(100.0) == Wait(120.0)
    step = worker.next_step(120.0)
    assert isinstance(step, SendRecord) and step.row.evse_id == "DE*ABC*E1*1"
    # A new status is sent now, not after the backoff the old one earned.
    worker.outbox.move_back("DE*ABC*E1*1", 200.0)
    change(worker, engine, 1, OcppStatus.CHARGING)
    assert isinstance(worker.next_step(121.0), SendRecord)


async def test_a_removed_evse_the_hub_may_hold_is_deleted(store: FailingStore) -> None:
    worker, engine = lane(store)
    change(worker, engine, 1, OcppStatus.AVAILABLE)
    worker.outbox.acknowledged("DE*ABC*E1*1", OicpStatus.AVAILABLE, "000")
    worker.outbox.rows["DE*ABC*GONE"] = row = EvseRow("DE*ABC*GONE", "CP9", "Occupied")
    row.hub_holds, row.hub_status = True, "Occupied"
    assert worker.outbox.reconcile(engine.snapshot()) == ["DE*ABC*GONE"]
    step = worker.next_step(100.0)
    assert isinstance(step, SendRecord)
    assert (step.row.evse_id, step.action) == ("DE*ABC*GONE", ActionType.DELETE)
    worker.outbox.deleted("DE*ABC*GONE", "000")
    assert worker.next_step(100.0) == Wait(None)


async def test_after_an_ambiguous_outcome_the_status_is_sent_again(store: FailingStore) -> None:
    worker, engine = lane(store)
    change(worker, engine, 1, OcppStatus.AVAILABLE)
    worker.outbox.acknowledged("DE*ABC*E1*1", OicpStatus.AVAILABLE, "000")
    change(worker, engine, 1, OcppStatus.CHARGING)  # pushed, the request times out...
    worker.outbox.ambiguous("DE*ABC*E1*1")
    change(worker, engine, 1, OcppStatus.AVAILABLE)  # ...and the EVSE is back to Available
    step = worker.next_step(100.0)
    assert isinstance(step, SendRecord)
    assert (step.row.status, step.action) == ("Available", ActionType.UPDATE)


async def test_the_daily_scheduler_does_not_wait_for_a_fullload_that_keeps_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fullLoad still being retried must not hold up the next days' requests."""
    from bridge.delivery import scheduler

    asked: list[asyncio.Future[int]] = []

    class Worker:
        def request_full_load(self) -> asyncio.Future[int]:
            asked.append(asyncio.get_running_loop().create_future())  # never answered
            return asked[-1]

    monkeypatch.setattr(
        scheduler, "next_run", lambda now, at, zone: now + scheduler.timedelta(seconds=0.05)
    )
    daily = scheduler.run_daily_full_load(Worker(), time(3), BERLIN)  # type: ignore[arg-type]
    task = asyncio.create_task(daily)
    await asyncio.sleep(0.4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(asked) >= 3


class DueNetworks:
    """Networks with an assignment to send, as the lane sees them (bridge.delivery.networks)."""

    def __init__(self, name: str | None, next_due: float | None = None) -> None:
        self.name, self.when = name, next_due

    def due(self, now: float) -> str | None:
        return self.name

    def next_due(self) -> float | None:
        return self.when


async def test_a_network_assignment_goes_after_a_due_fullload_before_records(
    store: FailingStore,
) -> None:
    worker, engine = lane(store)
    worker.networks = (DueNetworks("Net"), None)  # type: ignore[assignment]
    change(worker, engine, 1, OcppStatus.AVAILABLE)
    worker.request_full_load()
    assert isinstance(worker.next_step(100.0), SendFullLoad)
    worker.full_load.not_before = 110.0
    assert worker.next_step(100.0) == SendNetwork("Net")
    worker._hold_until = 105.0  # a hold (backoff, settle, pause) holds it too
    assert worker.next_step(100.0) == Wait(105.0)
    worker.networks = (DueNetworks(None, next_due=103.0), None)  # type: ignore[assignment]
    assert isinstance(worker.next_step(105.0), SendRecord)
    worker.outbox.acknowledged("DE*ABC*E1*1", OicpStatus.AVAILABLE, "000")
    assert worker.next_step(105.0) == Wait(103.0)  # the network's own backoff
