"""The daily status fullLoad and the weekly data fullLoad, at a local time (DST-aware)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import structlog

from bridge.delivery.worker import PushWorker

log = structlog.get_logger("bridge.scheduler")


def next_run(now: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The first moment after ``now`` whose local time in ``zone`` is ``at`` (aware, UTC)."""
    local = now.astimezone(zone)
    day = local.date()
    for offset in range(3):
        candidate = datetime.combine(day + timedelta(days=offset), at, tzinfo=zone)
        # A local time that does not exist (DST gap) normalises forward through UTC.
        candidate = candidate.astimezone(UTC)
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a day always has the time")


async def run_daily_full_load(
    worker: PushWorker, at: time, zone: ZoneInfo, *, leads: Callable[[], bool] = lambda: True
) -> None:
    """Ask the worker for one fullLoad a day (sent between pushes), if this process leads
    the lane then (replicas: only the push leader sends it).

    It does not wait for the answer: a fullLoad the hub keeps failing is retried by the worker
    while the days go on; a refused one (``fullload.failed``) waits for the next day.
    """
    while True:
        now = datetime.now(UTC)
        due = next_run(now, at, zone)
        log.info("fullload.scheduled", due=due.isoformat(), local_time=at.isoformat("minutes"),
                 timezone=zone.key)  # fmt: skip
        await asyncio.sleep((due - now).total_seconds())
        if leads():
            worker.request_full_load().add_done_callback(_done)
        else:
            log.info("fullload.skipped", reason="this replica is not the push leader")


def _done(fut: asyncio.Future[int]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        log.info("fullload.done", records=fut.result())


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def next_weekly_run(now: datetime, weekday: str, at: time, zone: ZoneInfo) -> datetime:
    """The first moment after ``now`` that is ``weekday`` at local ``at`` in ``zone`` (UTC)."""
    target = WEEKDAYS.index(weekday)
    local = now.astimezone(zone)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        if day.weekday() != target:
            continue
        candidate = datetime.combine(day, at, tzinfo=zone).astimezone(UTC)
        if candidate > now:
            return candidate
    raise AssertionError("unreachable: a week always has the day")


async def run_weekly_data_full_load(
    worker: PushWorker,
    weekday: str,
    at: time,
    zone: ZoneInfo,
    *,
    leads: Callable[[], bool] = lambda: True,
) -> None:
    """Ask the worker for the weekly data fullLoad (Hubject advises one a week), if this
    process leads the lane then. Like the daily one it does not wait for the answer."""
    while True:
        now = datetime.now(UTC)
        due = next_weekly_run(now, weekday, at, zone)
        log.info("data.fullload.scheduled", due=due.isoformat(), weekday=weekday,
                 local_time=at.isoformat("minutes"), timezone=zone.key)  # fmt: skip
        await asyncio.sleep((due - now).total_seconds())
        if leads():
            worker.request_data_full_load().add_done_callback(_data_done)
        else:
            log.info("data.fullload.skipped", reason="this replica is not the push leader")


def _data_done(fut: asyncio.Future[int]) -> None:
    if not fut.cancelled() and fut.exception() is None:
        log.info("data.fullload.done", records=fut.result())
