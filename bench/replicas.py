"""PostgreSQL and replicas: durable ingest on PostgreSQL beside SQLite and the ``ocpp``
baseline, and the failover time of the push leader.

* ingest    the closed-loop throughput phase of bench.run with three servers up at once: the
            bridge on SQLite, the bridge on PostgreSQL, the bare ``ocpp`` baseline; ``--runs``
            times, each on a new database, reported as median and spread
* failover  two replicas (default replication settings) and a charger reporting to the
            follower; SIGKILL of the leader, then the time until the hub receives the first push
            of the new leader; ``--trials`` times, p50 and max

    python -m bench.replicas                      # both (~4 min)
    python -m bench.replicas failover --trials 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import websockets
import yaml

from bench import run as bench

PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
_names = itertools.count()


@contextlib.contextmanager
def database() -> Any:
    name = f"bench_{os.getpid()}_{next(_names)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "n": len(values)}  # fmt: skip


# -- ingest ----------------------------------------------------------------------------------
async def ingest(runs: int, extra: list[str]) -> dict[str, Any]:
    kinds = ["bridge", "bridge-pg", "baseline"]
    per_run = []
    for n in range(runs):
        cfg, _ = bench.parse_args(["--phases", "throughput", "--servers", ",".join(kinds),
                                   *extra])  # fmt: skip
        with database() as url:
            bench.STATE_URLS["bridge-pg"] = url
            ctx = bench.Context(cfg)
            ctx.hub = bench.Hub(cfg)
            await ctx.hub.ready()
            try:
                ctx.log(f"ingest run {n + 1}/{runs}")
                results = await bench.phase_throughput(ctx, kinds)
            finally:
                await ctx.hub.close()
        per_run.append({k: {"rate_per_s": results[k]["rate_per_s"],
                            "server_cpu_us_per_msg": results[k]["server_cpu_us_per_msg"],
                            "errors": results[k]["errors"]} for k in kinds})  # fmt: skip
    rate = {k: [r[k]["rate_per_s"] for r in per_run] for k in kinds}
    return {
        "runs": per_run,
        "rate_per_s": {k: spread(v) for k, v in rate.items()},
        "cpu_us_per_msg": {k: spread([r[k]["server_cpu_us_per_msg"] for r in per_run])
                           for k in kinds},
        "pg_vs_baseline": spread([p / b for p, b in zip(rate["bridge-pg"], rate["baseline"],
                                                         strict=True)]),
        "pg_vs_sqlite": spread([p / s for p, s in zip(rate["bridge-pg"], rate["bridge"],
                                                       strict=True)]),
    }  # fmt: skip


# -- failover --------------------------------------------------------------------------------
def replica_config(workdir: Path, name: str, url: str, hub_port: int) -> tuple[Path, int, int]:
    ocpp, ops = bench.free_port(), bench.free_port()
    tree = {
        "ocpp": {"host": "127.0.0.1", "port": ocpp, "offline_grace": 600},
        "oicp": {"base_url": f"http://127.0.0.1:{hub_port}", "operator_id": bench.OPERATOR},
        "state": {"url": url, "database": str(workdir / name / "state.db")},
        "replication": {"replica_id": name},  # the defaults are what is measured
        "fullload": {"enabled": False},
        "ops": {"host": "127.0.0.1", "port": ops},
        "log": {"level": "INFO", "format": "json"},
        "chargers": {"CP1": {"evses": {1: f"{bench.OPERATOR}*E1*1"}}},
    }
    (workdir / name).mkdir(parents=True, exist_ok=True)
    path = workdir / name / "bridge.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path, ocpp, ops


class Replica:
    def __init__(self, workdir: Path, name: str, url: str, hub_port: int) -> None:
        self.workdir, self.name = workdir, name
        self.config, self.ocpp, self.ops = replica_config(workdir, name, url, hub_port)
        self.proc: bench.Proc | None = None

    async def start(self) -> None:
        self.proc = bench.Proc(
            self.name,
            [bench.PY, "-m", "bridge.cli", "run", "--config", str(self.config)],
            self.workdir / f"{self.name}.log",
        )
        await bench.wait_port(self.ocpp, self.proc, timeout=60)

    async def role(self, http: httpx.AsyncClient) -> str | None:
        try:
            answer = await http.get(f"http://127.0.0.1:{self.ops}/readyz", timeout=2)
            return str(answer.json().get("role"))
        except (httpx.HTTPError, ValueError):
            return None


async def report_forever(port: int) -> None:
    """One charger sending a changed status every 50 ms."""
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ocpp/CP1", subprotocols=["ocpp1.6"]
    ) as ws:  # type: ignore[list-item]
        for n in itertools.count():
            status = "Charging" if n % 2 else "Available"
            await ws.send(json.dumps([2, str(n), "StatusNotification",
                                      {"connectorId": 1, "errorCode": "NoError",
                                       "status": status}]))  # fmt: skip
            await ws.recv()
            await asyncio.sleep(0.05)


async def failover(trials: int, workdir: Path) -> dict[str, Any]:
    assert bench.check_monotonic_shared(), "the hub's clock must be this process's"
    cfg, _ = bench.parse_args(["--workdir", str(workdir)])
    hub = bench.Hub(cfg)
    await hub.ready()
    times, in_flight_max = [], 0
    with database() as url:
        replicas = [Replica(workdir, f"r{i}", url, hub.port) for i in (1, 2)]
        for r in replicas:
            await r.start()
        async with httpx.AsyncClient() as http:
            try:
                for trial in range(trials):
                    leader = await _one_leader(replicas, http)
                    follower = next(r for r in replicas if r is not leader)
                    traffic = asyncio.create_task(report_forever(follower.ocpp))
                    await asyncio.sleep(1.0)  # pushes flowing
                    killed = time.monotonic()
                    assert leader.proc is not None
                    leader.proc.popen.kill()
                    first = await _first_push_after(hub, killed, timeout=30)
                    times.append(first - killed)
                    bench.Context(cfg).log(f"failover {trial + 1}/{trials}: {first - killed:.2f} s")
                    traffic.cancel()
                    with contextlib.suppress(BaseException):
                        await traffic
                    await asyncio.to_thread(leader.proc.popen.wait, 10)
                    await leader.start()  # back, as a follower
                in_flight_max = int((await hub.stats())["max_in_flight"])
            finally:
                for r in replicas:
                    if r.proc is not None:
                        await r.proc.stop()
                await hub.close()
    return {"trials": trials, "failover_s": {
        "p50": round(statistics.median(times), 2), "max": round(max(times), 2),
        "min": round(min(times), 2), "all": [round(t, 2) for t in times]},
        "hub_max_in_flight": in_flight_max}  # fmt: skip


async def _one_leader(replicas: list[Replica], http: httpx.AsyncClient) -> Replica:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        roles = [await r.role(http) for r in replicas]
        if roles.count("leader") == 1:
            return replicas[roles.index("leader")]
        await asyncio.sleep(0.2)
    raise RuntimeError("no single leader within 60 s")


async def _first_push_after(hub: bench.Hub, since: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = [p["time"] for p in await hub.received() if p["time"] > since]
        if later:
            return float(min(later))
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no push within {timeout} s of the kill")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.replicas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("what", nargs="?", default="all", choices=["all", "ingest", "failover"])
    p.add_argument("--runs", type=int, default=3, help="ingest runs (default 3)")
    p.add_argument("--trials", type=int, default=10, help="failover trials (default 10)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("bench_args", nargs="*", help="after --: options of bench.run for ingest")
    a = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bridge-replicas-"))
    results: dict[str, Any] = {"machine": bench.machine()}
    if a.what in ("all", "ingest"):
        results["ingest"] = asyncio.run(ingest(a.runs, a.bench_args))
    if a.what in ("all", "failover"):
        results["failover"] = asyncio.run(failover(a.trials, workdir))
    text = json.dumps(results, indent=2, default=str)
    print(text)
    if a.json:
        a.json.write_text(text)
    print(f"logs: {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
