"""The daily fullLoad, at a local time of day (DST-aware)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import structlog

from bridge.delivery.worker import PushWorker
from bridge.errors import HubError

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


async def run_daily_full_load(worker: PushWorker, at: time, zone: ZoneInfo) -> None:
    """Request one fullLoad a day from the worker (which sends it between pushes)."""
    while True:
        now = datetime.now(UTC)
        due = next_run(now, at, zone)
        log.info("fullload.scheduled", due=due.isoformat(), local_time=at.isoformat("minutes"),
                 timezone=zone.key)  # fmt: skip
        await asyncio.sleep((due - now).total_seconds())
        try:
            count = await worker.request_full_load()
        except HubError as exc:
            log.error("fullload.failed", error=str(exc), hub_code=exc.code)
        else:
            log.info("fullload.done", records=count)
