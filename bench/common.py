"""The benchmark's building blocks: sizes and settings, the processes it starts and measures
(through /proc), CPU windows and percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.servers import Hub

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
OPERATOR = "DE*ABC"
EVSES_PER_CHARGER = 2
HUB_DRAIN_TIMEOUT = 300.0
PR_SET_PDEATHSIG = 1
#: Server kinds other than bridge and baseline: a bridge on this state URL (bench/replicas.py).
STATE_URLS: dict[str, str] = {}


@dataclass(frozen=True)
class Sizes:
    throughput_chargers: int
    rounds: int  # alternating closed-loop windows per server
    warmup: float
    duration: float
    latency_chargers: int
    latency_rate: float
    latency_duration: float
    idle_sizes: tuple[int, ...]
    idle_hold: float
    ingest_sizes: tuple[int, ...] = (200, 500, 1000)  # the ingest phase: throughput at each
    profile_chargers: int = 2000  # the realistic profile: a hub with a round trip, a low rate
    profile_rate: float = 30.0
    profile_duration: float = 10.0
    profile_hub_rtt: float = 0.030
    pushlane_chargers: int = 1500  # two EVSEs each: pushes per push-lane round


QUICK = Sizes(
    throughput_chargers=500,
    rounds=3,
    warmup=1.0,
    duration=3.0,
    latency_chargers=1000,
    latency_rate=1000.0,
    latency_duration=5.0,
    idle_sizes=(1000, 2000),
    idle_hold=3.0,
)
FULL = Sizes(
    throughput_chargers=1000,
    rounds=5,
    warmup=2.0,
    duration=10.0,
    latency_chargers=1000,
    latency_rate=1000.0,
    latency_duration=30.0,
    idle_sizes=(1000, 10000),
    idle_hold=20.0,
    profile_duration=60.0,
)


@dataclass
class Config:
    sizes: Sizes
    phases: list[str]
    servers: list[str]
    generators: int
    gen_nice: int
    compression: str
    password: str | None
    auth_cost: int | None
    heartbeat_interval: int
    latency_rate_limit: float
    sets: list[tuple[str, Any]]
    bridge_tweaks: list[str]
    hub_tweaks: list[str]
    profile: str | None
    workdir: Path
    uvloop: bool
    log_level: str
    storm: str
    repeat: int = 3  # runs of the pushlane, latency and profile phases
    quiet_limit: float = 3.0  # s to wait for other processes to calm down before a round


# -- processes -------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the runner dies, so nothing is left running."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _child_setup(nice: int) -> Callable[[], None]:
    def setup() -> None:
        _die_with_parent()
        if nice:
            os.nice(nice)

    return setup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process this runner started; measured through /proc/<pid>."""

    def __init__(self, name: str, argv: list[str], log: Path, *, nice: int = 0) -> None:
        self.name = name
        self.log = log
        handle = log.open("ab")
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            preexec_fn=_child_setup(nice),  # noqa: PLW1509
        )
        handle.close()
        self.pid = self.popen.pid

    def cpu(self) -> float:
        """utime + stime of all threads, seconds."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def memory_kib(self) -> dict[str, int]:
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return values

    def alive(self) -> bool:
        return self.popen.poll() is None

    async def stop(self, timeout: float = 30.0) -> int | None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.popen.wait, timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return await asyncio.to_thread(self.popen.wait, 10)


async def wait_port(port: int, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}); see {proc.log}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout} s; see {proc.log}")


class Generators:
    """The load generator processes; every command goes to all of them."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.pids: list[int] = []
        self.logs: list[Path] = []

    async def start(self, cfg: Config, url: str, total: int, tag: str, first: int = 1) -> None:
        per = -(-total // cfg.generators)
        for k in range(cfg.generators):
            start, count = first + k * per, min(per, total - k * per)
            if count <= 0:
                break
            argv = [PY, "-m", "bench.loadgen", "--url", url, "--first", str(start),
                    "--count", str(count), "--compression", cfg.compression]  # fmt: skip
            if cfg.password is not None:
                argv += ["--password", cfg.password]
            if cfg.uvloop:
                argv.append("--uvloop")
            log = cfg.workdir / f"loadgen-{tag}-{k}.log"
            nice = cfg.gen_nice
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log.open("ab"),
                preexec_fn=_child_setup(nice),
                limit=64 * 1024 * 1024,
            )
            self.procs.append(proc)
            self.pids.append(proc.pid)
            self.logs.append(log)

    async def ask(self, cmd: dict[str, Any], timeout: float, **per_proc: list[Any]) -> list[Any]:
        async def one(i: int, proc: asyncio.subprocess.Process) -> Any:
            assert proc.stdin is not None and proc.stdout is not None
            mine = cmd | {k: v[i] for k, v in per_proc.items()}
            proc.stdin.write((json.dumps(mine) + "\n").encode())
            await proc.stdin.drain()
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"load generator {i} died; see {self.logs[i]}")
            answer = json.loads(line)
            if "crash" in answer:
                raise RuntimeError(f"load generator {i}: {cmd['cmd']}: {answer['crash']}")
            return answer

        async with asyncio.timeout(timeout):
            return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(self.procs))))

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return total

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.ask({"cmd": "quit"}, timeout=15)
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                if proc.returncode is None:
                    try:
                        await asyncio.wait_for(proc.wait(), 5)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


