"""PushWorker unit tests: its own bookkeeping, with a scripted hub client and state store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bridge.delivery.outbox import Outbox
from bridge.delivery.policy import TokenBucket
from bridge.delivery.worker import PushWorker, RetrySettings
from bridge.errors import StoreError
from bridge.oicp.client import PushOutcome
from bridge.oicp.models import Acknowledgment, ActionType
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
        Outbox(store), engine, hub, limiter=TokenBucket(600_000),
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
