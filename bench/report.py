"""What bench.run prints: the machine, the table of figures against the baseline and the targets."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PY,
)

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


def speed(workdir: Path) -> dict[str, float]:
    """How fast this machine is at what the bridge spends its time on, for comparing runs on
    machines of one kind (their speed differs by up to 2x): a fixed Python workload (an OCPP
    frame decoded, validated in Python, answered and encoded: µs each, median of 5) and a
    one-row SQLite commit as the bridge writes them (WAL, synchronous FULL: µs of wall time,
    median of 200) in the directory that holds the run's state databases."""
    frame = (
        '[2,"19223201","StatusNotification",{"connectorId":1,"errorCode":"NoError",'
        '"status":"Charging","timestamp":"2026-12-01T12:00:00.000Z"}]'
    )
    loops = []
    for _ in range(5):
        started = time.perf_counter()
        for n in range(20_000):
            message = json.loads(frame)
            payload = message[3]
            ok = payload["status"] in ("Available", "Charging") and payload["connectorId"] > 0
            json.dumps([3, message[1], {"ok": ok, "n": n}])
        loops.append((time.perf_counter() - started) / 20_000 * 1e6)
    path = workdir / "speed.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS c (k TEXT PRIMARY KEY, v TEXT)")
        commits = []
        for n in range(200):
            started = time.perf_counter()
            db.execute("BEGIN")
            db.execute("INSERT OR REPLACE INTO c VALUES (?, ?)", (f"k{n % 20}", "x" * 60))
            db.execute("COMMIT")
            commits.append((time.perf_counter() - started) * 1e6)
    finally:
        db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {"python_frame_us": round(statistics.median(loops), 2),
            "sqlite_commit_us": round(statistics.median(commits))}  # fmt: skip


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


# -- issue 17: targets as median and spread of the runs -----------------------------------------


def spread(values: list[float], digits: int = 0) -> str:
    """``median (min-max, n=N)``."""
    if not values:
        return "-"
    ordered = sorted(values)
    mid = statistics.median(ordered)
    return (
        f"{mid:,.{digits}f} ({ordered[0]:,.{digits}f}-{ordered[-1]:,.{digits}f}, n={len(ordered)})"
    )


def _seen(rtt: dict[str, Any] | None) -> str:
    """The hub's round trip as the bridge measured it (push durations)."""
    if not rtt or not rtt.get("n"):
        return "hub round trip as the bridge saw it: -"
    return (f"hub round trip as the bridge saw it p50 {rtt['p50_ms']:.1f} / "
            f"p99 {rtt['p99_ms']:.1f} ms")  # fmt: skip


