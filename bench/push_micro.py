"""Cost of one sequential eRoamingPushEvseStatus against the hub simulator, two HTTP clients.

Starts ``bridge hub-sim`` as its own process, then sends ``--count`` pushes one after another
with the bridge's ``OicpClient`` (httpx) and the same bodies with an aiohttp session, and prints
per push: wall time, this process's CPU and the simulator's CPU. It measures a proposal (the push
worker's ceiling is one push per round trip), not the bridge.

    python -m bench.push_micro [--count 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

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


async def main(count: int) -> None:
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
        headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}
        async with aiohttp.ClientSession(headers=headers) as session:

            async def with_httpx(i: int) -> None:
                await client.push_evse_status(ActionType.UPDATE, [(EVSE, status(i))])

            async def with_aiohttp(i: int) -> None:
                body = build_status_request(ActionType.UPDATE, "DE*ABC", None, [(EVSE, status(i))])
                data = body.model_dump_json().encode()
                async with session.post(client.status_url, data=data) as response:
                    answer = json.loads(await response.read())
                    assert answer["StatusCode"]["Code"] == "000", answer

            for label, push in (("httpx (OicpClient)", with_httpx), ("aiohttp", with_aiohttp)):
                cpu, hub_cpu, started = own_cpu(), proc_cpu(hub.pid), time.perf_counter()
                for i in range(count):
                    await push(i)
                wall = time.perf_counter() - started
                print(
                    f"{label:20} {wall / count * 1e6:6.0f} µs wall/push  "
                    f"client CPU {(own_cpu() - cpu) / count * 1e6:5.0f} µs  "
                    f"hub CPU {(proc_cpu(hub.pid) - hub_cpu) / count * 1e6:5.0f} µs  "
                    f"= at most {count / wall:,.0f} pushes/s"
                )
        await client.aclose()
    finally:
        hub.terminate()
        await asyncio.wait_for(hub.wait(), 10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    asyncio.run(main(parser.parse_args().count))
