"""The servers under test (the bridge, the ``ocpp``-package baseline) and the hub simulator."""

from __future__ import annotations

import asyncio
import functools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.common import (
    EVSES_PER_CHARGER,
    OPERATOR,
    PY,
    STATE_URLS,
    Config,
    Context,
    Generators,
    Proc,
    free_port,
    wait_port,
)

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
    # The closed loop at 200 chargers asks each for ~30 messages/s: above the per-connection
    # throttle (20/s), which would then set the rate. The baseline has none; capacity is measured.
    tree["ocpp"]["security"] |= {"max_messages_per_second": 1000, "message_burst": 1000}
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

    async def fault(self, spec: dict[str, Any]) -> None:
        (await self.http.post("/sim/faults", json=spec)).raise_for_status()

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
