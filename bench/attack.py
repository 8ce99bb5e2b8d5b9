"""The ``attack`` phase: the OCPP and ops ports under hostile load, all on 127.0.0.1.

Every scenario is bounded in sockets and time and stops by itself. Two bridge processes with
the production defaults except where noted:

* **A** (TLS, security profile 2): idle TLS connections in waves (RSS before and after each
  wave, a legitimate charger's login during each), then idle connections to the ops port;
* **B** (plain ws, listed chargers on profile 1, ``allow_unlisted`` with the README's template
  for the rest): wrong passwords sent all at once and then for a while from one address
  (password checks counted, legitimate logins timed from another address), made-up and
  look-alike unlisted IDs, and requests for other paths (log lines and bytes).

Attackers use 127.0.0.1; the legitimate charger 127.0.0.2, as another address would.

    python -m bench.attack              # the figures of the issue's sizes (~3 min)
    python -m bench.run --phases attack # the same, inside the benchmark runner

The attacking and the legitimate clients that run in processes of their own are in
``bench/attack_clients.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.attack_clients import (
    ATTACKER,
    ATTACKER_2,
    LEGIT,
    PASSWORD,
    Holder,
    Prober,
    basic,
)
from bench.run import PY, Hub, Proc, free_port, machine_cpu, wait_port

OPERATOR = "DE*ABC"


@dataclass(frozen=True)
class AttackSizes:
    waves: int = 5
    wave_sockets: int = 6000
    concurrent_logins: int = 3000
    sustained_s: float = 20.0
    sustained_concurrency: int = 200
    ops_sockets: int = 20000
    unlisted_ids: int = 3000
    other_paths: int = 20000
    chargers: int = 400  # listed chargers (legitimate logins use a fresh one each time)


# -- helpers ---------------------------------------------------------------------------------


def read_yaml(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load(path.read_text())
    return result


def size(path: Path) -> int:
    return path.stat().st_size


def count(path: Path, needle: str) -> int:
    return path.read_text(errors="replace").count(needle)


def rejected_bytes(path: Path) -> int:
    lines = path.read_text(errors="replace").splitlines()
    return sum(len(line) + 1 for line in lines if '"ocpp.rejected"' in line)


def memory_mib(proc: Proc) -> float:
    return round(proc.memory_kib()["VmRSS"] / 1024, 1)


async def metric(ops_port: int, name: str) -> dict[str, float]:
    """Samples of one metric from /metrics: labels text → value."""
    async with httpx.AsyncClient(timeout=30) as client:
        text = (await client.get(f"http://127.0.0.1:{ops_port}/metrics")).text
    samples = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            samples[key[len(name) :] or "-"] = float(value)
    return samples


async def total(ops_port: int, name: str) -> float:
    return sum((await metric(ops_port, name)).values())


# -- the bridges -----------------------------------------------------------------------------


def write_bridge_config(workdir: Path, hub_port: int, name: str, tls: dict[str, str] | None,
                        sizes: AttackSizes) -> tuple[Path, int]:  # fmt: skip
    from bridge.passwords import hash_password

    digest = hash_password(PASSWORD)
    state = Path(tempfile.mkdtemp(prefix=f"attack-{name}-", dir=workdir))
    port = free_port()
    security: dict[str, Any] = {"profile": 2, **tls} if tls else {}
    ocpp: dict[str, Any] = {"host": "127.0.0.1", "port": port, "security": security}
    chargers = {
        f"CP{n:05d}": {"evses": {1: f"{OPERATOR}*E{n}*1"}, "password_hash": digest}
        for n in range(1, sizes.chargers + 1)
    }
    if not tls:  # B: listed chargers log in with passwords, unlisted ones are allowed
        ocpp |= {"allow_unlisted": True, "evse_id_template": "{operator}*E{charge_point}*{evse}"}
        for charger in chargers.values():
            charger["security_profile"] = 1
        # The throttle is what is measured: let all the attacker's sockets reach it.
        security["max_connections_per_address"] = sizes.concurrent_logins + 1000
    tree = {
        "ocpp": ocpp,
        "oicp": {"base_url": f"http://127.0.0.1:{hub_port}", "operator_id": OPERATOR},
        "state": {"database": str(state / "bridge.db")},
        "fullload": {"enabled": False},
        "log": {"level": "INFO", "format": "json"},
        "ops": {"host": "127.0.0.1", "port": free_port()},
        "chargers": chargers,
    }
    path = state / "bridge.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    return path, port


async def start_bridge(workdir: Path, config: Path, port: int, name: str) -> tuple[Proc, int]:
    log = workdir / f"attack-bridge-{name}.log"
    proc = Proc(f"bridge-{name}", [PY, "-m", "bridge.cli", "run", "--config", str(config)], log)
    await wait_port(port, proc, timeout=120)
    ops_port = int(read_yaml(config)["ops"]["port"])
    await asyncio.sleep(1.0)  # start-up done, GC tuned
    return proc, ops_port


# -- scenarios -------------------------------------------------------------------------------


async def idle_tls_waves(
    proc: Proc, port: int, ops_port: int, *, ca: Path, sz: AttackSizes, log: Any
) -> dict[str, Any]:
    result: dict[str, Any] = {"rss_start_mib": memory_mib(proc), "waves": []}
    for wave in range(sz.waves):
        holder = Holder(port, sz.wave_sockets)
        prober = await Prober(port, ca=ca, first=1 + wave * 20, interval=1.0).start()
        held = await holder.start()
        peak = memory_mib(proc)
        await asyncio.sleep(5.0)
        peak = max(peak, memory_mib(proc))
        logins = await prober.stop()
        await asyncio.sleep(6.0)  # past handshake_timeout (10 s): the held ones time out
        await holder.stop()
        await asyncio.sleep(1.0)
        entry = {"wave": wave + 1, "held": held, "rss_during_mib": peak,
                 "rss_after_mib": memory_mib(proc), "logins": logins}  # fmt: skip
        result["waves"].append(entry)
        log(f"    wave {wave + 1}: RSS {peak} → {entry['rss_after_mib']} MiB, logins "
            f"{[x['s'] for x in logins]} s")  # fmt: skip
    result["rss_end_mib"] = memory_mib(proc)
    result["refused"] = await metric(ops_port, "bridge_ocpp_connections_refused_total")
    return result


async def ops_flood(
    proc: Proc, port: int, ops_port: int, *, ca: Path, sz: AttackSizes
) -> dict[str, Any]:
    before = size(proc.log)
    holders = [Holder(ops_port, sz.ops_sockets // 2) for _ in range(2)]
    prober = await Prober(port, ca=ca, first=150, interval=0.5).start()
    held = [await h.start() for h in holders]
    await asyncio.sleep(2.0)
    logins = await prober.stop()
    started = time.monotonic()
    try:
        transport = httpx.AsyncHTTPTransport(local_address=LEGIT)  # a probe from elsewhere
        async with httpx.AsyncClient(timeout=10, transport=transport) as client:
            health = (await client.get(f"http://127.0.0.1:{ops_port}/healthz")).status_code
    except httpx.HTTPError as exc:
        health = repr(exc)
    health_s = round(time.monotonic() - started, 3)
    await asyncio.sleep(6.0)  # past ops.keepalive_timeout
    for h in holders:
        await h.stop()
    await asyncio.sleep(1.0)
    return {
        "held": held, "logins": logins, "healthz": health, "healthz_s": health_s,
        "refused": await metric(ops_port, "bridge_ops_connections_refused_total"),
        "log_bytes": size(proc.log) - before, "rss_mib": memory_mib(proc),
    }  # fmt: skip


async def login_flood(port: int, ops_port: int, sz: AttackSizes, log: Any) -> dict[str, Any]:
    import websockets
    from websockets.exceptions import InvalidStatus

    async def guess(i: int) -> str:
        try:
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/ocpp/CP00001", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                additional_headers={"Authorization": basic("CP00001", f"guess-{i}")},
                local_addr=(ATTACKER, 0), open_timeout=60,
            ):  # fmt: skip
                return "101"
        except InvalidStatus as exc:
            return str(exc.response.status_code)
        except Exception as exc:
            return type(exc).__name__

    checks_before = await total(ops_port, "bridge_ocpp_password_checks_total")
    prober = await Prober(port, ca=None, first=2, interval=0.1).start()
    flood = [asyncio.create_task(guess(i)) for i in range(sz.concurrent_logins)]
    answers = Counter(await asyncio.gather(*flood))
    await asyncio.sleep(0.5)
    legit = await prober.stop()
    checks = await total(ops_port, "bridge_ocpp_password_checks_total") - checks_before
    burst_checks = checks - sum(1 for x in legit if x["ok"])  # each legitimate login: one
    log(f"    {sz.concurrent_logins} at once: {dict(answers)}, {burst_checks:.0f} checks")

    # Sustained: the same address keeps guessing for a while, `sustained_concurrency` at once.
    checks_before = await total(ops_port, "bridge_ocpp_password_checks_total")
    deadline = time.monotonic() + sz.sustained_s
    sustained: Counter[str] = Counter()

    async def keep_guessing(k: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            sustained[await guess(k * 1_000_000 + n)] += 1
            n += 1

    prober = await Prober(port, ca=None, first=2 + len(legit), interval=1.0).start()
    await asyncio.gather(*(keep_guessing(k) for k in range(sz.sustained_concurrency)))
    legit_sustained = await prober.stop()
    checks = await total(ops_port, "bridge_ocpp_password_checks_total") - checks_before
    sustained_checks = checks - sum(1 for x in legit_sustained if x["ok"])
    return {
        "burst": {"answers": dict(answers), "password_checks": burst_checks, "legit": legit},
        "sustained": {"seconds": sz.sustained_s, "answers": dict(sustained),
                      "password_checks": sustained_checks, "legit": legit_sustained},
    }  # fmt: skip


async def unlisted(port: int, ops_port: int, sz: AttackSizes) -> dict[str, Any]:
    """From another address than the login flood (that one is throttled by now)."""
    import websockets
    from websockets.exceptions import InvalidStatus

    async def report(cp_id: str) -> str:
        try:
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/ocpp/{cp_id}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                local_addr=(ATTACKER_2, 0), open_timeout=60,
            ) as ws:  # fmt: skip
                status = {"connectorId": 1, "errorCode": "OtherError", "status": "Faulted"}
                await ws.send(json.dumps([2, "1", "StatusNotification", status]))
                await ws.recv()
                return "101"
        except InvalidStatus as exc:
            return str(exc.response.status_code)
        except Exception as exc:
            return type(exc).__name__

    # '1' maps to DE*ABC*E1*1 with the template: the EVSE of the listed CP00001; so do '-1'
    # and '1.' (only letters and digits of an ID go into the template).
    takeover = {cp_id: await report(cp_id) for cp_id in ("1", "-1", "1.")}
    evses_before = await total(ops_port, "bridge_evses")
    sem = asyncio.Semaphore(200)

    async def made_up(i: int) -> str:
        async with sem:
            return await report(f"X{i:06d}")

    answers = Counter(await asyncio.gather(*(made_up(i) for i in range(sz.unlisted_ids))))
    created = await total(ops_port, "bridge_evses") - evses_before
    return {"takeover": takeover, "made_up": dict(answers), "evses_created": created}


async def other_paths(port: int, sz: AttackSizes, log_file: Path) -> dict[str, Any]:
    await asyncio.sleep(2.0)  # the lines of the scenario before are written
    before = size(log_file)
    lines_before = count(log_file, '"ocpp.rejected"')
    bytes_before = rejected_bytes(log_file)
    sem = asyncio.Semaphore(200)
    answers: Counter[str] = Counter()

    async def request(i: int) -> None:
        async with sem:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET /wp-login.php?{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                line = await asyncio.wait_for(reader.readline(), 30)
                answers[line.split(b" ")[1].decode() if line else "closed"] += 1
                writer.close()
            except Exception as exc:
                answers[type(exc).__name__] += 1

    started = time.monotonic()
    await asyncio.gather(*(request(i) for i in range(sz.other_paths)))
    elapsed = time.monotonic() - started
    await asyncio.sleep(0.5)
    lines = count(log_file, '"ocpp.rejected"') - lines_before
    # Bytes of those lines only: pushes of the unlisted scenario are still being logged.
    line_bytes = rejected_bytes(log_file) - bytes_before
    return {"requests": sz.other_paths, "answers": dict(answers), "seconds": round(elapsed, 1),
            "log_lines": lines, "log_bytes": line_bytes,
            "log_bytes_all": size(log_file) - before}  # fmt: skip


# -- the phase -------------------------------------------------------------------------------


def tls_material(workdir: Path) -> tuple[dict[str, str], Path]:
    """The OCPP port's certificate and key, and the CA file chargers trust."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    cert, key = workdir / "attack-server.pem", workdir / "attack-server.key"
    server.cert_chain_pems[0].write_to_path(str(cert))
    server.private_key_pem.write_to_path(str(key))
    ca_file = workdir / "attack-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return {"tls_cert": str(cert), "tls_key": str(key)}, ca_file


