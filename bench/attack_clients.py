"""Clients of the attack phase that run in processes of their own (``bench/attack.py``).

    python -m bench.attack_clients hold --port P --count N   # hold N idle connections
    python -m bench.attack_clients probe --port P --first K  # a legitimate charger, timed

Each reports one JSON line on stdout and ends when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import ssl
import sys
import time
from pathlib import Path
from typing import Any

PY = sys.executable
ATTACKER, LEGIT, ATTACKER_2 = "127.0.0.1", "127.0.0.2", "127.0.0.3"
PASSWORD = "attack-bench-7f3a9c2e"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def login(
    port: int, cp_id: str, *, tls: ssl.SSLContext | None, host: str = LEGIT
) -> dict[str, Any]:
    """A legitimate charger's first login (a password check) and one Heartbeat, timed."""
    import websockets

    scheme = "wss" if tls is not None else "ws"
    started = time.monotonic()
    try:
        async with asyncio.timeout(30):
            async with websockets.connect(
                f"{scheme}://127.0.0.1:{port}/ocpp/{cp_id}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                additional_headers={"Authorization": basic(cp_id, PASSWORD)}, ssl=tls,
                local_addr=(host, 0), open_timeout=30,
            ) as ws:  # fmt: skip
                await ws.send('[2,"1","Heartbeat",{}]')
                await ws.recv()
        return {"ok": True, "s": round(time.monotonic() - started, 3)}
    except Exception as exc:
        return {"ok": False, "s": round(time.monotonic() - started, 3), "error": repr(exc)}


class Holder:
    """A child process holding ``count`` idle TCP connections (its own descriptors)."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> dict[str, Any]:
        self.proc = await asyncio.create_subprocess_exec(
            PY, "-m", "bench.attack_clients", "hold", "--port", str(self.port), "--count",
            str(self.count), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        async with asyncio.timeout(120):
            line = await self.proc.stdout.readline()
        result: dict[str, Any] = json.loads(line)
        return result

    async def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Prober:
    """A child process logging in as a legitimate charger from another address, again and
    again (a fresh charger each time, so each login costs a password check), until stopped.

    Its own process: the attack traffic of the runner does not delay its measurements.
    """

    def __init__(self, port: int, *, ca: Path | None, first: int, interval: float) -> None:
        self.argv = [PY, "-m", "bench.attack_clients", "probe", "--port", str(port), "--first",
                     str(first), "--interval", str(interval)]  # fmt: skip
        if ca is not None:
            self.argv += ["--ca", str(ca)]
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Prober:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(60):
            await self.proc.stdout.readline()  # "ready"
        return self

    async def stop(self) -> list[dict[str, Any]]:
        assert self.proc is not None and self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        async with asyncio.timeout(60):
            line = await self.proc.stdout.readline()
            await self.proc.wait()
        result: list[dict[str, Any]] = json.loads(line)
        return result


async def probe(port: int, ca: Path | None, first: int, interval: float) -> None:
    """(In the child) log in every ``interval`` s until stdin closes; print the timings."""
    context = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.run_in_executor(None, lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)))
    print("ready", flush=True)
    results, n = [], first
    while not stop.is_set():
        results.append(await login(port, f"CP{n:05d}", tls=context))
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    print(json.dumps(results), flush=True)


async def hold(port: int, count: int) -> None:
    """(In the child) open ``count`` idle connections, report, keep them until stdin closes."""
    opened: list[asyncio.StreamWriter] = []
    failed = 0
    for _ in range(count):
        try:
            _, writer = await asyncio.open_connection(ATTACKER, port)
            opened.append(writer)
        except OSError:
            failed += 1
    await asyncio.sleep(0.5)
    closed = sum(1 for w in opened if w.transport.is_closing() or w.is_closing())
    print(json.dumps({"opened": len(opened), "failed": failed, "closed_by_server": closed}),
          flush=True)  # fmt: skip
    await asyncio.to_thread(sys.stdin.read)
    for writer in opened:
        writer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.attack_clients")
    p.add_argument("command", choices=("hold", "probe"))
    p.add_argument("--port", type=int, required=True, help="the port to connect to")
    p.add_argument("--count", type=int, default=0, help="hold: connections to hold")
    p.add_argument("--ca", type=Path, help="probe: CA file of the OCPP port (wss)")
    p.add_argument("--first", type=int, default=1, help="probe: first charger number")
    p.add_argument("--interval", type=float, default=1.0, help="probe: seconds between logins")
    a = p.parse_args(argv)
    if a.command == "hold":
        asyncio.run(hold(a.port, a.count))
    else:
        asyncio.run(probe(a.port, a.ca, a.first, a.interval))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
