"""The phases of bench.run that drive chargers: closed-loop throughput, latency at a fixed rate,
idle fleet and reconnect storm.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from array import array
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import (
    HUB_DRAIN_TIMEOUT,
    PY,
    Context,
    Generators,
    Proc,
    Window,
    pct,
    quiet,
    summary_ms,
)
from bench.servers import Server, expected_statuses, run_with


async def phase_throughput(
    ctx: Context, kinds: list[str], chargers: int | None = None
) -> dict[str, dict[str, Any]]:
    """Closed loop. Every server is up at once and measured in alternating short rounds, so
    a burst of unrelated load on the machine hits both alike; round i of each compares."""
    sz = ctx.cfg.sizes
    n = chargers or sz.throughput_chargers
    runs: dict[str, tuple[Server, Generators]] = {}
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    try:
        for kind in kinds:
            runs[kind] = await run_with(ctx, kind, f"throughput-{n}", n, rate_limit=None)
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
            # The median round (and every round's rate, for the spread): a best-of-N hides
            # how much the figure moves between runs.
            middle = sorted(mine, key=lambda x: x["rate_per_s"])[len(mine) // 2]
            results[kind] = {
                "chargers": n,
                "connect": connected[kind],
                "rounds": mine,
                "rate_per_s": middle["rate_per_s"],
                "rates_per_s": [x["rate_per_s"] for x in mine],
                "server_cpu_us_per_msg": middle["server_cpu_us_per_msg"],
                "loadgen_cpu_us_per_msg": middle["loadgen_cpu_us_per_msg"],
                "cores": middle["cores"],
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
    waited = await quiet(procs, gens, limit=cfg.quiet_limit)
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


async def phase_latency(
    ctx: Context,
    kind: str,
    *,
    chargers: int | None = None,
    rate: float | None = None,
    duration: float | None = None,
    hub_delay: float = 0.0,
    tag: str = "latency",
) -> dict[str, Any]:
    """A fixed offered rate in ``cfg.repeat`` consecutive windows on one server.

    ``hub_delay``: the hub answers each push this long after it arrived (its round trip); the
    initial inserts go through before it is set. Each window is a run of its own; the top-level
    figures are those of the median run (by p99 to the hub, or round trip for the baseline).
    """
    cfg, sz = ctx.cfg, ctx.cfg.sizes
    assert ctx.hub is not None
    n = chargers or sz.latency_chargers
    offered = rate or sz.latency_rate
    seconds = duration or sz.latency_duration
    server, gens = await run_with(ctx, kind, tag, n, rate_limit=cfg.latency_rate_limit)
    try:
        up = await gens.ask({"cmd": "connect", "concurrency": 100, "timeout": 120}, timeout=180)
        settled: dict[str, Any] = {}
        if kind == "bridge":  # the first reports are inserts; let them through first
            settled = await ctx.hub.wait_for(await expected_statuses(gens), HUB_DRAIN_TIMEOUT)
            if hub_delay:
                await ctx.hub.fault({"fault": "hang", "seconds": hub_delay, "round_trip": True})
        runs = []
        for index in range(cfg.repeat):
            await asyncio.sleep(1.0)
            runs.append(await _open_window(ctx, kind, f"{tag}-{index}", server, gens,
                                           rate=offered, seconds=seconds))  # fmt: skip
            ctx.log(f"  {kind} {tag} run {index + 1}: {_run_line(runs[-1])}")
        key = ("to_hub", "p99_ms") if kind == "bridge" else ("round_trip", "p99_ms")
        ordered = sorted(runs, key=lambda r: r[key[0]][key[1]] or 0.0)
        result: dict[str, Any] = dict(ordered[len(ordered) // 2])
        result |= {"chargers": n, "connect": up, "runs": runs, "hub_delay_ms": hub_delay * 1000}
        if kind == "bridge":
            if hub_delay:  # the windows' pushes only: read before the hub answers at once again
                result["hub_round_trip_seen"] = await asyncio.to_thread(
                    hub_round_trips, server.proc.log
                )
                await ctx.hub.fault({"fault": "clear"})
            result["initial_inserts"] = settled
            result["hub_check"] = await ctx.hub.wait_for(
                await expected_statuses(gens), HUB_DRAIN_TIMEOUT
            )
            result["rate_limit_per_minute"] = cfg.latency_rate_limit
        return result
    finally:
        await gens.stop()
        await server.proc.stop()


def hub_round_trips(log: Path) -> dict[str, float | None]:
    """The hub's round trip as the bridge measured it: ``duration_ms`` of its ``push.ok``
    lines for updates (the windows' pushes; the initial inserts went before the hub's delay)."""
    durations = []
    for line in log.read_text(errors="replace").splitlines():
        if '"push.ok"' in line and '"update"' in line:
            try:
                durations.append(float(json.loads(line)["duration_ms"]) / 1000)
            except (ValueError, KeyError, TypeError):
                continue
    return summary_ms(durations)


def _run_line(run: dict[str, Any]) -> str:
    hub = run.get("to_hub") or {}
    rtt = run["round_trip"]
    text = f"round trip p50 {rtt['p50_ms'] or 0:.1f} ms"
    if hub:
        text += f", to hub p50 {hub['p50_ms'] or 0:.1f} / p99 {hub['p99_ms'] or 0:.1f} ms"
    return text + f", other processes {run['cores'].get('other', 0):.2f} cores"


async def _open_window(
    ctx: Context,
    kind: str,
    tag: str,
    server: Server,
    gens: Generators,
    *,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    cfg = ctx.cfg
    assert ctx.hub is not None
    bridge = kind == "bridge"
    first_push = await ctx.hub.requests() if bridge else 0
    start = time.monotonic() + 0.5
    end = start + seconds
    procs = {"server": server.proc} | ({"hub": ctx.hub.proc} if bridge else {})
    window = Window(procs, gens)
    outs = [str(cfg.workdir / f"sent-{kind}-{tag}-{i}.json") for i in range(len(gens.procs))]
    answers, _ = await asyncio.gather(
        gens.ask({"cmd": "open", "start": start, "end": end, "rate": rate / len(gens.procs)},
                 timeout=seconds + 60, out=outs),
        window.between(start, end),
    )  # fmt: skip
    sent: list[list[Any]] = []
    for out in outs:
        sent.extend(json.loads(await asyncio.to_thread(Path(out).read_text)))
    result: dict[str, Any] = {
        "offered_rate_per_s": rate,
        "sent": len(sent),
        "achieved_rate_per_s": len(sent) / seconds,
        "late_sends": sum(a["late"] for a in answers),
        "errors": sum(a["errors"] for a in answers),
        "error": next((a["error"] for a in answers if a["error"]), None),
        "round_trip": summary_ms([s[1] - s[0] for s in sent]),
        "cores": window.split(),
        "server_cpu_us_per_report": window.result["server"] / len(sent) * 1e6 if sent else None,
    }
    if bridge:
        await asyncio.sleep(1.0)  # the last reports' pushes
        pushes = (await ctx.hub.received())[first_push:]
        result |= match_pushes(sent, pushes)
    return result


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
