"""Fleet-scale benchmark: the bridge and the ``ocpp``-package baseline under the same load.

Starts the hub simulator, the bridge (or the baseline) and the load generators as separate
processes, all on 127.0.0.1, runs the phases below and prints the machine, a table of the
targets (median and spread of the runs, PASS/FAIL), warnings for windows in which other
processes used the CPU, and the table of every figure as a ratio to the baseline.

* pushlane    the bridge's push lane alone against a zero-latency hub (bench/pushlane.py)
* ingest      closed loop at each of --ingest-sizes chargers, bridge and baseline alternating
* throughput  the same at one size (--throughput-chargers)
* latency     a fixed offered rate; StatusNotification sent -> hub simulator received its push
* profile     a realistic load: few reports per second over many chargers, a hub round trip
* fleet       RSS with idle chargers (heartbeats on), then a reconnect storm with unchanged
              statuses: time until all are confirmed and the hub pushes it caused

    python -m bench.run              # quick sizes, every default phase (~5 min)
    python -m bench.run --full       # the issue's sizes (10,000 chargers)

The modules: bench/common.py (sizes, processes, CPU windows), bench/servers.py (bridge,
baseline, hub), bench/phases.py, bench/pushlane.py, bench/noise.py, bench/report.py.
See bench/README.md for every option.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import resource
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

# Re-exported: bench.attack, bench.proxy, bench.replicas and the tests import them from here.
from bench.common import (  # noqa: F401
    FULL,
    OPERATOR,
    PY,
    QUICK,
    STATE_URLS,
    Config,
    Context,
    Generators,
    Proc,
    Window,
    free_port,
    machine_cpu,
    quiet,
    summary_ms,
    wait_port,
)
from bench.noise import NoiseMonitor
from bench.phases import (  # noqa: F401
    match_pushes,
    phase_fleet,
    phase_latency,
    phase_throughput,
    py_spy,
)
from bench.pushlane import phase_pushlane
from bench.report import (  # noqa: F401
    check_monotonic_shared,
    fmt,
    header,
    hub_correct,
    machine,
    noise_lines,
    speed,
    table,
    targets,
    targets_table,
)
from bench.servers import Hub, bridge_config  # noqa: F401


async def _profile(ctx: Context, kind: str) -> dict[str, Any]:
    sz = ctx.cfg.sizes
    return await phase_latency(
        ctx, kind, chargers=sz.profile_chargers, rate=sz.profile_rate,
        duration=sz.profile_duration, hub_delay=sz.profile_hub_rtt, tag="profile",
    )  # fmt: skip


PHASES = {"latency": phase_latency, "profile": _profile, "fleet": phase_fleet}
BRIDGE_ONLY = {"profile"}


async def run(cfg: Config) -> dict[str, Any]:
    ctx = Context(cfg)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine() | {"speed": speed(cfg.workdir)},
        "monotonic_clock_shared": check_monotonic_shared(),
        "settings": asdict(cfg) | {"workdir": str(cfg.workdir)},
        "noise": {},
    }
    ctx.results = results
    noise = NoiseMonitor()
    noise.start()
    ctx.hub = Hub(cfg)

    def done(phase: str, started: float) -> float:
        results["noise"][phase] = noise.between(started, time.monotonic())
        seconds = round(time.monotonic() - started, 1)
        ctx.log(f"{phase} done in {seconds} s")
        return seconds

    try:
        await ctx.hub.ready()
        if "pushlane" in cfg.phases:
            ctx.log(f"pushlane: {cfg.repeat} runs")
            started = time.monotonic()
            results["pushlane"] = await phase_pushlane(
                cfg.workdir, cfg.repeat, cfg.sizes.pushlane_chargers
            )
            results["pushlane"]["phase_s"] = done("pushlane", started)
        if "ingest" in cfg.phases:
            results["ingest"] = {}
            for size in cfg.sizes.ingest_sizes:
                ctx.log(f"ingest: {', '.join(cfg.servers)}, {size} chargers, "
                        f"{cfg.sizes.rounds} rounds")  # fmt: skip
                started = time.monotonic()
                outcome = await phase_throughput(ctx, cfg.servers, size)
                results["ingest"][str(size)] = outcome
                done(f"ingest {size}", started)
            middle = str(sorted(cfg.sizes.ingest_sizes)[len(cfg.sizes.ingest_sizes) // 2])
            for kind, outcome in results["ingest"][middle].items():
                results.setdefault(kind, {}).setdefault("throughput", outcome)
        if "throughput" in cfg.phases:
            ctx.log(f"throughput: {', '.join(cfg.servers)} in {cfg.sizes.rounds} rounds")
            started = time.monotonic()
            for kind, outcome in (await phase_throughput(ctx, cfg.servers)).items():
                outcome["phase_s"] = round(time.monotonic() - started, 1)
                results.setdefault(kind, {})["throughput"] = outcome
            done("throughput", started)
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
            results["proxy"]["phase_s"] = done("proxy", started)
        for phase in cfg.phases:
            if phase not in PHASES:
                continue
            for kind in cfg.servers:
                if phase in BRIDGE_ONLY and kind != "bridge":
                    continue
                ctx.log(f"{phase}: {kind}")
                started = time.monotonic()
                outcome = await PHASES[phase](ctx, kind)
                results.setdefault(kind, {})[phase] = outcome
                outcome["phase_s"] = done(f"{phase} {kind}", started)
        results.setdefault("bridge", {})["hub_correct"] = hub_correct(results)
        results["hub_stats"] = await ctx.hub.stats()
    finally:
        await noise.stop()
        await ctx.hub.close()
    return results


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="quick sizes (default, ~3 min)")
    size.add_argument("--full", action="store_true", help="the issue's sizes (10,000 chargers)")
    p.add_argument(
        "--phases",
        default="pushlane,ingest,latency,profile,fleet",
        help="comma-separated subset of pushlane,ingest,throughput,latency,profile,fleet,attack,"
        "proxy (throughput: ingest at one size; attack: hostile load, see bench/attack.py; proxy: "
        "the relay to a CSMS against the CSMS directly; these three are not in the default set)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of the pushlane, latency and profile phases (median and spread)",
    )
    p.add_argument("--ingest-sizes", help="comma-separated charger counts of the ingest phase")
    p.add_argument(
        "--quiet-limit",
        type=float,
        default=3.0,
        help="s to wait before a throughput round for other processes to calm down",
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
        "ingest_sizes": tuple(int(x) for x in a.ingest_sizes.split(","))
        if a.ingest_sizes
        else None,
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
        repeat=a.repeat,
        quiet_limit=a.quiet_limit,
    ), a


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    print(f"bench: logs and state in {cfg.workdir}", file=sys.stderr)
    started = time.monotonic()
    results = asyncio.run(run(cfg))
    results["total_s"] = round(time.monotonic() - started, 1)
    text = table(results) if set(cfg.phases) - {"proxy", "pushlane", "profile"} else ""
    if "proxy" in results:
        from bench.proxy import proxy_table

        text = "\n\n".join(t for t in (text, proxy_table(results["proxy"])) if t)
    if targets(results):
        text = "\n\n".join(t for t in (targets_table(results), text) if t)
    text = "\n".join([header(results), *noise_lines(results), "", text])
    print(text)
    out = args.json or cfg.workdir / "results.json"
    out.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    if args.markdown:
        args.markdown.write_text(text + "\n", encoding="utf-8")
    print(f"\nresults: {out}  ({results['total_s']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
