"""The ``proxy`` phase: what relaying through the bridge costs, side by side with direct traffic.

The CSMS is ``bench.baseline_csms`` (the ``ocpp`` package's documented central system). Three
sets of simulated chargers run at once:

* **direct**: connected to the CSMS itself (numbers from ``DIRECT_FIRST`` on);
* **proxied**: connected to a bridge in ``proxy`` mode in front of that CSMS (Basic auth checked
  by the bridge and passed through to the CSMS, which checks the user name, as with ``--auth``);
* **csms-mode**: the same number connected to a second bridge in ``csms`` mode (memory only).

Measured, in rounds that alternate direct and proxied so unrelated load on the machine hits both:

* **added latency**: round trips at a fixed offered rate (``latency_rate``, 1,000/s), Heartbeats
  (pure relay) and StatusNotifications (tapped: stored before the CSMS's answer goes back);
  added = proxied - direct, per percentile, per round;
* **throughput**: closed loop, StatusNotifications back to back; proxied / direct;
* **memory**: RSS per proxied charger above the empty bridge, against a charger of the bridge in
  ``csms`` mode and against one connected to the CSMS directly.

Every round, the CPU split of its window and the machine are in the JSON; the table gives the
median of the rounds and their range.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.run import (
    PY,
    Context,
    Generators,
    Proc,
    Window,
    bridge_config,
    fmt,
    free_port,
    py_spy,
    quiet,
    summary_ms,
    wait_port,
)

DIRECT_FIRST = 100_001  # charger numbers of the direct set (CP100001, …)
SETTLE = 2.0  # s after connecting before memory is read


async def phase_proxy(ctx: Context) -> dict[str, Any]:
    cfg, sz = ctx.cfg, ctx.cfg.sizes
    assert ctx.hub is not None
    n = max(sz.latency_chargers, sz.throughput_chargers)
    csms_port = free_port()
    argv = [PY, "-m", "bench.baseline_csms", "--port", str(csms_port),
            "--heartbeat-interval", str(cfg.heartbeat_interval)]  # fmt: skip
    if cfg.password is not None:
        argv.append("--auth")
    csms = Proc("csms", argv, cfg.workdir / "proxy-csms.log")
    bridges: dict[str, Proc] = {}
    sets: dict[str, Generators] = {}
    result: dict[str, Any] = {"chargers": n}
    try:
        await wait_port(csms_port, csms, timeout=60)
        upstream = f"ws://127.0.0.1:{csms_port}/ocpp/{{charge_point_id}}"
        urls = {}
        for mode in ("proxy", "csms"):
            # The production push rate limit: the direct CSMS pushes nothing, and the relay's
            # cost is measured as deployed (changes coalesce per EVSE under the limit).
            path = bridge_config(cfg, ctx.hub.port, n, rate_limit=None)
            tree = yaml.safe_load(path.read_text())
            tree["ocpp"]["mode"] = mode
            tree["ocpp"]["upstream"] = {"url": upstream}
            if mode == "csms":  # own EvseIDs: both bridges push to the one hub simulator
                for charger in tree["chargers"].values():
                    charger["evses"] = {k: e.replace("*E", "*EM", 1)
                                        for k, e in charger["evses"].items()}  # fmt: skip
            path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
            port = tree["ocpp"]["port"]
            runner = ["-m", "bridge.cli"]
            if cfg.bridge_tweaks and mode == "proxy":  # e.g. gc-report, slow-callbacks=5
                runner = ["-m", "bench.variants", *[f"--{t}" for t in cfg.bridge_tweaks], "--"]
            bridges[mode] = Proc(f"bridge-{mode}", [PY, *runner, "run", "--config", str(path)],
                                 cfg.workdir / f"proxy-bridge-{mode}.log")  # fmt: skip
            await wait_port(port, bridges[mode], timeout=120)
            urls[mode] = f"ws://127.0.0.1:{port}/ocpp"
        await asyncio.sleep(SETTLE)
        measured = {"bridge-proxy": bridges["proxy"], "bridge-csms": bridges["csms"], "csms": csms}
        empty = {name: p.memory_kib() for name, p in measured.items()}

        # -- memory: connect the three sets one after the other ---------------------------------
        memory: dict[str, Any] = {"empty_kib": empty}
        plan = [("csms-mode", urls["csms"], 1), ("proxied", urls["proxy"], 1),
                ("direct", f"ws://127.0.0.1:{csms_port}/ocpp", DIRECT_FIRST)]  # fmt: skip
        for name, url, first in plan:
            gens = sets[name] = Generators()
            await gens.start(cfg, url, n, tag=f"proxy-{name}", first=first)
            up = await gens.ask({"cmd": "connect", "concurrency": 100, "timeout": 180},
                                timeout=240)  # fmt: skip
            await asyncio.sleep(SETTLE)
            memory[f"after_{name}"] = {
                "connected": sum(a["connected"] for a in up),
                "failed": sum(a["failed"] for a in up),
                "error": next((a["error"] for a in up if a["error"]), None),
                "kib": {k: p.memory_kib() for k, p in measured.items()},
            }
        await asyncio.sleep(sz.idle_hold)  # heartbeats on, all three sets connected
        memory["held_kib"] = {k: p.memory_kib() for k, p in measured.items()}
        result["memory"] = _memory(memory, n)

        # -- rounds ---------------------------------------------------------------------------
        procs = {"bridge": bridges["proxy"], "csms": csms, "hub": ctx.hub.proc}
        metrics = _MetricsReader(bridges["proxy"])
        reference = {"bridge": bridges["csms"], "csms": csms, "hub": ctx.hub.proc}
        rounds: list[dict[str, Any]] = []
        for index in range(sz.rounds):
            one: dict[str, Any] = {"round": index}
            for action in ("heartbeat", "status"):
                for kind in ("direct", "proxied"):
                    before = await metrics.histogram() if kind == "proxied" else None
                    one[f"{action}_{kind}"] = await _open_round(
                        ctx, sets[kind], procs, action, f"{kind}-{action}-{index}"
                    )
                    if before is not None:  # the bridge's own view: per frame, per direction
                        one[f"{action}_{kind}"]["inside_bridge"] = _inside(
                            before, await metrics.histogram()
                        )
            # The same StatusNotifications answered by a bridge in csms mode: it stores them
            # before answering too, so this is the durability's own share of the round trip.
            one["status_csms_mode"] = await _open_round(
                ctx, sets["csms-mode"], reference, "status", f"csms-mode-status-{index}"
            )
            for kind in ("direct", "proxied"):
                profile = ctx.cfg.profile in ("py-spy", "py-spy-gil") and index == 0
                one[f"closed_{kind}"] = await _closed_round(
                    ctx, sets[kind], procs, f"{kind}-{index}",
                    profile=profile and kind == "proxied",
                )  # fmt: skip
            rounds.append(one)
            ctx.log(f"proxy: round {index + 1}/{sz.rounds}: " + _round_line(one))
        result["rounds"] = rounds
        result |= _summary(rounds)
        log = await asyncio.to_thread(bridges["proxy"].log.read_text, "utf-8", "replace")
        result["bridge_throttled_events"] = log.count('"ocpp.throttled"')
        result["bridge_errors"] = log.count('"level": "error"')
        return result
    finally:
        for gens in sets.values():
            await gens.stop()
        for proc in [*bridges.values(), csms]:
            await proc.stop()


async def _open_round(
    ctx: Context, gens: Generators, procs: dict[str, Proc], action: str, tag: str
) -> dict[str, Any]:
    cfg, sz = ctx.cfg, ctx.cfg.sizes
    waited = await quiet(procs, gens)
    start = time.monotonic() + 0.5
    end = start + sz.latency_duration
    window = Window(procs, gens)
    outs = [str(cfg.workdir / f"proxy-sent-{tag}-{i}.json") for i in range(len(gens.procs))]
    answers, _ = await asyncio.gather(
        gens.ask({"cmd": "open", "start": start, "end": end, "action": action,
                  "rate": sz.latency_rate / len(gens.procs)},
                 timeout=sz.latency_duration + 60, out=outs),
        window.between(start, end),
    )  # fmt: skip
    rtts: list[float] = []
    for out in outs:
        rtts += [s[1] - s[0] for s in json.loads(await asyncio.to_thread(Path(out).read_text))]
    return {
        "sent": len(rtts),
        "rate_per_s": len(rtts) / sz.latency_duration,
        "late_sends": sum(a["late"] for a in answers),
        "errors": sum(a["errors"] for a in answers),
        "error": next((a["error"] for a in answers if a["error"]), None),
        "round_trip": summary_ms(rtts),
        "cores": window.split(),
        "waited_for_quiet_s": waited,
    }


async def _closed_round(
    ctx: Context, gens: Generators, procs: dict[str, Proc], tag: str, *, profile: bool = False
) -> dict[str, Any]:
    cfg, sz = ctx.cfg, ctx.cfg.sizes
    waited = await quiet(procs, gens)
    start = time.monotonic() + sz.warmup
    end = start + sz.duration
    window = Window(procs, gens)
    spy = None
    if profile:  # py-spy on the proxying bridge (summarise with bench.profile_summary)
        spy = asyncio.create_task(py_spy(ctx, "proxy-closed", procs["bridge"], start,
                                         sz.duration))  # fmt: skip
    outs = [str(cfg.workdir / f"proxy-rtt-{tag}-{i}.bin") for i in range(len(gens.procs))]
    answers, _ = await asyncio.gather(
        gens.ask({"cmd": "closed", "start": start, "end": end},
                 timeout=sz.warmup + sz.duration + 60, out=outs),
        window.between(start, end),
    )  # fmt: skip
    if spy is not None:
        await spy
    confirmed = sum(a["confirmed"] for a in answers)
    cpu = window.result
    return {
        "confirmed": confirmed,
        "rate_per_s": confirmed / sz.duration,
        "bridge_cpu_us_per_msg": cpu["bridge"] / confirmed * 1e6 if confirmed else None,
        "csms_cpu_us_per_msg": cpu["csms"] / confirmed * 1e6 if confirmed else None,
        "errors": sum(a["errors"] for a in answers),
        "error": next((a["error"] for a in answers if a["error"]), None),
        "cores": window.split(),
        "waited_for_quiet_s": waited,
    }


class _MetricsReader:
    """``bridge_upstream_added_latency_seconds`` from the proxying bridge's ops port."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.url: str | None = None

    async def histogram(self) -> dict[str, list[tuple[float, float]]]:
        if self.url is None:
            for line in self.proc.log.read_text(encoding="utf-8", errors="replace").splitlines():
                if '"ops.listening"' in line:
                    self.url = f"http://127.0.0.1:{json.loads(line)['port']}/metrics"
                    break
            else:
                return {}
        async with httpx.AsyncClient(timeout=30) as client:
            text = (await client.get(self.url)).text
        out: dict[str, list[tuple[float, float]]] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "bridge_upstream_added_latency_seconds":
                continue
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    out.setdefault(sample.labels["direction"], []).append((bound, sample.value))
        return out


