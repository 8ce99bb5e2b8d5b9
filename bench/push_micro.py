"""Cost of one sequential eRoamingPushEvseStatus against the hub simulator, three HTTP clients.

Starts ``oicp-bridge hub-sim`` as its own process, then sends ``--count`` pushes one after another
with the bridge's ``OicpClient`` (httpx API on the bridge's HTTP/1.1 transport), the same client
on httpx's default transport (httpcore; the client before issue 6), and the same bodies with a
bare aiohttp session, and prints per push: wall time, this process's CPU and the simulator's
CPU. The clients take turns for ``--rounds`` rounds and the medians are printed (the machine may
be shared). It measures the push path alone (the push worker's ceiling is one push per round
trip), not the bridge.

    python -m bench.push_micro [--count 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx

from bridge.config import OicpSettings
from bridge.oicp.client import OicpClient
from bridge.oicp.models import ActionType, build_status_request
from bridge.status.table import OicpStatus

EVSE = "DE*ABC*E1*1"


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def status(i: int) -> OicpStatus:
    return OicpStatus.OCCUPIED if i % 2 else OicpStatus.AVAILABLE


async def main(count: int, rounds: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "hub-sim", "--port", str(port),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        settings = OicpSettings(base_url=f"http://127.0.0.1:{port}", operator_id="DE*ABC")
        client = OicpClient(settings)
        await client.push_evse_status(ActionType.INSERT, [(EVSE, OicpStatus.AVAILABLE)])
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2, keepalive_expiry=30.0)
        httpcore_client = OicpClient(settings, transport=httpx.AsyncHTTPTransport(limits=limits))
        headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}
        async with aiohttp.ClientSession(headers=headers) as session:

            async def with_httpx(i: int) -> None:
                await client.push_evse_status(ActionType.UPDATE, [(EVSE, status(i))])

            async def with_httpcore(i: int) -> None:
                await httpcore_client.push_evse_status(ActionType.UPDATE, [(EVSE, status(i))])

            async def with_aiohttp(i: int) -> None:
                body = build_status_request(ActionType.UPDATE, "DE*ABC", None, [(EVSE, status(i))])
                data = body.model_dump_json().encode()
                async with session.post(client.status_url, data=data) as response:
                    answer = json.loads(await response.read())
                    assert answer["StatusCode"]["Code"] == "000", answer

            clients = {
                "OicpClient": with_httpx,
                "OicpClient, httpcore": with_httpcore,
                "aiohttp": with_aiohttp,
            }
            runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label in clients}
            for _ in range(rounds):
                for label, push in clients.items():
                    cpu, hub_cpu, started = own_cpu(), proc_cpu(hub.pid), time.perf_counter()
                    for i in range(count):
                        await push(i)
                    wall = time.perf_counter() - started
                    runs[label].append((wall, own_cpu() - cpu, proc_cpu(hub.pid) - hub_cpu))
            print(f"medians of {rounds} rounds of {count:,} pushes")
            for label, samples in runs.items():
                columns = zip(*samples, strict=True)
                wall, cpu, hub_cpu = (statistics.median(column) / count for column in columns)
                print(
                    f"{label:22} {wall * 1e6:6.0f} µs wall/push  "
                    f"client CPU {cpu * 1e6:5.0f} µs  "
                    f"hub CPU {hub_cpu * 1e6:5.0f} µs  "
                    f"= at most {1 / wall:,.0f} pushes/s"
                )
        await httpcore_client.aclose()
        await client.aclose()
    finally:
        hub.terminate()
        await asyncio.wait_for(hub.wait(), 10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.count, args.rounds))
