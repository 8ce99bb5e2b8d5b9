"""Push-lane phase: what one status push costs the bridge, and how many the lane sends per second.

Runs the bridge's own objects (``bridge.app.Bridge``: state database, outbox, push worker, hub
client, on the loop ``runtime.event_loop`` chooses) in this process against a zero-latency hub
(bench/sinkhub.py) in another. Each round: the lane is held, every EVSE gets a status change
through the same ingest call a StatusNotification makes (committed), the lane is released and
timed until the outbox is empty. The CPU of this process over the drain, divided by the pushes,
is the lane's cost per push (worker, durable acknowledgment, request, answer): ingest is done
before the clock starts. One push carries one record (``delivery`` defaults).

    python -m bench.pushlane [--chargers 1500] [--rounds 3] [--loop auto]

Prints one JSON object; bench/run.py runs it as the ``pushlane`` phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

OPERATOR = "DE*ABC"
EVSES_PER_CHARGER = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


async def _wait_port(port: int) -> None:
    for _ in range(200):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the sink hub did not listen on {port}")


async def measure(
    chargers: int, rounds: int, workdir: Path, port: int, sink: subprocess.Popen[bytes]
) -> dict[str, Any]:
    from bridge.app import Bridge
    from bridge.config import Settings
    from bridge.eventloop import loop_name, tune_gc
    from bridge.status.table import OcppStatus

    ids = [f"CP{n:05d}" for n in range(1, chargers + 1)]
    settings = Settings.model_validate({
        "ocpp": {"host": "127.0.0.1", "port": 0, "offline_grace": 3600},
        "oicp": {"base_url": f"http://127.0.0.1:{port}", "operator_id": OPERATOR},
        "state": {"database": str(workdir / "pushlane.db")},
        "delivery": {"rate_limit_per_minute": 10_000_000},
        "fullload": {"enabled": False},
        "ops": {"enabled": False},
        "chargers": {cp: {"evses": {k: f"{OPERATOR}*E{n}*{k}"
                                    for k in range(1, EVSES_PER_CHARGER + 1)}}
                     for n, cp in enumerate(ids, 1)},
    })  # fmt: skip
    bridge = Bridge(settings)
    runs: list[dict[str, float]] = []
    try:
        await _wait_port(port)
        await bridge.start()
        tune_gc()  # as `oicp-bridge run` does once started
        worker = bridge.worker
        assert worker is not None
        for r in range(rounds + 1):  # round 0 warms up (inserts, connection, caches)
            worker.hold(3600)
            status = OcppStatus.CHARGING if r % 2 else OcppStatus.AVAILABLE
            for cp in ids:
                bridge.ingest.seen(cp)
            await asyncio.gather(*(
                bridge.ingest.status(cp, key, 1, status)
                for cp in ids for key in range(1, EVSES_PER_CHARGER + 1)
            ))  # fmt: skip
            pending = len(bridge.outbox)
            times = os.times()
            cpu, sink_cpu, busy = time.process_time(), _proc_cpu(sink.pid), _machine_busy()
            started = time.perf_counter()
            worker.reset()  # ends the hold
            worker.wake()
            while not worker.idle:  # noqa: ASYNC110 (a property: there is no event to wait on)
                await asyncio.sleep(0.005)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu
            kernel = os.times().system - times.system
            sink_cpu = _proc_cpu(sink.pid) - sink_cpu
            other = _machine_busy() - busy - cpu - sink_cpu
            if r:
                runs.append({"pushes": pending, "wall_s": wall, "cpu_s": cpu, "kernel_s": kernel,
                             "sink_cpu_s": sink_cpu, "other_cores": other / wall})  # fmt: skip
        async with httpx.AsyncClient() as http:
            held = (await http.get(f"http://127.0.0.1:{port}/sink")).json()
        expected = "Occupied" if rounds % 2 else "Available"
        wrong = sum(1 for s in held["status"].values() if s != expected)
    finally:
        await bridge.stop()
    per_push = [x["cpu_s"] / x["pushes"] * 1e6 for x in runs]
    rates = [x["pushes"] / x["wall_s"] for x in runs]
    return {
        "event_loop": loop_name(),
        "evses": chargers * EVSES_PER_CHARGER,
        "runs": runs,
        "cpu_us_per_push": per_push,
        "pushes_per_s": rates,
        "kernel_us_per_push": [x["kernel_s"] / x["pushes"] * 1e6 for x in runs],
        "sink_cpu_us_per_push": [x["sink_cpu_s"] / x["pushes"] * 1e6 for x in runs],
        "other_cores": [round(x["other_cores"], 3) for x in runs],
        "median_cpu_us_per_push": statistics.median(per_push),
        "median_pushes_per_s": statistics.median(rates),
        "records_per_push": held["records"] / held["requests"] if held["requests"] else None,
        "hub_wrong": wrong,
        "hub_evses": len(held["status"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chargers", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    from bridge import eventloop
    from bridge.ops.logging import setup_logging

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pushlane-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.sinkhub", "--port", str(port)],
                            cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    try:
        with (workdir / "pushlane-bridge.log").open("w") as log:
            setup_logging("INFO", "json", stream=log)  # as in production: a line per push
            coro = measure(args.chargers, args.rounds, workdir, port, sink)
            result = eventloop.run(coro, args.loop)
    finally:
        sink.terminate()
        sink.wait(10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()


async def phase_pushlane(workdir: Path, rounds: int, chargers: int = 1500) -> dict[str, Any]:
    """Run this module in its own process (the bridge's default event loop) for bench.run."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.pushlane", "--chargers", str(chargers),
        "--rounds", str(rounds), "--workdir", str(workdir),
        stdout=asyncio.subprocess.PIPE, stderr=(workdir / "pushlane.log").open("ab"),
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 300)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.pushlane exited {proc.returncode}; see {workdir}/pushlane.log")
    result: dict[str, Any] = json.loads(out)
    return result