class CpuWindow:
    """The bridge's CPU and the whole machine's over a scenario, in cores (others share it)."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.start = (time.monotonic(), proc.cpu(), machine_cpu()[0])

    def split(self) -> dict[str, float]:
        wall = time.monotonic() - self.start[0]
        bridge = (self.proc.cpu() - self.start[1]) / wall
        machine = (machine_cpu()[0] - self.start[2]) / wall
        return {"seconds": round(wall, 1), "bridge_cores": round(bridge, 2),
                "machine_cores": round(machine, 2),
                "rest_cores": round(machine - bridge, 2)}  # fmt: skip


async def run_attack(workdir: Path, hub: Hub, sizes: AttackSizes, log: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"sizes": asdict(sizes), "cpu": {}}
    files, ca = tls_material(workdir)
    config, port = write_bridge_config(workdir, hub.port, "tls", files, sizes)
    proc, ops_port = await start_bridge(workdir, config, port, "tls")
    try:
        log(f"  attack: {sizes.waves} waves of {sizes.wave_sockets} idle TLS sockets")
        cpu = CpuWindow(proc)
        result["idle_tls"] = await idle_tls_waves(proc, port, ops_port, ca=ca, sz=sizes, log=log)
        result["cpu"]["idle_tls"] = cpu.split()
        log(f"  attack: {sizes.ops_sockets} idle sockets to the ops port")
        cpu = CpuWindow(proc)
        result["ops_flood"] = await ops_flood(proc, port, ops_port, ca=ca, sz=sizes)
        result["cpu"]["ops_flood"] = cpu.split()
        result["tls_bridge_log_bytes"] = size(proc.log)
    finally:
        await proc.stop()
    config, port = write_bridge_config(workdir, hub.port, "plain", None, sizes)
    proc, ops_port = await start_bridge(workdir, config, port, "plain")
    try:
        log(f"  attack: {sizes.concurrent_logins} wrong passwords at once, then "
            f"{sizes.sustained_s:.0f} s sustained")  # fmt: skip
        cpu = CpuWindow(proc)
        result["login_flood"] = await login_flood(port, ops_port, sizes, log)
        result["cpu"]["login_flood"] = cpu.split()
        log(f"  attack: {sizes.unlisted_ids} made-up unlisted IDs and a takeover")
        result["unlisted"] = await unlisted(port, ops_port, sizes)
        log(f"  attack: {sizes.other_paths} requests for other paths")
        result["other_paths"] = await other_paths(port, sizes, proc.log)
        result["plain_bridge_log_bytes"] = size(proc.log)
        result["plain_rss_mib"] = memory_mib(proc)
    finally:
        await proc.stop()
    return result


def _seconds(entries: list[dict[str, Any]]) -> str:
    values = [e["s"] for e in entries if e.get("ok")]
    failed = sum(1 for e in entries if not e.get("ok"))
    if not values:
        return f"none succeeded ({failed} failed)"
    text = f"median {statistics.median(values):.2f}, max {max(values):.2f} (n={len(values)})"
    return text + (f", {failed} failed" if failed else "")


def table(r: dict[str, Any]) -> str:
    """The issue's figures as a markdown table."""
    rows: list[tuple[str, str, str]] = []
    sizes = r["sizes"]
    tls_ = r["idle_tls"]
    waves = tls_["waves"]
    after = [f"{w['rss_after_mib']:.0f}" for w in waves]
    grown = tls_["rss_end_mib"] - tls_["rss_start_mib"]
    rows.append(
        (
            f"RSS at the start and after each of {len(waves)} waves of "
            f"{sizes['wave_sockets']:,} idle TLS sockets (MiB)",
            " → ".join([f"{tls_['rss_start_mib']:.0f}", *after]),
            f"within 100 MiB of the start: {grown:+.0f}",
        )
    )
    peak = max(w["rss_during_mib"] for w in waves)
    rows.append(("RSS during a wave, highest (MiB)", f"{peak:.0f}", ""))
    logins = [x for w in waves for x in w["logins"]]
    rows.append(("legitimate TLS login + Heartbeat during the waves (s)", _seconds(logins), "< 1"))
    rows.append(("connections refused at once (by reason)", json.dumps(tls_["refused"]), ""))
    lf = r["login_flood"]
    rows.append(
        (
            f"{sizes['concurrent_logins']:,} concurrent wrong passwords: password checks",
            f"{lf['burst']['password_checks']:.0f}",
            "≤ 10 (the budget)",
        )
    )
    rows.append(("… answers", json.dumps(lf["burst"]["answers"]), ""))
    rows.append(("legitimate logins meanwhile, another address (s)",
                 _seconds(lf["burst"]["legit"]), "< 1 s"))  # fmt: skip
    s = lf["sustained"]
    rows.append(
        (
            f"sustained guessing {s['seconds']:.0f} s ({sizes['sustained_concurrency']} at once): "
            "password checks / answers",
            f"{s['password_checks']:.0f} / {json.dumps(s['answers'])}",
            "",
        )
    )
    rows.append(("legitimate logins meanwhile (s)", _seconds(s["legit"]), "< 1 s"))
    op = r["ops_flood"]
    held = sum(h["opened"] for h in op["held"])
    rows.append((f"{held:,} idle sockets to the ops port: charger logins meanwhile (s)",
                 _seconds(op["logins"]), "< 1 s"))  # fmt: skip
    rows.append(("… /healthz meanwhile, another address",
                 f"{op['healthz']} in {op['healthz_s']} s", "200"))  # fmt: skip
    rows.append(("… refused / log bytes", f"{json.dumps(op['refused'])} / {op['log_bytes']:,}",
                 "log < 1 MB"))  # fmt: skip
    un = r["unlisted"]
    rows.append(("takeover IDs ('1' → DE*ABC*E1*1 of CP00001)", json.dumps(un["takeover"]),
                 "refused"))  # fmt: skip
    rows.append(
        (
            f"{sizes['unlisted_ids']:,} made-up unlisted IDs: answers / EVSEs created",
            f"{json.dumps(un['made_up'])} / {un['evses_created']:.0f}",
            "≤ ocpp.max_unlisted_chargers",
        )
    )
    po = r["other_paths"]
    rows.append((f"{po['requests']:,} requests for other paths: ocpp.rejected lines / bytes",
                 f"{po['log_lines']} / {po['log_bytes']:,}", ""))  # fmt: skip
    logs = f"{r['tls_bridge_log_bytes']:,} / {r['plain_bridge_log_bytes']:,}"
    rows.append(("whole log of the TLS bridge / the plain bridge (bytes)", logs, ""))
    for name, split in r.get("cpu", {}).items():
        rows.append((f"CPU during {name} (cores: bridge / whole machine, 2 cores)",
                     f"{split['bridge_cores']} / {split['machine_cores']}", ""))  # fmt: skip
    lines = ["| figure | measured | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


async def _main(args: argparse.Namespace) -> int:
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="bridge-attack-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"attack: logs and state in {workdir}", file=sys.stderr)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    from bench.run import QUICK, Config

    cfg = Config(QUICK, [], [], 0, 0, "none", None, None, 60, 0.0, [], [], [], None, workdir,
                 False, "INFO", "blip")  # fmt: skip
    hub = Hub(cfg)
    started = time.monotonic()
    try:
        await hub.ready()
        sizes = AttackSizes()
        if args.smoke:
            sizes = AttackSizes(waves=1, wave_sockets=600, concurrent_logins=300, sustained_s=3.0,
                                sustained_concurrency=20, ops_sockets=2000, unlisted_ids=300,
                                other_paths=2000)  # fmt: skip
        result = await run_attack(workdir, hub, sizes, log)
    finally:
        await hub.close()
    result["total_s"] = round(time.monotonic() - started, 1)
    out = args.json or workdir / "attack.json"
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(table(result))
    print(f"\nresults: {out} ({result['total_s']} s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.attack", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check that it runs")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--workdir", type=Path, help="keep logs and state here")
    return asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