def _inside(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per direction: frames in the window and their p50/p99 (ms), interpolated in buckets."""
    result: dict[str, Any] = {}
    for direction, buckets in after.items():
        old = dict(before.get(direction, []))
        counts = [(bound, value - old.get(bound, 0.0)) for bound, value in buckets]
        total = counts[-1][1] if counts else 0.0
        result[direction] = {"frames": int(total), "p50_ms": _quantile(counts, total, 0.5),
                             "p99_ms": _quantile(counts, total, 0.99)}  # fmt: skip
    return result


def _quantile(counts: list[tuple[float, float]], total: float, q: float) -> float | None:
    """From cumulative bucket counts, linear within the bucket (as PromQL's histogram_quantile)."""
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower * 1000
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return (lower + (bound - lower) * share) * 1000
        lower, below = bound, cumulative
    return None


def _memory(m: dict[str, Any], n: int) -> dict[str, Any]:
    """KiB per charger above the empty process, from VmRSS after the idle hold."""
    empty, held = m["empty_kib"], m["held_kib"]
    after_proxied = m["after_proxied"]["kib"]["csms"]
    per = {
        "proxied_bridge": (held["bridge-proxy"]["VmRSS"] - empty["bridge-proxy"]["VmRSS"]) / n,
        "csms_mode_bridge": (held["bridge-csms"]["VmRSS"] - empty["bridge-csms"]["VmRSS"]) / n,
        # the CSMS holds the proxied chargers' upstream connections too: count the direct set only
        "direct_csms": (m["after_direct"]["kib"]["csms"]["VmRSS"] - after_proxied["VmRSS"]) / n,
    }
    ratios = {
        "proxied_vs_csms_mode": round(per["proxied_bridge"] / per["csms_mode_bridge"], 2),
        "proxied_vs_direct_csms": round(per["proxied_bridge"] / per["direct_csms"], 2),
    }
    return m | {"kib_per_charger": {k: round(v, 1) for k, v in per.items()}} | ratios


def _added(one: dict[str, Any], action: str, q: str) -> float | None:
    proxied = one[f"{action}_proxied"]["round_trip"][q]
    direct = one[f"{action}_direct"]["round_trip"][q]
    return None if proxied is None or direct is None else proxied - direct


def _inside_round_trip(one: dict[str, Any], action: str, q: str) -> float | None:
    """Both directions' quantile added: one relayed CALL crosses the bridge twice."""
    inside = one[f"{action}_proxied"].get("inside_bridge") or {}
    values = [inside.get(d, {}).get(q) for d in ("to_csms", "to_charger")]
    return None if None in values else sum(v for v in values if v is not None)


def _round_line(one: dict[str, Any]) -> str:
    hb50, hb99 = _added(one, "heartbeat", "p50_ms"), _added(one, "heartbeat", "p99_ms")
    ratio = one["closed_proxied"]["rate_per_s"] / max(1.0, one["closed_direct"]["rate_per_s"])
    return (f"Heartbeat added p50 {fmt(hb50, 3)} ms, p99 {fmt(hb99, 3)} ms; "
            f"closed loop {ratio:.0%} of direct")  # fmt: skip


def _spread(values: list[float | None]) -> dict[str, float | None]:
    known = [v for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(known), "min": min(known), "max": max(known)}


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for action in ("heartbeat", "status"):
        for q in ("p50_ms", "p99_ms"):
            out[f"{action}_added_{q}"] = _spread([_added(r, action, q) for r in rounds])
            for kind in ("direct", "proxied", "csms_mode"):
                if f"{action}_{kind}" in rounds[0]:
                    out[f"{action}_{kind}_{q}"] = _spread(
                        [r[f"{action}_{kind}"]["round_trip"][q] for r in rounds]
                    )
    for action in ("heartbeat", "status"):
        for q in ("p50_ms", "p99_ms"):
            out[f"{action}_inside_{q}"] = _spread(
                [_inside_round_trip(r, action, q) for r in rounds]
            )
    for kind in ("direct", "proxied"):
        out[f"closed_{kind}_rate"] = _spread([r[f"closed_{kind}"]["rate_per_s"] for r in rounds])
    out["closed_ratio"] = _spread(
        [r["closed_proxied"]["rate_per_s"] / r["closed_direct"]["rate_per_s"]
         for r in rounds if r["closed_direct"]["rate_per_s"]]
    )  # fmt: skip
    out["errors"] = sum(r[k]["errors"] for r in rounds for k in r if k != "round")
    return out


def proxy_table(p: dict[str, Any]) -> str:
    """Markdown: median over the rounds [min … max], with the targets."""

    def cell(stat: dict[str, Any] | None, digits: int = 2, scale: float = 1.0) -> str:
        if not stat or stat.get("median") is None:
            return "-"
        m, lo, hi = (stat[k] * scale for k in ("median", "min", "max"))
        return f"{m:,.{digits}f} [{lo:,.{digits}f} … {hi:,.{digits}f}]"

    def met(ok: bool | None) -> str:
        return "-" if ok is None else ("**met**" if ok else "**not met**")

    hb50, hb99 = p["heartbeat_added_p50_ms"], p["heartbeat_added_p99_ms"]
    ratio = p["closed_ratio"]
    mem = p.get("memory", {})
    per = mem.get("kib_per_charger", {})
    rows = [
        ("Heartbeat round trip, direct p50 / p99 (ms)",
         f"{cell(p['heartbeat_direct_p50_ms'])} / {cell(p['heartbeat_direct_p99_ms'])}", "", ""),
        ("Heartbeat round trip, proxied p50 / p99 (ms)",
         f"{cell(p['heartbeat_proxied_p50_ms'])} / {cell(p['heartbeat_proxied_p99_ms'])}", "", ""),
        ("added by the relay, p50 (ms)", cell(hb50, 3), "≤ 0.5 ms",
         met(None if hb50["median"] is None else hb50["median"] <= 0.5)),
        ("added by the relay, p99 (ms)", cell(hb99, 3), "≤ 2 ms",
         met(None if hb99["median"] is None else hb99["median"] <= 2.0)),
        ("… measured inside the bridge, both hops, p50 / p99 (ms)",
         f"{cell(p['heartbeat_inside_p50_ms'], 3)} / {cell(p['heartbeat_inside_p99_ms'], 3)}",
         "", ""),
        ("StatusNotification round trip, direct p50 / p99 (ms)",
         f"{cell(p['status_direct_p50_ms'])} / {cell(p['status_direct_p99_ms'])}", "", ""),
        ("StatusNotification, proxied (tapped, stored first) p50 / p99 (ms)",
         f"{cell(p['status_proxied_p50_ms'])} / {cell(p['status_proxied_p99_ms'])}", "", ""),
        ("StatusNotification, bridge in csms mode (stored first) p50 / p99 (ms)",
         f"{cell(p['status_csms_mode_p50_ms'])} / {cell(p['status_csms_mode_p99_ms'])}", "", ""),
        ("… tapped StatusNotification inside the bridge, both hops, p50 / p99 (ms)",
         f"{cell(p['status_inside_p50_ms'], 3)} / {cell(p['status_inside_p99_ms'], 3)}", "", ""),
        ("closed loop StatusNotifications/s, direct", cell(p["closed_direct_rate"], 0), "", ""),
        ("closed loop StatusNotifications/s, proxied", cell(p["closed_proxied_rate"], 0), "", ""),
        ("proxied / direct throughput", cell(ratio, 0, 100) + " %", "≥ 70 %",
         met(None if ratio["median"] is None else ratio["median"] >= 0.7)),
        ("RSS per proxied charger above the empty bridge (KiB)",
         fmt(per.get("proxied_bridge"), 1), "", ""),
        ("… per charger of a bridge in csms mode (KiB)", fmt(per.get("csms_mode_bridge"), 1), "",
         ""),
        ("… per charger connected to the CSMS directly (KiB)", fmt(per.get("direct_csms"), 1),
         "", ""),
        ("proxied / csms-mode charger", fmt(mem.get("proxied_vs_csms_mode"), 2), "≤ 2x",
         met(None if mem.get("proxied_vs_csms_mode") is None
             else mem["proxied_vs_csms_mode"] <= 2)),
        ("proxied / direct-to-CSMS charger", fmt(mem.get("proxied_vs_direct_csms"), 2), "≤ 2x",
         met(None if mem.get("proxied_vs_direct_csms") is None
             else mem["proxied_vs_direct_csms"] <= 2)),
        ("errors in the rounds", fmt(p.get("errors")), "0", ""),
    ]  # fmt: skip
    lines = [f"Proxy phase, {fmt(p['chargers'])} chargers per set, "
             f"{len(p.get('rounds', []))} rounds (median [min … max]):", "",
             "| metric | measured | target | |", "|---|---:|---|---|"]  # fmt: skip
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)