def _verdict(met: bool | None) -> str:
    return "-" if met is None else ("PASS" if met else "FAIL")


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, verdict, note) for every target the run measured."""
    rows: list[tuple[str, str, str, str]] = []
    lane = results.get("pushlane")
    if lane:
        cpu, rate = lane["cpu_us_per_push"], lane["pushes_per_s"]
        rows.append(("push lane: bridge CPU per status push ≤ 150 µs", spread(cpu),
                     _verdict(statistics.median(cpu) <= 150),
                     f"{lane['event_loop']}, {lane['evses']:,} EVSEs, zero-latency hub; "
                     f"records per push {lane['records_per_push']}; of it in the kernel "
                     f"{spread(lane.get('kernel_us_per_push', []))} µs; "
                     f"hub simulator {spread(lane['sink_cpu_us_per_push'])} µs"))  # fmt: skip
        rows.append(("push lane: capacity ≥ 3,000 pushes/s", spread(rate),
                     _verdict(statistics.median(rate) >= 3000),
                     f"hub wrong afterwards: {lane['hub_wrong']}"))  # fmt: skip
    b = results.get("bridge", {})
    base = results.get("baseline", {})
    lat = b.get("latency")
    if lat:
        p99 = [r["to_hub"]["p99_ms"] for r in lat["runs"] if r["to_hub"]["p99_ms"] is not None]
        rate = fmt(lat.get("offered_rate_per_s"))
        ok = len(p99) == len(lat["runs"]) and all(v <= 20 for v in p99)
        rows.append((f"StatusNotification → hub p99 ≤ 20 ms at {rate}/s, every run",
                     " / ".join(f"{v:.1f}" for v in p99) + " ms", _verdict(ok),
                     f"unmatched {sum(r['unmatched'] for r in lat['runs'])}"))  # fmt: skip
        ours = [r["round_trip"]["p50_ms"] for r in lat["runs"]]
        theirs = [r["round_trip"]["p50_ms"] for r in get(base, "latency", "runs") or []]
        if ours and theirs:
            factor = statistics.median(ours) / statistics.median(theirs)
            rows.append((f"round trip p50 at {rate}/s ≤ 3x baseline",
                         f"{spread(ours, 1)} vs {spread(theirs, 1)} ms = {factor:.2f}x",
                         _verdict(factor <= 3), ""))  # fmt: skip
    prof = b.get("profile")
    if prof:
        bound = prof["hub_delay_ms"] + 5
        p99 = [r["to_hub"]["p99_ms"] for r in prof["runs"]]
        ok = all(v is not None and v <= bound for v in p99)
        rows.append(
            (
                f"realistic: hub RTT {prof['hub_delay_ms']:.0f} ms, "
                f"{fmt(prof['offered_rate_per_s'])}/s over {fmt(prof['chargers'])} chargers: "
                f"p99 to hub ≤ {bound:.0f} ms, every run",
                " / ".join(f"{v or 0:.1f}" for v in p99) + " ms",
                _verdict(ok),
                f"p50 {spread([r['to_hub']['p50_ms'] or 0 for r in prof['runs']], 1)} ms; "
                + _seen(prof.get("hub_round_trip_seen")),
            )
        )
    for size, pair in sorted((results.get("ingest") or {}).items(), key=lambda x: int(x[0])):
        ours, theirs = pair.get("bridge"), pair.get("baseline")
        if not ours or not theirs:
            continue
        ratios = [a / c for a, c in zip(ours["rates_per_s"], theirs["rates_per_s"], strict=False)
                  if c]  # fmt: skip
        rows.append((f"ingest ≥ 2.5x baseline, Basic auth, {int(size):,} chargers",
                     f"{spread(ratios, 2)}x ({spread(ours['rates_per_s'])} vs "
                     f"{spread(theirs['rates_per_s'])} /s)",
                     _verdict(statistics.median(ratios) >= 2.5 if ratios else None),
                     f"bridge CPU {fmt(ours['server_cpu_us_per_msg'])} µs/msg"))  # fmt: skip
    return rows


def targets_table(results: dict[str, Any]) -> str:
    lines = ["| target | measured: median (min-max, runs) | | note |", "|---|---|---|---|"]
    lines += [f"| {t} | {m} | **{v}** | {n} |" for t, m, v, n in targets(results)]
    return "\n".join(lines)


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    text = (f"machine: {m['cores']} cores, {m['cpu']}, {m['memory_gib']} GiB, "
            f"Python {m['python']}, kernel {m['kernel']}")  # fmt: skip
    if "speed" in m:
        text += (f"; speed: {m['speed']['python_frame_us']} µs per OCPP frame in Python, "
                 f"{m['speed']['sqlite_commit_us']} µs per SQLite commit (FULL)")  # fmt: skip
    return text


def noise_lines(results: dict[str, Any]) -> list[str]:
    """A warning per phase in which other processes used more than a tenth of a core."""
    out = []
    for phase, noise in (results.get("noise") or {}).items():
        if noise["over_tenth_core"]:
            out.append(
                f"WARNING: {phase}: other processes used more than 0.1 core in "
                f"{noise['over_tenth_core']} of {noise['windows']} one-second windows (mean "
                f"{noise['mean_cores']:.2f}, max {noise['max_cores']:.2f} cores counted per "
                f"process; machine minus this run: mean {noise['mean_rest_cores']:.2f}, max "
                f"{noise['max_rest_cores']:.2f}; {', '.join(noise['busiest']) or '-'}): its "
                "figures are not those of a quiet machine"
            )
    return out
