"""EVSE data benchmarks (``python -m bench.evse_data``): three figures, each run ``--runs``
times (median and spread are reported, with the CPU split of the measuring process).

1. **build**: building and validating 50,000 EvseDataRecords from an in-memory catalog
   (5,000 stations of 10 EVSEs at 50 locations), the work a start or a data fullLoad does.
   Target: <= 5 s.
2. **memory**: the peak of Python allocations (tracemalloc) while one 50,000-record data
   fullLoad is sent with the bridge's OICP client to the hub simulator (a separate process),
   above the idle state in which the records are already held (as the data outbox holds
   them), as a multiple of the body size. Target: <= 2x.
3. **status delay**: with a 10,000-record data fullLoad in the lane (the hub simulator
   answering after 0.2 s per request, as a loaded hub might), statuses change every 20 ms for
   3 s; the delay from each change to the hub's acknowledgment, p50/p99/max; and the same
   without any data in the lane, for comparison. The lane's rule: a data request delays a
   status by no more than its own time.

The machine may be shared with other work; the numbers say so by their spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.catalog.facts import OperatorFacts
from bridge.catalog.model import LocationBody, StationBody
from bridge.config import OicpSettings
from bridge.delivery.data_outbox import DataOutbox
from bridge.delivery.lane import RetrySettings
from bridge.delivery.outbox import Outbox
from bridge.delivery.worker import PushWorker
from bridge.oicp.client import OicpClient, PushOutcome
from bridge.oicp.evse_schema import compile_all
from bridge.oicp.models import ActionType
from bridge.oicp.records import RecordFacts, build_record
from bridge.ratelimit import SlidingWindow
from bridge.status.engine import StatusEngine, StatusReport
from bridge.status.registry import Registry
from bridge.status.table import OcppStatus, effective_table
from bridge.store.sqlite import StateStore

OPERATOR = "DE*ABC"
FACTS = RecordFacts(OperatorFacts.model_validate({
    "hotline_phone": "+4930123456", "accessibility": "Free publicly accessible",
    "payment_options": ["Contract"], "calibration_law": "Local",
}))  # fmt: skip
CONNECTORS = [
    {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": "AC_3_PHASE",
     "max_voltage": 230, "max_amperage": 32, "max_electric_power": 22000},
    {"id": "2", "standard": "IEC_62196_T2_COMBO", "format": "CABLE", "power_type": "DC",
     "max_voltage": 920, "max_amperage": 400, "max_electric_power": 300000},
]  # fmt: skip


def catalog(evses: int) -> list[tuple[LocationBody, StationBody]]:
    """``evses`` EVSEs: stations of 10 EVSEs, 100 stations a location."""
    out = []
    locations: dict[int, LocationBody] = {}
    for s in range(evses // 10):
        n = s // 100
        if n not in locations:
            locations[n] = LocationBody.model_validate({
                "id": f"L{n}", "name": f"Depot {n}", "address": f"Hauptstrasse {n + 1}",
                "city": "Berlin", "postal_code": "10115", "country": "DEU",
                "coordinates": {"latitude": f"52.{n:06d}", "longitude": "13.404954"},
                "time_zone": "Europe/Berlin", "parking_type": "PARKING_LOT",
            })  # fmt: skip
        station = StationBody.model_validate({
            "id": f"CP{s}", "location_id": f"L{n}", "deployment_state": "production",
            "evses": [{"uid": f"u{s}-{e}", "evse_id": f"DE*ABC*E{s}*{e}", "ocpp_ids": [e],
                       "capabilities": ["RFID_READER", "REMOTE_START_STOP_CAPABLE"],
                       "connectors": CONNECTORS[e % 2: e % 2 + 1]} for e in range(1, 11)],
        })  # fmt: skip
        out.append((locations[n], station))
    return out


def cpu() -> tuple[float, float]:
    t = os.times()
    return t.user, t.system


def build_run(objects: list[tuple[LocationBody, StationBody]]) -> dict[str, float]:
    now = datetime.now(UTC)
    u0, s0 = cpu()
    started = time.perf_counter()
    ok = 0
    for location, station in objects:
        for evse in station.evses:
            ok += build_record(location, station, evse, FACTS, now=now).ok
    wall = time.perf_counter() - started
    u1, s1 = cpu()
    assert ok == sum(len(s.evses) for _, s in objects), "every record must validate"
    return {"wall_s": wall, "user_s": u1 - u0, "sys_s": s1 - s0, "records": ok}


def records_json(objects: list[tuple[LocationBody, StationBody]]) -> list[str]:
    now = datetime.now(UTC)
    return [json.dumps(build_record(loc, st, e, FACTS, now=now).record, separators=(",", ":"),
                       ensure_ascii=False) for loc, st in objects for e in st.evses]  # fmt: skip


class HubProcess:
    """``oicp-bridge hub-sim`` in its own process (its memory is not the client's)."""

    def __init__(self, port: int, latency: float = 0.0) -> None:
        code = ("import asyncio, sys; from bridge.hubsim import HubSimulator\n"
                "async def main():\n"
                f"    async with HubSimulator('127.0.0.1', {port}, latency={latency}) as h:\n"
                "        print('ready', flush=True); await asyncio.Event().wait()\n"
                "asyncio.run(main())")  # fmt: skip
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def memory_run(records: list[str], hub_url: str) -> dict[str, float]:
    settings = OicpSettings(base_url=hub_url, operator_id=OPERATOR, operator_name="ABC",
                            request_timeout=120)  # fmt: skip
    async with OicpClient(settings) as client:
        body_size = len(client.data_body(ActionType.FULL_LOAD, records))
        await client.push_evse_data(ActionType.INSERT, records[:1])  # connection, warm paths
        tracemalloc.start()
        idle, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        started = time.perf_counter()
        outcome = await client.push_evse_data(ActionType.FULL_LOAD, records, timeout=120)
        wall = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert outcome.code == "000"
    return {"body_mb": body_size / 1e6, "peak_above_idle_mb": (peak - idle) / 1e6,
            "ratio": (peak - idle) / body_size, "wall_s": wall}  # fmt: skip


async def delay_run(records: int, hub_url: str, tmp: Path) -> dict[str, float]:
    """Status delays while a data fullLoad of ``records`` is in the lane."""
    store = StateStore(tmp / f"delay-{time.monotonic_ns()}.db", synchronous="OFF")
    store.open()
    registry = Registry({"CP1": {1: "DE*ABC*E1*1", 2: "DE*ABC*E1*2"}}, OPERATOR)
    engine = StatusEngine(effective_table({}), registry)
    outbox = Outbox(store)
    data = DataOutbox(store, changed=outbox.changed)
    objects = catalog(records)
    now = datetime.now(UTC)
    for loc, st in objects:
        for e in st.evses:
            data.set_built(st.id, build_record(loc, st, e, FACTS, now=now), want=True)
    settings = OicpSettings(base_url=hub_url, operator_id=OPERATOR, operator_name="ABC")
    acked: dict[tuple[str, str], float] = {}

    class Timed:
        def __init__(self, client: OicpClient) -> None:
            self.client = client

        async def push_evse_status(self, action: ActionType, recs: Sequence[tuple[str, Any]],
                                   *, timeout: float | None = None) -> PushOutcome:  # fmt: skip
            out = await self.client.push_evse_status(action, recs, timeout=timeout)
            for evse_id, status in recs:
                acked.setdefault((evse_id, status.value), time.monotonic())
            return out

        async def push_evse_data(self, action: ActionType, recs: Sequence[str], *,
                                 timeout: float | None = None) -> PushOutcome:  # fmt: skip
            return await self.client.push_evse_data(action, recs, timeout=timeout)

    async with OicpClient(settings) as client:
        worker = PushWorker(outbox, engine, Timed(client),  # type: ignore[arg-type]
                            limiter=SlidingWindow.per_minute(2000), data=data,
                            data_limiter=SlidingWindow.per_minute(375), data_batch_size=100,
                            retry=RetrySettings(data_full_load_timeout=120))  # fmt: skip
        outbox.gate = None  # these EVSEs have no data rows: statuses are not held
        running = asyncio.create_task(worker.run())
        full = worker.request_data_full_load() if records else None
        changes: list[tuple[str, str, float]] = []
        statuses = [OcppStatus.AVAILABLE, OcppStatus.CHARGING]
        for i in range(150):  # 3 s of changes, one every 20 ms, alternating two EVSEs
            connector = 1 + i % 2
            status = statuses[(i // 2) % 2]
            outbox.apply(engine.apply(StatusReport("CP1", connector, connector, status))[1])
            evse_id = f"DE*ABC*E1*{connector}"
            changes.append((evse_id, engine.status(evse_id).value, time.monotonic()))
            await asyncio.sleep(0.02)
        count = await asyncio.wait_for(full, 300) if full is not None else 0
        deadline = time.monotonic() + 30
        while len(outbox) and time.monotonic() < deadline:  # noqa: ASYNC110  (a poll with a cap)
            await asyncio.sleep(0.05)
        worker.stop()
        await running
    await store.close()
    delays = []
    for evse_id, status, at in changes:
        # The first acknowledgment of this status after the change (later changes coalesce:
        # the hub then shows a newer status; that one's delay counts instead).
        done = [t for (e, s), t in acked.items() if e == evse_id and s == status and t >= at]
        if done:
            delays.append(min(done) - at)
    delays.sort()
    p = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]  # noqa: E731
    return {"records": count, "measured": len(delays), "p50_ms": p(0.5) * 1000,
            "p99_ms": p(0.99) * 1000, "max_ms": delays[-1] * 1000}  # fmt: skip


def summary(runs: list[dict[str, float]], key: str) -> str:
    values = [r[key] for r in runs]
    return (f"median {statistics.median(values):.3f}, spread {min(values):.3f}-"
            f"{max(values):.3f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--delay-records", type=int, default=10_000)
    parser.add_argument("--only", choices=("build", "memory", "delay"))
    args = parser.parse_args(argv)
    compile_all()
    results: dict[str, Any] = {"machine_cpus": os.cpu_count()}
    objects = catalog(args.records)
    show: Callable[[str], None] = lambda s: print(s, flush=True)  # noqa: E731
    if args.only in (None, "build"):
        runs = [build_run(objects) for _ in range(args.runs)]
        results["build"] = runs
        show(f"build+validate {args.records} records: wall s {summary(runs, 'wall_s')}; "
             f"user s {summary(runs, 'user_s')}; sys s {summary(runs, 'sys_s')}")  # fmt: skip
    if args.only in (None, "memory"):
        records = records_json(objects)
        runs = []
        for _ in range(args.runs):
            hub = HubProcess(free_port())
            try:
                runs.append(asyncio.run(memory_run(records, hub.url)))
            finally:
                hub.stop()
        results["memory"] = runs
        show(f"fullLoad of {args.records} records, body {runs[0]['body_mb']:.1f} MB: peak "
             f"above idle / body {summary(runs, 'ratio')}; send wall s "
             f"{summary(runs, 'wall_s')}")  # fmt: skip
    if args.only in (None, "delay"):
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.runs):
                hub = HubProcess(free_port(), latency=0.2)
                try:
                    runs.append(asyncio.run(delay_run(args.delay_records, hub.url, Path(tmp))))
                finally:
                    hub.stop()
        results["delay"] = runs
        show(f"status delay with a {args.delay_records}-record data fullLoad in the lane (hub "
             f"0.2 s a request): p50 ms {summary(runs, 'p50_ms')}; p99 ms "
             f"{summary(runs, 'p99_ms')}; max ms {summary(runs, 'max_ms')}")  # fmt: skip
        base = []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.runs):
                hub = HubProcess(free_port(), latency=0.2)
                try:
                    base.append(asyncio.run(delay_run(0, hub.url, Path(tmp))))
                finally:
                    hub.stop()
        results["delay_without_data"] = base
        show(f"the same without data in the lane: p50 ms {summary(base, 'p50_ms')}; p99 ms "
             f"{summary(base, 'p99_ms')}; max ms {summary(base, 'max_ms')}")  # fmt: skip
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
