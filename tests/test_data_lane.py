"""The lane with EVSE data in it (unit tests of the decision and of the data outbox, on a real
SQLite store): statuses and data take turns, separate rate limits, the order per EVSE, and
batches; the scheduling of the weekly data fullLoad; what a refusal naming records parks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.delivery.data_outbox import DataOutbox
from bridge.delivery.data_push import named_records
from bridge.delivery.lane import (
    DataLane,
    FullLoadRequests,
    SendData,
    SendDataFullLoad,
    SendRecord,
    Wait,
    next_step,
)
from bridge.delivery.outbox import Outbox
from bridge.delivery.scheduler import next_weekly_run
from bridge.errors import HubRejectedError
from bridge.oicp.evse_schema import FieldError
from bridge.oicp.models import ActionType
from bridge.oicp.records import Built
from bridge.ratelimit import SlidingWindow
from bridge.status.table import OicpStatus
from bridge.store.sqlite import EvseRow, StateStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = StateStore(tmp_path / "bridge.db")
    s.open()
    yield s
    s.close_unwritten()


def built(evse_id: str, version: int = 1, *, errors: tuple[FieldError, ...] = ()) -> Built:
    record = {"EvseID": evse_id, "v": version}
    return Built(evse_id, record, errors, f"d{version}-{evse_id}", "Europe/Berlin")


def lanes(store: StateStore, *, data_limit: int = 1000) -> tuple[Outbox, DataOutbox, DataLane]:
    outbox = Outbox(store)
    data = DataOutbox(store, changed=outbox.changed)
    data.status_at_hub = lambda e: (r := outbox.rows.get(e)) is not None and r.hub_holds
    data.on_ready = outbox.release
    outbox.gate = data.status_may_go
    return outbox, data, DataLane(data, SlidingWindow(data_limit), FullLoadRequests(), 2)


def step(outbox: Outbox, lane: DataLane, now: float = 100.0, limit: int = 1000) -> object:
    return next_step(hold_until=0.0, full_load=FullLoadRequests(), outbox=outbox,
                     limiter=SlidingWindow(limit), now=now, data=lane)  # fmt: skip


def status_change(outbox: Outbox, evse_id: str) -> None:
    row = outbox.rows[evse_id] = EvseRow(evse_id, "CP1", OicpStatus.AVAILABLE.value)
    outbox.refresh(row)


def test_status_waits_for_its_data_and_then_they_take_turns(store: StateStore) -> None:
    outbox, data, lane = lanes(store)
    for i in range(1, 5):
        data.set_built("CP1", built(f"DE*ABC*E1*{i}"), want=True)
        status_change(outbox, f"DE*ABC*E1*{i}")
    first = step(outbox, lane)
    assert isinstance(first, SendData)  # no status may go before its data
    assert first.batch.action is ActionType.INSERT and len(first.batch.rows) == 2
    assert outbox.held() == 4
    data.acknowledged(first.batch, "000")  # two EVSEs' data at the hub: their statuses may go
    order = []
    for _ in range(4):
        s = step(outbox, lane)
        if isinstance(s, SendRecord):
            outbox.acknowledged(s.row.evse_id, OicpStatus.AVAILABLE, "000")
            order.append(("status", s.row.evse_id))
            lane.turn = True
        else:
            assert isinstance(s, SendData)
            data.acknowledged(s.batch, "000")
            order.append(("data", ",".join(r.evse_id for r in s.batch.rows)))
            lane.turn = False
    kinds = [k for k, _ in order]
    assert kinds == ["status", "data", "status", "status"]  # never two data in a row
    assert order[0] == ("status", "DE*ABC*E1*1")


def test_separate_rate_limits(store: StateStore) -> None:
    outbox, data, lane = lanes(store, data_limit=1)
    lane.limiter.take()  # the data window is full for a minute
    data.set_built("CP1", built("DE*ABC*E1*1"), want=True)
    outbox.gate = None  # an EVSE without data (the file's stations): not held
    status_change(outbox, "DE*ABC*E2*1")
    lane.turn = True  # even on data's turn the status goes: data must wait for its window
    assert isinstance(step(outbox, lane), SendRecord)
    outbox.acknowledged("DE*ABC*E2*1", OicpStatus.AVAILABLE, "000")
    waiting = step(outbox, lane)
    assert isinstance(waiting, Wait) and waiting.until is not None and waiting.until > 100.0


def test_data_delete_waits_until_the_status_left_the_hub(store: StateStore) -> None:
    outbox, data, lane = lanes(store)
    evse = "DE*ABC*E1*1"
    data.set_built("CP1", built(evse), want=True)
    s = step(outbox, lane)
    assert isinstance(s, SendData)
    data.acknowledged(s.batch, "000")
    status_change(outbox, evse)
    s = step(outbox, lane)
    assert isinstance(s, SendRecord)
    outbox.acknowledged(evse, OicpStatus.AVAILABLE, "000")
    data.withdraw(evse)
    outbox.withdraw(evse)
    s = step(outbox, lane)
    assert isinstance(s, SendRecord) and s.action is ActionType.DELETE
    lane.turn = True
    assert isinstance(step(outbox, lane), SendRecord)  # the data delete is held meanwhile
    outbox.deleted(evse, "000")
    data.release(evse)
    s = step(outbox, lane)
    assert isinstance(s, SendData) and s.batch.action is ActionType.DELETE


def test_an_invalid_record_is_never_sent_and_holds_its_status(store: StateStore) -> None:
    outbox, data, lane = lanes(store)
    bad = built("DE*ABC*E1*1", errors=(FieldError("Plugs[0]", "no OICP plug type"),))
    data.set_built("CP1", bad, want=True)
    status_change(outbox, "DE*ABC*E1*1")
    assert isinstance(step(outbox, lane), Wait)
    assert data.invalid() == 1 and data.describe("DE*ABC*E1*1") == {
        "state": "invalid", "errors": ["Plugs[0]: no OICP plug type"],
        "hub_acknowledged": False, "last_code": None, "last_info": None,
    }  # fmt: skip


def test_a_data_full_load_comes_before_records(store: StateStore) -> None:
    outbox, data, lane = lanes(store)
    data.set_built("CP1", built("DE*ABC*E1*1"), want=True)
    lane.full_load.waiters.append(_pending_future())
    assert isinstance(step(outbox, lane), SendDataFullLoad)
    assert data.full_load_set() == {"DE*ABC*E1*1": ('{"EvseID":"DE*ABC*E1*1","v":1}',
                                                    "d1-DE*ABC*E1*1")}  # fmt: skip


def test_no_record_batches_while_a_data_full_load_waits(store: StateStore) -> None:
    outbox, data, lane = lanes(store)
    data.set_built("CP1", built("DE*ABC*E1*1"), want=True)
    outbox.gate = None
    status_change(outbox, "DE*ABC*E2*1")
    lane.full_load.waiters.append(_pending_future())
    lane.full_load.not_before = 160.0  # on its backoff after a failure
    lane.turn = True
    assert isinstance(step(outbox, lane), SendRecord)  # statuses go on
    outbox.acknowledged("DE*ABC*E2*1", OicpStatus.AVAILABLE, "000")
    assert step(outbox, lane) == Wait(160.0)  # the record waits for the fullLoad
    assert isinstance(step(outbox, lane, now=160.0), SendDataFullLoad)


def test_validation_errors_name_the_records_they_refuse() -> None:
    exc = HubRejectedError("hub answered HTTP 400", http_status=400)
    exc.field_errors = (
        ("operatorEvseData.evseDataRecord[1].geoCoordinates", "may not be null"),
        ("operatorEvseData.evseDataRecord[1].address.street", "size must be between 2 and 100"),
        ("operatorEvseData.evseDataRecord[7].plugs", "out of the batch: ignored"),
        ("operatorEvseData.operatorName", "may not be null"),
    )
    assert named_records(exc, 3) == {1: [
        "operatorEvseData.evseDataRecord[1].geoCoordinates: may not be null",
        "operatorEvseData.evseDataRecord[1].address.street: size must be between 2 and 100",
    ]}  # fmt: skip


@pytest.mark.parametrize(("now", "due"), [
    (datetime(2026, 12, 1, 12, tzinfo=UTC), datetime(2026, 12, 7, 2, 30, tzinfo=UTC)),
    (datetime(2026, 12, 7, 2, 29, tzinfo=UTC), datetime(2026, 12, 7, 2, 30, tzinfo=UTC)),
    (datetime(2026, 12, 7, 2, 30, tzinfo=UTC), datetime(2026, 12, 14, 2, 30, tzinfo=UTC)),
    # Summer time: Monday 03:30 in Berlin is 01:30 UTC.
    (datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 7, 6, 1, 30, tzinfo=UTC)),
])  # fmt: skip
def test_weekly_data_full_load_time(now: datetime, due: datetime) -> None:
    assert next_weekly_run(now, "monday", time(3, 30), ZoneInfo("Europe/Berlin")) == due


def _pending_future() -> object:
    import asyncio

    loop = asyncio.new_event_loop()
    fut = loop.create_future()
    loop.close()
    return fut