# -- statistics ------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary_ms(values: list[float]) -> dict[str, float | None]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 50),
        "p99_ms": pct(ms, 99),
        "max_ms": max(ms) if ms else None,
        "mean_ms": statistics.fmean(ms) if ms else None,
    }


class Window:
    """CPU seconds of each measured process (and of the machine) between two moments."""

    def __init__(self, procs: dict[str, Proc], gens: Generators | None) -> None:
        self.procs, self.gens = procs, gens
        self.start: dict[str, float] = {}
        self.result: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        values = {name: proc.cpu() for name, proc in self.procs.items()}
        if self.gens is not None:
            values["loadgen"] = self.gens.cpu()
        busy, total = machine_cpu()
        values["machine_busy"], values["machine_total"] = busy, total
        values["wall"] = time.monotonic()
        return values

    def begin(self) -> None:
        self.start = self._read()

    def end(self) -> dict[str, float]:
        now = self._read()
        self.result = {k: now[k] - self.start[k] for k in now}
        return self.result

    async def between(self, start: float, end: float) -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        self.begin()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        self.end()

    def split(self) -> dict[str, float]:
        """Each process's share in cores (1.0 = one core busy) over the window."""
        wall = self.result["wall"] or 1.0
        shares = {
            k: round(v / wall, 3)
            for k, v in self.result.items()
            if k not in ("wall", "machine_total", "machine_busy")
        }
        machine = self.result["machine_busy"] / wall
        # The rest: kernel threads and interrupts (loopback TCP, journaling) and any process
        # not started by this run (other work on the machine skews the figures).
        return shares | {"other": round(machine - sum(shares.values()), 3),
                         "machine": round(machine, 3)}  # fmt: skip


async def quiet(procs: dict[str, Proc], gens: Generators, limit: float = 15.0) -> float:
    """Wait (at most ``limit`` s) until processes outside this run use < 0.2 cores.

    The machine may be shared; a round measured while something else burns a core says more
    about that than about the server.
    """
    started = time.monotonic()
    while time.monotonic() - started < limit:
        window = Window(procs, gens)
        window.begin()
        await asyncio.sleep(0.5)
        window.end()
        if window.split()["other"] < 0.2:
            break
    return round(time.monotonic() - started, 1)


# -- context --------------------------------------------------------------------------------


@dataclass
class Context:
    cfg: Config
    hub: Hub | None = None
    results: dict[str, Any] = field(default_factory=dict)

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
