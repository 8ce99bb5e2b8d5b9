"""Fleet-scale benchmark: the bridge and the ``ocpp``-package baseline under the same load.

Starts the hub simulator, the bridge (or the baseline) and the load generators as separate
processes, all on 127.0.0.1, runs the phases below against each server in turn and prints a
markdown table (and writes JSON) with every figure also as a ratio to the baseline.

* throughput  closed loop: every charger sends StatusNotifications back to back
* latency     a fixed offered rate; StatusNotification sent -> hub simulator received its push
* fleet       RSS with idle chargers (heartbeats on), then a reconnect storm with unchanged
              statuses: time until all are confirmed and the hub pushes it caused

    python -m bench.run              # quick sizes (~3 min)
    python -m bench.run --full       # the issue's sizes (10,000 chargers)

See bench/README.md for every option.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import ctypes
import datetime as dt
import functools
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import yaml

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
    rounds: int  # alternating closed-loop windows per server; the best one counts
    warmup: float
    duration: float
    latency_chargers: int
    latency_rate: float
    latency_duration: float
    idle_sizes: tuple[int, ...]
    idle_hold: float


QUICK = Sizes(
    throughput_chargers=500,
    rounds=3,
    warmup=1.0,
    duration=4.0,
    latency_chargers=1000,
    latency_rate=1000.0,
    latency_duration=6.0,
    idle_sizes=(1000, 2000),
    idle_hold=4.0,
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


# -- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    kind: str  # bridge | baseline
    proc: Proc
    port: int
    argv: list[str]

    async def restart(self, tag: str) -> float:
        """SIGTERM, then start the same command (same config and state database) again."""
        started = time.monotonic()
        await self.proc.stop()
        self.proc = Proc(f"{self.kind}-{tag}", self.argv, self.proc.log)
        await wait_port(self.port, self.proc, timeout=120)
        return time.monotonic() - started

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


@functools.cache
def password_hash(password: str, cost: int | None) -> str:
    """One scrypt hash shared by every simulated charger (as `oicp-bridge hash-password` makes)."""
    from bridge.passwords import DEFAULT_N, hash_password

    return hash_password(password, n=DEFAULT_N if cost is None else 1 << cost)


def bridge_config(
    cfg: Config,
    hub_port: int,
    chargers: int,
    rate_limit: float | None,
    state_url: str | None = None,
) -> Path:
    from bridge.config import Settings

    port = free_port()
    state = Path(tempfile.mkdtemp(prefix="state-", dir=cfg.workdir))
    tree: dict[str, Any] = {
        "ocpp": {"host": "127.0.0.1", "port": port, "heartbeat_interval": cfg.heartbeat_interval},
        "oicp": {"base_url": f"http://127.0.0.1:{hub_port}", "operator_id": OPERATOR,
                 "operator_name": "Bench CPO"},
        "state": {"database": str(state / "bridge.db")},  # group commit and FULL sync: defaults
        "fullload": {"enabled": False},  # a fullLoad at a random moment would skew the figures
        "log": {"level": cfg.log_level, "format": "json"},
        "chargers": {
            f"CP{n:05d}": {"evses": {k: f"{OPERATOR}*E{n}*{k}"
                                     for k in range(1, EVSES_PER_CHARGER + 1)}}
            for n in range(1, chargers + 1)
        },
    }  # fmt: skip
    # Every simulated charger connects from 127.0.0.1: lift the per-address connection cap.
    tree["ocpp"]["security"] = {"max_connections_per_address": 1_000_000}
    if cfg.password is not None:  # security profile 1: Basic auth, user = charge point ID
        tree["ocpp"]["security"]["profile"] = 1
        digest = password_hash(cfg.password, cfg.auth_cost)
        for charger in tree["chargers"].values():
            charger["password_hash"] = digest
    if state_url is not None:  # PostgreSQL (bench/replicas.py makes a database per run)
        tree["state"]["url"] = state_url
    if rate_limit is not None:
        tree["delivery"] = {"rate_limit_per_minute": rate_limit}
    if "ops" in Settings.model_fields:  # the ops port: keep it, but on a free loopback port
        tree["ops"] = {"host": "127.0.0.1", "port": 0}
    for dotted, value in cfg.sets:
        set_path(tree, dotted, value)
    path = state / "bridge.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    return path


async def start_server(
    cfg: Config, kind: str, tag: str, *, hub_port: int, chargers: int, rate_limit: float | None
) -> Server:
    log = cfg.workdir / f"{kind}-{tag}.log"
    if kind == "baseline":
        port = free_port()
        argv = [PY, "-m", "bench.baseline_csms", "--port", str(port),
                "--heartbeat-interval", str(cfg.heartbeat_interval)]  # fmt: skip
        if cfg.password is not None:
            argv.append("--auth")
    else:
        state_url = STATE_URLS.get(kind)
        path = bridge_config(cfg, hub_port, chargers, rate_limit, state_url)
        port = yaml.safe_load(path.read_text())["ocpp"]["port"]
        if cfg.bridge_tweaks:
            argv = [PY, "-m", "bench.variants", *[f"--{t}" for t in cfg.bridge_tweaks], "--"]
        elif cfg.profile == "cprofile":
            argv = [PY, "-m", "cProfile", "-o", str(cfg.workdir / f"cprofile-{tag}.prof"),
                    "-m", "bridge.cli"]  # fmt: skip
        else:
            argv = [PY, "-m", "bridge.cli"]
        argv += ["run", "--config", str(path)]
    proc = Proc(f"{kind}-{tag}", argv, log)
    await wait_port(port, proc, timeout=120)
    return Server(kind, proc, port, argv)


class Hub:
    def __init__(self, cfg: Config) -> None:
        self.port = free_port()
        tweaks = [f"--{t}" for t in cfg.hub_tweaks]
        runner = ["-m", "bench.variants", *tweaks, "--"] if tweaks else ["-m", "bridge.cli"]
        self.proc = Proc("hub-sim", [PY, *runner, "hub-sim", "--port", str(self.port)],
                         cfg.workdir / "hub-sim.log")  # fmt: skip
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

    async def ready(self) -> None:
        await wait_port(self.port, self.proc, timeout=30)

    async def reset(self) -> None:
        (await self.http.post("/sim/reset")).raise_for_status()

    async def requests(self) -> int:
        return int((await self.http.get("/sim/stats")).json()["requests"])

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = (await self.http.get("/sim/stats")).json()
        return result

    async def state(self) -> dict[str, str]:
        result: dict[str, str] = (await self.http.get("/sim/state")).json()["status"]
        return result

    async def received(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = (await self.http.get("/sim/received")).json()
        return result

    async def wait_for(self, expected: dict[str, str], timeout: float) -> dict[str, Any]:
        """Wait until the hub holds exactly ``expected`` for those EVSEs; report mismatches."""
        started = time.monotonic()
        wrong: list[str] = []
        while True:
            state = await self.state()
            wrong = [e for e, s in expected.items() if state.get(e) != s]
            if not wrong or time.monotonic() - started > timeout:
                break
            await asyncio.sleep(0.25)
        return {"correct": not wrong, "mismatches": len(wrong), "example": wrong[:3],
                "waited_s": round(time.monotonic() - started, 2)}  # fmt: skip

    async def close(self) -> None:
        await self.http.aclose()
        await self.proc.stop(10)


async def expected_statuses(gens: Generators) -> dict[str, str]:
    merged: dict[str, str] = {}
    for answer in await gens.ask({"cmd": "expected"}, timeout=60):
        merged.update(answer["evses"])
    return merged


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


# -- phases ----------------------------------------------------------------------------------


@dataclass
class Context:
    cfg: Config
    hub: Hub | None = None
    results: dict[str, Any] = field(default_factory=dict)

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run_with(
    ctx: Context, kind: str, tag: str, chargers: int, rate_limit: float | None
) -> tuple[Server, Generators]:
    cfg = ctx.cfg
    assert ctx.hub is not None
    if kind.startswith("bridge"):
        await ctx.hub.reset()
    server = await start_server(cfg, kind, tag, hub_port=ctx.hub.port, chargers=chargers,
                                rate_limit=rate_limit)  # fmt: skip
    gens = Generators()
    await gens.start(cfg, server.url, chargers, tag=f"{kind}-{tag}")
    return server, gens


async def phase_throughput(ctx: Context, kinds: list[str]) -> dict[str, dict[str, Any]]:
    """Closed loop. Every server is up at once and measured in alternating short rounds, so
    a burst of unrelated load on the machine hits both and their best rounds compare."""
    sz = ctx.cfg.sizes
    n = sz.throughput_chargers
    runs: dict[str, tuple[Server, Generators]] = {}
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    try:
        for kind in kinds:
            runs[kind] = await run_with(ctx, kind, "throughput", n, rate_limit=None)
        connected = {
            kind: await gens.ask({"cmd": "connect", "concurrency": 100, "timeout": 120},
                                 timeout=180)
            for kind, (_, gens) in runs.items()
        }  # fmt: skip
        for r in range(sz.rounds):
            for kind, (server, gens) in runs.items():
                rounds[kind].append(await closed_round(ctx, kind, r, server, gens))
        results = {}
        for kind, (server, _) in runs.items():
            mine = rounds[kind]
            rtts = array("d")
            for one in mine:
                rtts.extend(one.pop("rtts"))
            # Best of N: unrelated load on the machine only ever makes a round slower.
            best = max(mine, key=lambda x: x["rate_per_s"])
            results[kind] = {
                "chargers": n,
                "connect": connected[kind],
                "rounds": mine,
                "rate_per_s": best["rate_per_s"],
                "server_cpu_us_per_msg": best["server_cpu_us_per_msg"],
                "loadgen_cpu_us_per_msg": best["loadgen_cpu_us_per_msg"],
                "cores": best["cores"],
                "errors": sum(x["errors"] for x in mine),
                "error": next((x["error"] for x in mine if x["error"]), None),
                "rtt": summary_ms(list(rtts)),
                "server_memory_kib": server.proc.memory_kib(),
            }
            if kind == "bridge":
                # The per-connection message limit would cap the rate: say so, loudly.
                log = await asyncio.to_thread(server.proc.log.read_text, "utf-8", "replace")
                throttled = log.count('"ocpp.throttled"')
                results[kind]["throttled_events"] = throttled
                if throttled:
                    ctx.log(f"WARNING: the bridge throttled {throttled} times: use more chargers "
                            "or raise ocpp.security.max_messages_per_second")  # fmt: skip
        return results
    finally:
        for server, gens in runs.values():
            await gens.stop()
            await server.proc.stop()


async def closed_round(
    ctx: Context, kind: str, index: int, server: Server, gens: Generators
) -> dict[str, Any]:
    cfg, sz = ctx.cfg, ctx.cfg.sizes
    procs = {"server": server.proc} | ({"hub": ctx.hub.proc} if ctx.hub else {})
    waited = await quiet(procs, gens)
    start = time.monotonic() + sz.warmup
    end = start + sz.duration
    window = Window(procs, gens)
    profiler = None
    if cfg.profile in ("py-spy", "py-spy-gil") and kind == "bridge" and index == 0:
        profiler = asyncio.create_task(py_spy(ctx, "throughput", server.proc, start, sz.duration))
    outs = [str(cfg.workdir / f"rtt-{kind}-{index}-{i}.bin") for i in range(len(gens.procs))]
    answers, _ = await asyncio.gather(
        gens.ask({"cmd": "closed", "start": start, "end": end}, timeout=sz.warmup
                 + sz.duration + 60, out=outs),
        window.between(start, end),
    )  # fmt: skip
    if profiler is not None:
        await profiler
    rtts = array("d")
    for out in outs:
        rtts.frombytes(await asyncio.to_thread(Path(out).read_bytes))
    confirmed = sum(a["confirmed"] for a in answers)
    cpu = window.result
    return {
        "confirmed": confirmed,
        "rate_per_s": confirmed / sz.duration,
        "server_cpu_us_per_msg": cpu["server"] / confirmed * 1e6 if confirmed else None,
        "loadgen_cpu_us_per_msg": cpu["loadgen"] / confirmed * 1e6 if confirmed else None,
        "cores": window.split(),
        "errors": sum(a["errors"] for a in answers),
        "error": next((a["error"] for a in answers if a["error"]), None),
        "waited_for_quiet_s": waited,
        "rtts": rtts,
    }


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


async def phase_latency(ctx: Context, kind: str) -> dict[str, Any]:
    cfg, sz = ctx.cfg, ctx.cfg.sizes
    assert ctx.hub is not None
    n = sz.latency_chargers
    server, gens = await run_with(ctx, kind, "latency", n, rate_limit=cfg.latency_rate_limit)
    try:
        up = await gens.ask({"cmd": "connect", "concurrency": 100, "timeout": 120}, timeout=180)
        settled: dict[str, Any] = {}
        if kind == "bridge":  # the first reports are inserts; let them through first
            settled = await ctx.hub.wait_for(await expected_statuses(gens), HUB_DRAIN_TIMEOUT)
        await asyncio.sleep(1.0)
        first_push = await ctx.hub.requests() if kind == "bridge" else 0
        start = time.monotonic() + 0.5
        end = start + sz.latency_duration
        procs = {"server": server.proc} | ({"hub": ctx.hub.proc} if kind == "bridge" else {})
        window = Window(procs, gens)
        outs = [str(cfg.workdir / f"sent-{kind}-{i}.json") for i in range(len(gens.procs))]
        per_proc_rate = sz.latency_rate / len(gens.procs)
        answers, _ = await asyncio.gather(
            gens.ask({"cmd": "open", "start": start, "end": end, "rate": per_proc_rate},
                     timeout=sz.latency_duration + 60, out=outs),
            window.between(start, end),
        )  # fmt: skip
        sent: list[list[Any]] = []
        for out in outs:
            sent.extend(json.loads(await asyncio.to_thread(Path(out).read_text)))
        result: dict[str, Any] = {
            "chargers": n,
            "connect": up,
            "offered_rate_per_s": sz.latency_rate,
            "sent": len(sent),
            "achieved_rate_per_s": len(sent) / sz.latency_duration,
            "late_sends": sum(a["late"] for a in answers),
            "errors": sum(a["errors"] for a in answers),
            "error": next((a["error"] for a in answers if a["error"]), None),
            "round_trip": summary_ms([s[1] - s[0] for s in sent]),
            "cores": window.split(),
        }
        if kind == "bridge":
            result["initial_inserts"] = settled
            result["hub_check"] = await ctx.hub.wait_for(
                await expected_statuses(gens), HUB_DRAIN_TIMEOUT
            )
            pushes = (await ctx.hub.received())[first_push:]
            result |= match_pushes(sent, pushes)
            result["rate_limit_per_minute"] = cfg.latency_rate_limit
        return result
    finally:
        await gens.stop()
        await server.proc.stop()


def match_pushes(sent: list[list[Any]], pushes: list[dict[str, Any]]) -> dict[str, Any]:
    """For each StatusNotification: the first accepted push of its EVSE and status after it."""
    arrivals: dict[str, list[tuple[float, str]]] = defaultdict(list)
    refused = 0
    for push in pushes:
        if push["endpoint"] != "status":
            continue
        if push["code"] != "000":
            refused += 1
            continue
        for evse_id, status in push["records"]:
            arrivals[evse_id].append((push["time"], status))
    latencies: list[float] = []
    slowest: list[tuple[float, float, str, str]] = []
    unmatched = 0
    for t_sent, _, evse_id, status in sent:
        seen = arrivals.get(evse_id, [])
        i = bisect.bisect_left(seen, (t_sent, ""))
        while i < len(seen) and seen[i][1] != status:
            i += 1
        if i < len(seen):
            latencies.append(seen[i][0] - t_sent)
            slowest.append((seen[i][0] - t_sent, t_sent, evse_id, status))
        else:
            unmatched += 1
    slowest.sort(reverse=True)
    return {
        "to_hub": summary_ms(latencies),
        # the worst cases, to tell a stall (many at one moment) from a single late EVSE
        "to_hub_slowest": [
            {"ms": round(lat * 1000, 1), "sent_at": round(t, 3), "evse_id": e, "status": st}
            for lat, t, e, st in slowest[:10]
        ],
        "unmatched": unmatched,  # coalesced (a newer status went instead) or never pushed
        "pushes": len(pushes),
        "pushes_refused": refused,
    }


async def phase_fleet(ctx: Context, kind: str) -> dict[str, Any]:
    cfg, sz = ctx.cfg, ctx.cfg.sizes
    assert ctx.hub is not None
    biggest = max(sz.idle_sizes)
    server, gens = await run_with(ctx, kind, "fleet", biggest, rate_limit=cfg.latency_rate_limit)
    result: dict[str, Any] = {"idle": []}
    try:
        await asyncio.sleep(2.0)
        result["empty_memory_kib"] = empty = server.proc.memory_kib()
        for size in sz.idle_sizes:
            ctx.log(f"  {kind}: connecting {size} chargers")
            per = [size // len(gens.procs) + (i < size % len(gens.procs))
                   for i in range(len(gens.procs))]  # fmt: skip
            before = time.monotonic()
            up = await gens.ask({"cmd": "connect", "concurrency": 100, "timeout": 600},
                                timeout=700, count=per)  # fmt: skip
            step: dict[str, Any] = {"chargers": size, "connect": up,
                                    "connect_s": round(time.monotonic() - before, 2)}  # fmt: skip
            if kind == "bridge":
                step["hub_check"] = await ctx.hub.wait_for(
                    await expected_statuses(gens), HUB_DRAIN_TIMEOUT
                )
            procs = {"server": server.proc} | ({"hub": ctx.hub.proc} if kind == "bridge" else {})
            window = Window(procs, gens)
            start = time.monotonic() + 1.0
            await window.between(start, start + sz.idle_hold)
            memory = server.proc.memory_kib()
            step |= {
                "memory_kib": memory,
                "kib_per_charger": memory["VmHWM"] / size,
                "kib_per_charger_over_empty": (memory["VmRSS"] - empty["VmRSS"]) / size,
                "idle_cores": window.split(),
            }
            result["idle"].append(step)
        result["storm"] = await storm(ctx, kind, server, gens, biggest)
        result["memory_after_storm_kib"] = server.proc.memory_kib()
        return result
    finally:
        await gens.stop()
        await server.proc.stop()


async def storm(
    ctx: Context, kind: str, server: Server, gens: Generators, chargers: int
) -> dict[str, Any]:
    """Every charger drops off at once and reconnects with the same statuses.

    ``blip``: the TCP connections are aborted (no close frame) and the server stays up.
    ``deploy``: the server is stopped (SIGTERM) and started again on the same state database.
    """
    assert ctx.hub is not None
    bridge = kind == "bridge"
    before = await ctx.hub.requests() if bridge else 0
    ctx.log(f"  {kind}: reconnect storm ({ctx.cfg.storm}) of {chargers} chargers")
    restart_s = None
    if ctx.cfg.storm == "deploy":
        restart_s = await server.restart("fleet-restarted")
    else:
        await gens.ask({"cmd": "drop"}, timeout=60)
        await asyncio.sleep(2.0)  # the server notices the dead connections
    start = time.monotonic() + 0.5
    procs = {"server": server.proc} | ({"hub": ctx.hub.proc} if bridge else {})
    window = Window(procs, gens)
    window.begin()
    profiler = None
    if ctx.cfg.profile in ("py-spy", "py-spy-gil") and bridge:
        profiler = asyncio.create_task(py_spy(ctx, "storm", server.proc, start, 15))
    answers = await gens.ask({"cmd": "reconnect", "start": start, "timeout": 300}, timeout=400)
    window.end()
    if profiler is not None:
        await profiler
    done = sorted(t for a in answers for t in a["done_s"])
    result: dict[str, Any] = {
        "kind": ctx.cfg.storm,
        "restart_s": restart_s,
        "chargers": chargers,
        "confirmed": len(done),
        "failed": sum(a["failed"] for a in answers),
        "error": next((a["error"] for a in answers if a["error"]), None),
        "retries": sum(a["retries"] for a in answers),
        "all_confirmed_s": done[-1] if len(done) == chargers else None,
        "p50_confirmed_s": pct(done, 50),
        "p99_confirmed_s": pct(done, 99),
        "cores": window.split(),
        "server_cpu_s": window.result["server"],
    }
    if bridge:
        await asyncio.sleep(3.0)  # anything the storm queued would be pushed by now
        result["hub_check"] = await ctx.hub.wait_for(await expected_statuses(gens), 10)
        result["hub_pushes"] = await ctx.hub.requests() - before
    return result


async def py_spy(ctx: Context, name: str, proc: Proc, start: float, duration: float) -> None:
    out = ctx.cfg.workdir / f"py-spy-{name}.txt"
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    spy = await asyncio.create_subprocess_exec(
        str(Path(PY).with_name("py-spy")), "record", "--pid", str(proc.pid),
        "--duration", str(int(duration)), "--rate", "250", "--format", "raw",
        "--nonblocking", "--output", str(out),
        *(["--gil"] if ctx.cfg.profile == "py-spy-gil" else []),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.wait_for(spy.wait(), duration + 30)
    ctx.results.setdefault("profile", {})[name] = str(out)


# -- report ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    versions = {}
    for name in ("websockets", "ocpp", "fastjsonschema", "httpx", "aiohttp", "structlog"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[name] = version(name)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
    }


def check_monotonic_shared() -> bool:
    """CLOCK_MONOTONIC is system-wide on Linux; verify a child's reading falls between ours."""
    before = time.monotonic()
    child = subprocess.run([PY, "-c", "import time; print(time.monotonic())"],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
    after = time.monotonic()
    return before <= float(child.stdout) <= after


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(ours: Any, base: Any) -> str:
    if not isinstance(ours, int | float) or not isinstance(base, int | float) or not base:
        return "-"
    return f"{ours / base:.2f}x"


def get(tree: dict[str, Any], *path: Any) -> Any:
    node: Any = tree
    for part in path:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            node = node[part]
        else:
            return None
    return node


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("**met**" if met else "**not met**")


def table(results: dict[str, Any]) -> str:
    b = results.get("bridge", {})
    base = results.get("baseline", {})
    rows: list[tuple[str, Any, Any, int, str, str]] = []

    def row(label: str, path: tuple[Any, ...], digits: int = 0, *, target: str = "",
            met: bool | None = None, scale: float = 1.0) -> None:  # fmt: skip
        ours, theirs = get(b, *path), get(base, *path)
        if scale != 1.0:
            ours = ours * scale if isinstance(ours, int | float) else ours
            theirs = theirs * scale if isinstance(theirs, int | float) else theirs
        rows.append((label, ours, theirs, digits, target, verdict(met) if target else ""))

    rate_b = get(b, "throughput", "rate_per_s")
    rate_0 = get(base, "throughput", "rate_per_s")
    n_tp = get(b, "throughput", "chargers") or get(base, "throughput", "chargers")
    row(f"StatusNotification round trips/s, closed loop, {fmt(n_tp)} chargers",
        ("throughput", "rate_per_s"), target="≥ 1.5x baseline",
        met=None if not (rate_b and rate_0) else rate_b >= 1.5 * rate_0)  # fmt: skip
    row("server CPU per StatusNotification (µs)", ("throughput", "server_cpu_us_per_msg"))
    row("load generator CPU per StatusNotification (µs)",
        ("throughput", "loadgen_cpu_us_per_msg"))  # fmt: skip
    row("round trip p50 / p99 under that load (ms)", ("throughput", "rtt", "p50_ms"), 1)
    rows[-1] = (rows[-1][0],
                _pair(get(b, "throughput", "rtt")), _pair(get(base, "throughput", "rtt")),
                1, "", "")  # fmt: skip
    rate = get(b, "latency", "offered_rate_per_s") or get(base, "latency", "offered_rate_per_s")
    p99_hub = get(b, "latency", "to_hub", "p99_ms")
    row(f"StatusNotification → hub receipt p50 at {fmt(rate)}/s (ms)",
        ("latency", "to_hub", "p50_ms"), 1)  # fmt: skip
    row(f"StatusNotification → hub receipt p99 at {fmt(rate)}/s (ms)",
        ("latency", "to_hub", "p99_ms"), 1, target="≤ 20 ms",
        met=None if p99_hub is None else p99_hub <= 20)  # fmt: skip
    row(f"StatusNotification → hub receipt max at {fmt(rate)}/s (ms)",
        ("latency", "to_hub", "max_ms"), 1)  # fmt: skip
    row("StatusNotifications not matched to a push", ("latency", "unmatched"))
    row(f"round trip p50 at {fmt(rate)}/s (ms)", ("latency", "round_trip", "p50_ms"), 1)
    row(f"round trip p99 at {fmt(rate)}/s (ms)", ("latency", "round_trip", "p99_ms"), 1)
    row(f"round trip max at {fmt(rate)}/s (ms)", ("latency", "round_trip", "max_ms"), 1)
    for i, step in enumerate(get(b, "fleet", "idle") or get(base, "fleet", "idle") or []):
        n = step["chargers"]
        per = get(b, "fleet", "idle", i, "kib_per_charger")
        big = n >= 10000
        row(f"peak RSS, {fmt(n)} idle chargers (MiB)", ("fleet", "idle", i, "memory_kib", "VmHWM"),
            1, scale=1 / 1024)  # fmt: skip
        row(f"peak RSS per charger, {fmt(n)} chargers (KiB)",
            ("fleet", "idle", i, "kib_per_charger"), 1,
            target="≤ 40 KiB at 10,000" if big else "",
            met=None if per is None or not big else per <= 40)  # fmt: skip
        row(f"RSS per charger above the empty server, {fmt(n)} (KiB)",
            ("fleet", "idle", i, "kib_per_charger_over_empty"), 1)  # fmt: skip
        row(f"server CPU while {fmt(n)} chargers idle (% of a core)",
            ("fleet", "idle", i, "idle_cores", "server"), 1, scale=100)  # fmt: skip
    n_storm = get(b, "fleet", "storm", "chargers") or get(base, "fleet", "storm", "chargers")
    t_storm = get(b, "fleet", "storm", "all_confirmed_s")
    pushes = get(b, "fleet", "storm", "hub_pushes")
    row(f"reconnect storm ({get(b, 'fleet', 'storm', 'kind') or 'blip'}), "
        f"{fmt(n_storm)} chargers: all confirmed after (s)",
        ("fleet", "storm", "all_confirmed_s"), 1, target="< 60 s",
        met=None if t_storm is None else t_storm < 60)  # fmt: skip
    row("reconnect storm: p50 charger confirmed after (s)",
        ("fleet", "storm", "p50_confirmed_s"), 1)  # fmt: skip
    row("reconnect storm: connection retries", ("fleet", "storm", "retries"))
    row("reconnect storm: server stop + start (s)", ("fleet", "storm", "restart_s"), 1)
    row("reconnect storm: hub pushes caused", ("fleet", "storm", "hub_pushes"), target="0",
        met=None if pushes is None else pushes == 0)  # fmt: skip
    row("hub state correct after each phase", ("hub_correct",))

    lines = ["| metric | bridge | baseline | bridge / baseline | target | |",
             "|---|---:|---:|---:|---|---|"]  # fmt: skip
    for label, ours, theirs, digits, target, met in rows:
        if ours is None and theirs is None:
            continue
        lines.append(f"| {label} | {fmt(ours, digits)} | {fmt(theirs, digits)} | "
                     f"{ratio(ours, theirs)} | {target} | {met} |")  # fmt: skip
    return "\n".join(lines)


def _pair(rtt: dict[str, Any] | None) -> str | None:
    if not rtt or rtt.get("p50_ms") is None:
        return None
    return f"{rtt['p50_ms']:.1f} / {rtt['p99_ms']:.1f}"


def hub_correct(results: dict[str, Any]) -> bool | None:
    checks = [
        get(results, "bridge", "latency", "hub_check", "correct"),
        *[s.get("hub_check", {}).get("correct") for s in get(results, "bridge", "fleet", "idle")
          or []],
        get(results, "bridge", "fleet", "storm", "hub_check", "correct"),
    ]  # fmt: skip
    known = [c for c in checks if c is not None]
    return all(known) if known else None


# -- main ------------------------------------------------------------------------------------


PHASES = {"latency": phase_latency, "fleet": phase_fleet}


async def run(cfg: Config) -> dict[str, Any]:
    ctx = Context(cfg)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "monotonic_clock_shared": check_monotonic_shared(),
        "settings": asdict(cfg) | {"workdir": str(cfg.workdir)},
    }
    ctx.results = results
    ctx.hub = Hub(cfg)
    try:
        await ctx.hub.ready()
        if "throughput" in cfg.phases:
            ctx.log(f"throughput: {', '.join(cfg.servers)} in {cfg.sizes.rounds} rounds")
            started = time.monotonic()
            for kind, outcome in (await phase_throughput(ctx, cfg.servers)).items():
                outcome["phase_s"] = round(time.monotonic() - started, 1)
                results.setdefault(kind, {})["throughput"] = outcome
        if "attack" in cfg.phases:  # the bridge alone, against its own two instances
            from bench.attack import AttackSizes, run_attack
            from bench.attack import table as attack_table

            ctx.log("attack: bridge")
            results["attack"] = await run_attack(cfg.workdir, ctx.hub, AttackSizes(), ctx.log)
            print(attack_table(results["attack"]))
        if "proxy" in cfg.phases:  # its own servers: the CSMS, a proxying and a csms-mode bridge
            from bench.proxy import phase_proxy

            ctx.log("proxy: direct vs relayed, side by side")
            started = time.monotonic()
            results["proxy"] = await phase_proxy(ctx)
            results["proxy"]["phase_s"] = round(time.monotonic() - started, 1)
        for phase in cfg.phases:
            if phase in ("throughput", "attack", "proxy"):
                continue
            for kind in cfg.servers:
                ctx.log(f"{phase}: {kind}")
                started = time.monotonic()
                outcome = await PHASES[phase](ctx, kind)
                outcome["phase_s"] = round(time.monotonic() - started, 1)
                results.setdefault(kind, {})[phase] = outcome
                ctx.log(f"{phase}: {kind} done in {outcome['phase_s']} s")
        results.setdefault("bridge", {})["hub_correct"] = hub_correct(results)
        results["hub_stats"] = await ctx.hub.stats()
    finally:
        await ctx.hub.close()
    return results


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="quick sizes (default, ~3 min)")
    size.add_argument("--full", action="store_true", help="the issue's sizes (10,000 chargers)")
    p.add_argument(
        "--phases",
        default="throughput,latency,fleet",
        help="comma-separated subset of throughput,latency,fleet,attack,proxy (attack: hostile "
        "load, see bench/attack.py; proxy: the relay to a CSMS against the CSMS directly; neither "
        "is in the default set)",
    )
    p.add_argument("--servers", default="bridge,baseline", help="bridge, baseline or both")
    p.add_argument("--throughput-chargers", type=int)
    p.add_argument("--duration", type=float, help="throughput window (s)")
    p.add_argument("--rounds", type=int, help="throughput windows per server")
    p.add_argument("--latency-chargers", type=int)
    p.add_argument("--latency-rate", type=float, help="offered StatusNotifications/s")
    p.add_argument("--latency-duration", type=float)
    p.add_argument("--idle-sizes", help="comma-separated charger counts, e.g. 1000,10000")
    p.add_argument("--idle-hold", type=float, help="seconds to hold each idle size")
    p.add_argument("--generators", type=int, default=2, help="load generator processes")
    p.add_argument("--gen-nice", type=int, default=5, help="nice value of the load generators")
    p.add_argument(
        "--compression",
        choices=("deflate", "none"),
        default="deflate",
        help="whether chargers offer permessage-deflate",
    )
    p.add_argument(
        "--auth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="security profile 1: chargers send Basic auth (user = charge point ID); "
        "--no-auth: profile 0, no credentials",
    )
    p.add_argument(
        "--auth-cost",
        type=int,
        metavar="LOG2N",
        help="with Basic auth: scrypt cost of the password hash as log2(N) (default: the bridge's, "
        "as `oicp-bridge hash-password` makes; 14 = hashes made before P9)",
    )
    p.add_argument("--heartbeat-interval", type=int, default=60)
    p.add_argument(
        "--latency-rate-limit",
        type=float,
        default=600_000,
        help="delivery.rate_limit_per_minute for the latency and fleet phases",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="override a bridge setting, e.g. state.group_commit_ms=5",
    )
    p.add_argument(
        "--bridge-tweak",
        action="append",
        default=[],
        metavar="NAME",
        help="run the bridge through bench.variants with this tweak (experiments)",
    )
    p.add_argument(
        "--hub-tweak",
        action="append",
        default=[],
        metavar="NAME",
        help="run the hub simulator through bench.variants with this tweak (e.g. gc-report)",
    )
    p.add_argument(
        "--profile",
        choices=("py-spy", "py-spy-gil", "cprofile"),
        help="profile the bridge (perturbs the figures)",
    )
    p.add_argument("--log-level", default="INFO", help="bridge log level (production: INFO)")
    p.add_argument(
        "--storm",
        choices=("blip", "deploy"),
        default="blip",
        help="reconnect storm after a network blip, or after a restart of the server",
    )
    p.add_argument("--no-uvloop", action="store_true", help="load generators on plain asyncio")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--markdown", type=Path, help="write the table here")
    p.add_argument("--workdir", type=Path, help="keep logs and state here (default: temp dir)")
    a = p.parse_args(argv)
    sizes = FULL if a.full else QUICK
    overrides = {
        "throughput_chargers": a.throughput_chargers,
        "duration": a.duration,
        "rounds": a.rounds,
        "latency_chargers": a.latency_chargers,
        "latency_rate": a.latency_rate,
        "latency_duration": a.latency_duration,
        "idle_sizes": tuple(int(x) for x in a.idle_sizes.split(",")) if a.idle_sizes else None,
        "idle_hold": a.idle_hold,
    }
    sizes = replace(sizes, **{k: v for k, v in overrides.items() if v is not None})
    sets = []
    for item in a.set:
        key, _, value = item.partition("=")
        sets.append((key, yaml.safe_load(value)))
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    return Config(
        sizes=sizes,
        phases=[x for x in a.phases.split(",") if x],
        servers=[x for x in a.servers.split(",") if x],
        generators=a.generators,
        gen_nice=a.gen_nice,
        compression=a.compression,
        # 20 characters: OCPP wants 16-40 random ones (shorter ones are logged as weak).
        password="bench-7f3a9c2e51d08b" if a.auth else None,
        auth_cost=a.auth_cost,
        heartbeat_interval=a.heartbeat_interval,
        latency_rate_limit=a.latency_rate_limit,
        sets=sets,
        bridge_tweaks=a.bridge_tweak,
        hub_tweaks=a.hub_tweak,
        profile=a.profile,
        workdir=workdir.resolve(),
        uvloop=not a.no_uvloop,
        log_level=a.log_level,
        storm=a.storm,
    ), a


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    print(f"bench: logs and state in {cfg.workdir}", file=sys.stderr)
    started = time.monotonic()
    results = asyncio.run(run(cfg))
    results["total_s"] = round(time.monotonic() - started, 1)
    text = table(results) if set(cfg.phases) - {"proxy"} else ""
    if "proxy" in results:
        from bench.proxy import proxy_table

        text = "\n\n".join(t for t in (text, proxy_table(results["proxy"])) if t)
    print(text)
    out = args.json or cfg.workdir / "results.json"
    out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    print(f"\nresults: {out}  ({results['total_s']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
