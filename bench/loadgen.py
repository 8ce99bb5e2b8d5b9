"""Load generator: simulated OCPP chargers over raw websockets clients, one process.

Driven by ``bench.run`` with one JSON command per line on stdin; answers one JSON line per
command on stdout (nothing else is printed there). Chargers are mixed OCPP 1.6 / 2.0.1, keep
one outstanding CALL each (OCPP-J), send Heartbeats at the interval the BootNotification reply
gives, and optionally Basic auth with the charge point ID as user name.

Charger ``n`` is ``CP{n:05d}`` with EVSEs ``DE*ABC*E{n}*1`` and ``DE*ABC*E{n}*2`` (1.6: connectors
1 and 2; 2.0.1: evseId 1 and 2, connectorId 1); even ``n`` speak 1.6, odd ``n`` 2.0.1.

Commands (all times are ``time.monotonic()``, which is one clock for every process on Linux):

* ``connect``   connect, boot and report every connector's status (bounded concurrency)
* ``closed``    every charger sends StatusNotifications back to back; counts those confirmed in
                ``[start, end]`` and writes their round-trip times to ``out``
* ``open``      StatusNotifications at a fixed total ``rate`` between ``start`` and ``end``, each
                one changing the EVSE's OICP status; writes ``[sent, confirmed, EvseID, status]``
                (``closed`` and ``open`` with ``"action": "heartbeat"`` send Heartbeats instead:
                the plainest CALL, for the relay's own cost in proxy mode)
* ``drop``      abort every TCP connection (a network blip: no close frame)
* ``reconnect`` at ``start`` every charger reconnects at once, boots and reports unchanged statuses
* ``expected``  EvseID -> OICP status the hub should hold, from the confirmed reports
* ``quit``      close every connection and exit
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import resource
import sys
import time
from array import array
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.protocol import State

OPERATOR = "DE*ABC"
# OCPP -> OICP with the bridge's default table (only to state what the hub must end up with).
OICP = {
    "Available": "Available",
    "Preparing": "Occupied",
    "Charging": "Occupied",
    "SuspendedEV": "Occupied",
    "SuspendedEVSE": "Occupied",
    "Finishing": "Occupied",
    "Occupied": "Occupied",
    "Reserved": "Reserved",
    "Unavailable": "OutOfService",
    "Faulted": "OutOfService",
}
# A charging session as a connector reports it; 1.6 changes the OICP status on 2 of 6 steps.
SESSION = {
    "1.6": ("Preparing", "Charging", "SuspendedEV", "Charging", "Finishing", "Available"),
    "2.0.1": ("Occupied", "Available"),
}
# For the latency test every report must change the OICP status, so it is worth a push.
FLIP = {
    "1.6": {"Available": "Charging", "Charging": "Available"},
    "2.0.1": {"Available": "Occupied", "Occupied": "Available"},
}
EVSES = (1, 2)
CONNECT_ERRORS = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed)
CALL_TIMEOUT = 30.0  # seconds a CALL may stay unanswered (OCPP-J leaves it to the sender)


class CallFailed(Exception):
    """The CALL got no CALLRESULT (CALLERROR, wrong id, or the connection is gone)."""


_ts_cache: tuple[int, str] = (0, "")


def timestamp() -> str:
    """RFC 3339 UTC, cached per second (formatting it per message would cost the generator)."""
    global _ts_cache  # noqa: PLW0603
    now = int(time.time())
    if now != _ts_cache[0]:
        _ts_cache = (now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))
    return _ts_cache[1]


class Charger:
    def __init__(self, n: int, options: Options) -> None:
        self.n = n
        self.cp_id = f"CP{n:05d}"
        self.version = "1.6" if n % 2 == 0 else "2.0.1"
        self.options = options
        self.ws: ClientConnection | None = None
        self.seq = 0
        self.lock = asyncio.Lock()
        self.status = dict.fromkeys(EVSES, "Available")
        self.step = 0
        self.interval = 60.0
        self.heartbeat: asyncio.Task[None] | None = None

    def evse_id(self, key: int) -> str:
        return f"{OPERATOR}*E{self.n}*{key}"

    @property
    def connected(self) -> bool:
        return self.ws is not None and self.ws.state is State.OPEN

    # -- wire ------------------------------------------------------------------------------
    async def open(self) -> None:
        o = self.options
        headers = {}
        if o.password is not None:
            token = base64.b64encode(f"{self.cp_id}:{o.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        self.ws = await connect(
            f"{o.url}/{self.cp_id}",
            subprotocols=[f"ocpp{self.version}"],  # type: ignore[list-item]
            additional_headers=headers,
            compression="deflate" if o.compression else None,
            open_timeout=o.open_timeout,
            ping_interval=None,  # the server pings; chargers' own pings are configurable
            close_timeout=1,
        )

    async def call(self, action: str, payload: str) -> tuple[float, float, str]:
        """One CALL; returns (sent, confirmed, reply). Never two outstanding."""
        async with self.lock:
            ws = self.ws
            if ws is None:
                raise CallFailed("not connected")
            self.seq += 1
            uid = str(self.seq)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(CALL_TIMEOUT):
                    await ws.send(f'[2,"{uid}","{action}",{payload}]')
                    reply = await ws.recv()
            except (ConnectionClosed, TimeoutError) as exc:
                if self.ws is ws:  # a charger gives up on a silent connection, too
                    ws.transport.abort()
                    self.ws = None
                raise CallFailed(f"{action}: {type(exc).__name__} {exc}") from None
            confirmed = time.monotonic()
        if not isinstance(reply, str) or not reply.startswith(f'[3,"{uid}",'):
            raise CallFailed(f"{action}: {str(reply)[:200]}")
        return sent, confirmed, reply

    def status_payload(self, key: int, status: str) -> str:
        if self.version == "1.6":
            return (
                f'{{"connectorId":{key},"errorCode":"NoError","status":"{status}",'
                f'"timestamp":"{timestamp()}"}}'
            )
        return (
            f'{{"timestamp":"{timestamp()}","connectorStatus":"{status}","evseId":{key},'
            f'"connectorId":1}}'
        )

    async def report(self, key: int, status: str) -> tuple[float, float]:
        sent, confirmed, _ = await self.call("StatusNotification", self.status_payload(key, status))
        self.status[key] = status
        return sent, confirmed

    async def boot(self) -> None:
        if self.version == "1.6":
            payload = '{"chargePointVendor":"Bench","chargePointModel":"LoadGen"}'
        else:
            payload = (
                '{"chargingStation":{"vendorName":"Bench","model":"LoadGen"},"reason":"PowerUp"}'
            )
        _, _, reply = await self.call("BootNotification", payload)
        answer = json.loads(reply)[2]
        if answer.get("status") != "Accepted":
            raise CallFailed(f"BootNotification not accepted: {answer}")
        self.interval = float(answer.get("interval") or 60)
        # OCPP 1.6 errata 3.22: after an accepted boot, connector 0 and every connector report.
        if self.version == "1.6":
            await self.call("StatusNotification", self.status_payload(0, "Available"))
        for key in EVSES:
            await self.report(key, self.status[key])
        if self.heartbeat is None:
            self.heartbeat = asyncio.create_task(self._heartbeats())

    async def _heartbeats(self) -> None:
        await asyncio.sleep(random.uniform(0, self.interval))
        while True:
            if self.connected and not self.lock.locked():  # a busy charger is not silent
                with contextlib.suppress(CallFailed, OSError):
                    await self.call("Heartbeat", "{}")
                    self.options.heartbeats += 1
            await asyncio.sleep(self.interval)

    async def bring_up(self, deadline: float) -> int:
        """Connect (retrying until ``deadline``) and boot; returns the number of retries."""
        retries = 0
        while True:
            try:
                if not self.connected:
                    await self.open()
                await self.boot()
                return retries
            except (*CONNECT_ERRORS, CallFailed) as exc:
                self.options.last_error = f"{type(exc).__name__}: {exc}"[:300]
                if self.ws is not None:
                    self.ws.transport.abort()
                    self.ws = None
                retries += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                await asyncio.sleep(min(left, random.uniform(0.5, 1.5)))

    def abort(self) -> None:
        if self.ws is not None:
            self.ws.transport.abort()
            self.ws = None


class Options:
    def __init__(self, args: argparse.Namespace) -> None:
        self.url = args.url.rstrip("/")
        self.password: str | None = args.password
        self.compression: bool = args.compression == "deflate"
        self.open_timeout: float = args.open_timeout
        self.heartbeats = 0
        self.last_error: str | None = None


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


class Generator:
    def __init__(self, chargers: list[Charger], options: Options) -> None:
        self.chargers = chargers
        self.options = options

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        gate = asyncio.Semaphore(int(cmd.get("concurrency", 100)))
        deadline = time.monotonic() + float(cmd["timeout"])
        todo = [c for c in self.chargers[: cmd.get("count")] if not c.connected]
        started = time.monotonic()

        async def one(c: Charger) -> int:
            async with gate:
                return await c.bring_up(deadline)

        results = await asyncio.gather(*(one(c) for c in todo), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        return {
            "connected": sum(c.connected for c in self.chargers),
            "attempted": len(todo),
            "failed": len(failed),
            "retries": sum(r for r in results if isinstance(r, int)),
            "seconds": time.monotonic() - started,
            "error": str(failed[0])[:300] if failed else None,
        }

    async def closed(self, cmd: dict[str, Any]) -> dict[str, Any]:
        start, end = float(cmd["start"]), float(cmd["end"])
        heartbeat = cmd.get("action") == "heartbeat"
        rtts = array("d")
        errors: list[str] = []
        marks: dict[str, float] = {}

        async def loop(c: Charger) -> None:
            cycle = SESSION[c.version]
            while time.monotonic() < end:
                c.step += 1
                key = EVSES[c.step % 2]
                status = cycle[(c.step // 2) % len(cycle)]
                try:
                    if heartbeat:
                        sent, confirmed, _ = await c.call("Heartbeat", "{}")
                    else:
                        sent, confirmed = await c.report(key, status)
                except CallFailed as exc:
                    errors.append(str(exc))
                    return
                if start <= confirmed <= end:
                    rtts.append(confirmed - sent)

        async def cpu_marks() -> None:
            await sleep_until(start)
            marks["start"] = cpu_seconds()
            await sleep_until(end)
            marks["end"] = cpu_seconds()

        live = [c for c in self.chargers if c.connected]
        await asyncio.gather(cpu_marks(), *(loop(c) for c in live))
        await asyncio.to_thread(Path(cmd["out"]).write_bytes, rtts.tobytes())
        return {
            "chargers": len(live),
            "confirmed": len(rtts),
            "errors": len(errors),
            "error": errors[0][:300] if errors else None,
            "cpu_s": marks["end"] - marks["start"],
        }

    async def open_loop(self, cmd: dict[str, Any]) -> dict[str, Any]:
        start, end, rate = float(cmd["start"]), float(cmd["end"]), float(cmd["rate"])
        heartbeat = cmd.get("action") == "heartbeat"
        live = [c for c in self.chargers[: cmd.get("count")] if c.connected]
        period = len(live) / rate
        records: list[tuple[float, float, str, str]] = []
        errors: list[str] = []
        late = 0
        cpu = [cpu_seconds()]

        async def loop(i: int, c: Charger) -> None:
            nonlocal late
            due = start + i * period / len(live)
            while due < end:
                await sleep_until(due)
                if time.monotonic() - due > 0.005:
                    late += 1  # the previous call was still outstanding (or the loop lagged)
                # Any status another command left (e.g. Preparing) flips to Available.
                status = FLIP[c.version].get(c.status[1], "Available")
                try:
                    if heartbeat:
                        sent, confirmed, _ = await c.call("Heartbeat", "{}")
                    else:
                        sent, confirmed = await c.report(1, status)
                except CallFailed as exc:
                    errors.append(str(exc))
                    return
                records.append((sent, confirmed, c.evse_id(1), "" if heartbeat else OICP[status]))
                due += period

        await asyncio.gather(*(loop(i, c) for i, c in enumerate(live)))
        cpu.append(cpu_seconds())
        await asyncio.to_thread(Path(cmd["out"]).write_text, json.dumps(records), "utf-8")
        return {
            "chargers": len(live),
            "sent": len(records),
            "late": late,
            "errors": len(errors),
            "error": errors[0][:300] if errors else None,
            "cpu_s": cpu[1] - cpu[0],
        }

    async def drop(self, cmd: dict[str, Any]) -> dict[str, Any]:
        dropped = 0
        for c in self.chargers:
            if c.ws is not None:
                c.abort()
                dropped += 1
        return {"dropped": dropped}

    async def reconnect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        start = float(cmd["start"])
        deadline = start + float(cmd["timeout"])
        cpu0 = cpu_seconds()
        await sleep_until(start)
        done: list[float] = []

        async def one(c: Charger) -> int:
            c.abort()  # whatever is left of the old connection
            retries = await c.bring_up(deadline)
            done.append(time.monotonic() - start)
            return retries

        results = await asyncio.gather(*(one(c) for c in self.chargers), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        done.sort()
        return {
            "chargers": len(self.chargers),
            "confirmed": len(done),
            "failed": len(failed),
            "error": str(failed[0])[:300] if failed else None,
            "retries": sum(r for r in results if isinstance(r, int)),
            "done_s": done,
            "cpu_s": cpu_seconds() - cpu0,
        }

    async def expected(self, cmd: dict[str, Any]) -> dict[str, Any]:
        return {
            "evses": {
                c.evse_id(key): OICP[c.status[key]]
                for c in self.chargers
                if c.heartbeat is not None  # booted at least once
                for key in EVSES
            }
        }

    async def quit(self, cmd: dict[str, Any]) -> dict[str, Any]:
        for c in self.chargers:
            if c.heartbeat is not None:
                c.heartbeat.cancel()
        live = [c.ws for c in self.chargers if c.ws is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.gather(*(ws.close() for ws in live), return_exceptions=True)
        for c in self.chargers:
            c.abort()
        return {"closed": len(live), "heartbeats": self.options.heartbeats}


async def serve_commands(gen: Generator) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    handlers: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
        "connect": gen.connect,
        "closed": gen.closed,
        "open": gen.open_loop,
        "drop": gen.drop,
        "reconnect": gen.reconnect,
        "expected": gen.expected,
        "quit": gen.quit,
    }
    while line := await reader.readline():
        cmd = json.loads(line)
        try:
            answer = await handlers[cmd["cmd"]](cmd)
        except Exception as exc:  # report, do not die: the runner decides
            answer = {"crash": f"{type(exc).__name__}: {exc}"[:500]}
        answer["last_error"] = gen.options.last_error
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if cmd["cmd"] == "quit":
            return


def main() -> None:
    parser = argparse.ArgumentParser(description="OCPP load generator (driven by bench.run)")
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/ocpp")
    parser.add_argument("--first", type=int, required=True, help="number of the first charger")
    parser.add_argument("--count", type=int, required=True, help="chargers in this process")
    parser.add_argument("--step", type=int, default=1, help="charger number stride")
    parser.add_argument("--password", default=None, help="send Basic auth with this password")
    parser.add_argument("--compression", choices=("deflate", "none"), default="deflate")
    parser.add_argument("--open-timeout", type=float, default=10.0)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop if installed")
    args = parser.parse_args()
    options = Options(args)
    chargers = [Charger(args.first + i * args.step, options) for i in range(args.count)]
    runner: Callable[[Any], Any] = asyncio.run
    if args.uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    runner(serve_commands(Generator(chargers, options)))


if __name__ == "__main__":
    main()
