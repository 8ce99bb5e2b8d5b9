"""PushWorker and fullLoad scheduler unit tests (a scripted hub client and state store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.delivery.outbox import Outbox
from bridge.delivery.scheduler import next_run
from bridge.delivery.worker import PushWorker, RetrySettings
from bridge.errors import StoreError
from bridge.oicp.client import PushOutcome
from bridge.oicp.models import Acknowledgment, ActionType
from bridge.ratelimit import TokenBucket
from bridge.status.engine import StatusEngine, StatusReport
from bridge.status.registry import Registry
from bridge.status.table import OcppStatus, OicpStatus, effective_table
from bridge.store.sqlite import StateStore

ACK = Acknowledgment.model_validate(
    {"Result": True, "StatusCode": {"Code": "000", "Description": "Success."}}
)


class Hub:
    """Accepts every push and records its action."""

    def __init__(self) -> None:
        self.actions: list[str] = []

    async def push_evse_status(
        self, action: ActionType, records: Sequence[tuple[str, OicpStatus]]
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
        Outbox(store), engine, hub, limiter=TokenBucket.per_minute(600_000),
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
