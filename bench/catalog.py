"""Catalog phase: the management API at fleet size, over real HTTP to a real bridge process.

    python -m bench.catalog [--runs 3] [--stations 10000] [--evses 50000] [--pages 300]

Per run, on a fresh state database:

1. **batch create**: ``--stations`` charge stations with one EVSE each (and their location),
   in batches of 1,000 (``POST /api/v2/chargestations/batch``); the wall time of all batches.
   Target: 10,000 in ≤ 10 s.
2. **list**: more stations (five EVSEs each) until ``--evses`` EVSEs are stored, then
   ``--pages`` reads of a page of 100 stations at random offsets
   (``GET /api/v2/chargestations?offset=…&limit=100``), one at a time; p50/p99 of the client's
   round trip. Target: p99 ≤ 20 ms with 50,000 EVSEs.

Stations use the default security profile 0 (no password hash to compute: scrypt would
measure the hash cost, ~1.5 ms per station, not the API). The StatusNotification ingest with
the catalog in place is ``make bench``'s throughput phase: its chargers are the catalog's
stations (imported from the generated ``chargers:``).

Prints one JSON object per run and a summary (median and spread over the runs), plus the CPU
the bridge process used in each step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bridge.api.tokens import hash_token

TOKEN = "bench-token-0123456789abcdef0123456789abcdef"
HEADERS = {"Authorization": f"Token {TOKEN}"}
LOCATION = {"id": "LOC-BENCH", "address": "Bench Street 1", "city": "Berlin", "country": "DEU",
            "coordinates": {"latitude": "52.520008", "longitude": "13.404954"},
            "time_zone": "Europe/Berlin"}  # fmt: skip
CONNECTOR = {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET",
             "power_type": "AC_3_PHASE", "max_voltage": 230, "max_amperage": 32}  # fmt: skip
BATCH = 1000


def station(n: int, evses: int) -> dict[str, Any]:
    return {
        "id": f"CS{n:06d}", "location_id": "LOC-BENCH", "deployment_state": "production",
        "evses": [{"uid": f"CS{n:06d}-{k}", "evse_id": f"DE*ABC*E{n}*{k}", "ocpp_ids": [k],
                   "connectors": [CONNECTOR]} for k in range(1, evses + 1)],
    }  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_bridge(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    config = workdir / "bridge.yaml"
    config.write_text(yaml.safe_dump({
        "ocpp": {"host": "127.0.0.1", "port": 0},
        "oicp": {"base_url": "http://127.0.0.1:9", "operator_id": "DE*ABC"},
        "state": {"database": str(workdir / "bridge.db")},
        "fullload": {"enabled": False},
        "ops": {"host": "127.0.0.1", "port": 0},
        "log": {"level": "WARNING"},
        "api": {"tokens": [{"name": "bench", "hash": hash_token(TOKEN), "scope": "write"}]},
        # The operator facts every EVSE data record needs (as a production configuration has):
        # without them each new EVSE's record is invalid and logged as such.
        "catalog": {"operator_defaults": {
            "hotline_phone": "+4930123456", "accessibility": "Free publicly accessible",
            "payment_options": ["Contract"], "authentication_modes": ["NFC RFID Classic"],
            "calibration_law": "Not Available"}},
    }))  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")},
             "PYTHONUNBUFFERED": "1", "BRIDGE_LOG__LEVEL": "INFO"},
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"bridge.started"' in line:
            port = json.loads(line)["ops_port"]
            # Keep reading its log: a full pipe would stop the bridge at its next line.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, f"http://127.0.0.1:{port}/api/v2"
    raise SystemExit("the bridge did not start")


async def one_run(stations: int, evses: int, pages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-catalog-") as tmp:
        proc, api = start_bridge(Path(tmp))
        try:
            async with httpx.AsyncClient(base_url=api, headers=HEADERS, timeout=120) as client:
                r = await client.post("/locations", json=LOCATION)
                assert r.json()["status_code"] == 1000, r.text
                cpu0, t0 = cpu_seconds(proc.pid), time.perf_counter()
                for start in range(0, stations, BATCH):
                    last = min(stations, start + BATCH)
                    items = [
                        {"action": "create", "body": station(n, 1)}
                        for n in range(start + 1, last + 1)
                    ]
                    r = await client.post("/chargestations/batch", json=items)
                    body = r.json()
                    assert body["status_code"] == 1000, body["status_message"]
                    assert all(i["status_code"] == 1000 for i in body["data"]), body["data"][:3]
                create_s = time.perf_counter() - t0
                create_cpu = cpu_seconds(proc.pid) - cpu0
                stored, n = stations, stations
                while stored < evses:  # fill up to the EVSE count, five per station
                    items = []
                    while len(items) < BATCH // 5 and stored < evses:  # under 1 MiB a request
                        n += 1
                        items.append({"action": "create", "body": station(n, 5)})
                        stored += 5
                    r = await client.post("/chargestations/batch", json=items)
                    assert r.json()["status_code"] == 1000, r.text[:300]
                total = int((await client.get("/chargestations", params={"limit": 0}))
                            .headers["X-Total-Count"])  # fmt: skip
                rng = random.Random(1)
                latencies = []
                cpu1 = cpu_seconds(proc.pid)
                for _ in range(pages):
                    offset = rng.randrange(0, max(1, total - 100))
                    t = time.perf_counter()
                    r = await client.get("/chargestations", params={"offset": offset, "limit": 100})
                    latencies.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200 and len(r.json()["data"]) == 100
                list_cpu = cpu_seconds(proc.pid) - cpu1
        finally:
            proc.terminate()
            proc.wait(30)
    latencies.sort()
    return {
        "stations_created": stations,
        "create_s": round(create_s, 2),
        "create_cpu_s": round(create_cpu, 2),
        "stations_stored": total,
        "evses_stored": stored,
        "list_p50_ms": round(statistics.median(latencies), 2),
        "list_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
        "list_cpu_ms_per_page": round(list_cpu * 1000 / pages, 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.catalog", description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--stations", type=int, default=10_000)
    p.add_argument("--evses", type=int, default=50_000)
    p.add_argument("--pages", type=int, default=300)
    a = p.parse_args(argv)
    runs = []
    for n in range(a.runs):
        result = asyncio.run(one_run(a.stations, a.evses, a.pages))
        print(json.dumps({"run": n + 1, **result}), flush=True)
        runs.append(result)
    summary = {}
    for key in ("create_s", "create_cpu_s", "list_p50_ms", "list_p99_ms", "list_cpu_ms_per_page"):
        values = [r[key] for r in runs]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    print(json.dumps({"summary": summary, "runs": len(runs), "cpus": os.cpu_count()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
