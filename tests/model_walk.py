"""A model-based random walk over a real bridge process, real chargers and the hub simulator.

Each walk is a seeded random sequence of steps: status reports per connector (OCPP 1.6 and
2.0.1, StatusNotification and NotifyEvent, with timestamps in order, out of order and missing),
connects, disconnects and duplicate connections, hub faults (HTTP 5xx, 429 with Retry-After,
refusals by code, timeouts with and without the hub applying the request late, connections
dropped after the request was sent), fullLoads (scheduled and by hand), configuration changes
with restarts, and SIGKILL with reports in flight followed by a restart.

The model keeps what the chargers reported (the newest report per connector, as the bridge must
order them) and the configuration. Whenever the walk lets the system quiesce (faults cleared,
nothing pending, nothing in flight at either end) it checks the invariant:

* the hub's status of every configured EVSE equals the status computed from the newest
  reports under the current configuration (an EVSE the hub does not hold counts as Unknown),
  except an EVSE the bridge has parked because the hub refused it by code (and says so);
* the hub holds no EVSE that is not configured;
* the bridge computes the same statuses as the model;
* the hub never had two requests in flight at once (counted on the hub's side, including
  requests it applies after the client gave up).

On a failure the assertion message carries the seed and every step taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bridge.api.tokens import hash_token
from bridge.hubsim import HubSimulator
from bridge.status.aggregate import STATION_DOWN, evse_status
from bridge.status.table import OcppStatus, OicpStatus, effective_table
from tests.conftest import READ_AUTH, READ_TOKEN
from tests.procs import BridgeProcess, RawCharger, write_config

OPERATOR = "DE*ABC"
REQUEST_TIMEOUT = 0.4  # the bridge's push timeout, and so its settle time
LATE = REQUEST_TIMEOUT * 1.25  # the hub applies a timed-out request this long after arrival
VERSIONS = {"M16A": "1.6", "M16B": "1.6", "M201": "2.0.1"}
STATUSES_16 = ["Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE",
               "Finishing", "Reserved", "Unavailable", "Faulted"]  # fmt: skip
STATUSES_201 = ["Available", "Occupied", "Reserved", "Unavailable", "Faulted"]
STATION_16 = ["Available", "Unavailable", "Faulted"]
OVERRIDES: list[dict[str, str]] = [
    {},
    {"Unavailable": "Unknown"},
    {"Faulted": "Unknown", "Reserved": "Occupied"},
]


@dataclass
class Config:
    """The part of the bridge configuration the walk changes between restarts."""

    swapped: bool = False  # M16A's two EvseIDs swapped between its connectors
    removed: bool = False  # M201's EVSE 2 no longer configured
    overrides: int = 0  # index into OVERRIDES

    def chargers(self) -> dict[str, dict[int, str]]:
        a1, a2 = "DE*ABC*EM16A*1", "DE*ABC*EM16A*2"
        m201 = {1: "DE*ABC*EM201*1"} if self.removed else {1: "DE*ABC*EM201*1",
                                                           2: "DE*ABC*EM201*2"}  # fmt: skip
        return {
            "M16A": {1: a2, 2: a1} if self.swapped else {1: a1, 2: a2},
            # two connectors of one EVSE, and a third EVSE
            "M16B": {1: "DE*ABC*EM16B*1", 2: "DE*ABC*EM16B*1", 3: "DE*ABC*EM16B*3"},
            "M201": m201,
        }

    def evses(self) -> dict[str, str]:
        """Every configured EvseID → its charger."""
        return {e: cp for cp, evses in self.chargers().items() for e in evses.values()}

    def describe(self) -> str:
        overrides = OVERRIDES[self.overrides]
        return f"swapped={self.swapped} removed={self.removed} overrides={overrides}"


@dataclass
class Report:
    at: float  # when the report was made, as the bridge orders them (Unix time)
    status: OcppStatus


Said = tuple[str, tuple[int, int], OcppStatus, float]  # (charger, slot, status, report time)


@dataclass
class Stats:
    sequences: int = 0
    steps: int = 0
    checks: int = 0
    restarts: int = 0
    kills: int = 0
    faults: int = 0
    reports: int = 0
    full_loads_by_hand: int = 0
    full_loads_at_hub: int = 0  # every fullLoad the hub got (scheduled, by hand, after a crash)
    hub_requests: int = 0


@dataclass
class Walk:
    seed: int
    tmp: Path
    hub: HubSimulator
    stats: Stats
    rng: random.Random = field(init=False)
    config: Config = field(default_factory=Config)
    reports: dict[tuple[str, int, int], Report] = field(default_factory=dict)
    # reports in flight at a SIGKILL, not sent again: (the charger's EVSEs then, the report)
    maybe: list[tuple[dict[int, str], Said]] = field(default_factory=list)
    chargers: dict[str, RawCharger] = field(default_factory=dict)
    uncertain: dict[str, list[Any]] = field(default_factory=dict)  # unanswered at a SIGKILL
    trace: list[str] = field(default_factory=list)
    bridge: BridgeProcess | None = None
    api: httpx.AsyncClient | None = None
    _call_ids: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # -- the walk ----------------------------------------------------------------------------------
    async def run(self, steps: int) -> None:
        self.stats.sequences += 1
        # The rare, heavy steps get a place in every walk so that short walks cover them too.
        heavy = ["kill", "restart", "fullload_by_hand"] if steps >= 20 else ["kill"]
        positions = dict(zip(self.rng.sample(range(4, steps), len(heavy)), heavy, strict=True))
        await self.start()
        try:
            since_check = 0
            for n in range(steps):
                kind = positions.get(n) or ("check" if since_check >= 10 else self._pick())
                since_check = 0 if kind == "check" else since_check + 1
                self.trace.append(f"{n}: {kind}")
                await getattr(self, f"step_{kind}")()
                self.stats.steps += 1
            await self.check()
        except BaseException as exc:
            raise AssertionError(self._story(exc)) from exc
        finally:
            await self.shutdown()
            self.stats.full_loads_at_hub += sum(p.action == "fullLoad" for p in self.hub.received)
            self.stats.hub_requests += len(self.hub.received)

    def _pick(self) -> str:
        kinds = {"report": 40, "flap": 10, "fault": 14, "connection": 10, "sleep": 6, "check": 12,
                 "restart": 3, "kill": 3, "fullload_by_hand": 1}  # fmt: skip
        return self.rng.choices(list(kinds), weights=list(kinds.values()))[0]

    def _story(self, exc: BaseException) -> str:
        logs = self.bridge.events[-15:] if self.bridge is not None else []
        return (
            f"model walk seed={self.seed} failed: {exc!r}\nconfig: {self.config.describe()}\n"
            f"steps:\n  " + "\n  ".join(self.trace[-60:]) + "\nhub: "
            f"{json.dumps(self.hub.state, sort_keys=True)}\nexpected: "
            f"{json.dumps(self.expected(), sort_keys=True)}\nlast bridge log lines:\n  "
            + "\n  ".join(json.dumps(e)[:300] for e in logs)
        )

    # -- steps -------------------------------------------------------------------------------------
    async def step_report(self) -> None:
        cp = self.rng.choice(sorted(VERSIONS))
        charger = await self.connected(cp)
        frame, slot, status, at = self._report_frame(cp)
        answer = await self._call(charger, frame)
        self.trace[-1] += f" {cp} {slot} {status.value} at={_iso(at)} -> {answer}"
        self.stats.reports += 1
        self.record(cp, slot, status, at)

    async def step_flap(self) -> None:
        """A connector changes and changes back while its push is out (coalescing, and a
        change back to what the hub had acknowledged before an ambiguous outcome)."""
        cp = self.rng.choice(sorted(VERSIONS))
        charger = await self.connected(cp)
        key = self.rng.choice([1, 2])
        first, second = self.rng.sample(STATUSES_16 if VERSIONS[cp] == "1.6" else STATUSES_201, 2)
        for status in (first, second, first):
            at = time.time()
            if VERSIONS[cp] == "1.6":
                payload: dict[str, Any] = {"connectorId": key, "errorCode": "NoError",
                                           "status": status, "timestamp": _iso(at)}  # fmt: skip
            else:
                payload = {"timestamp": _iso(at), "connectorStatus": status, "evseId": key,
                           "connectorId": 1}  # fmt: skip
            frame = [2, "", "StatusNotification", payload]
            await self._call(charger, frame)
            _, slot, parsed, when = _parse_frame(cp, frame, at)
            self.record(cp, slot, parsed, when)
            self.stats.reports += 1
            await asyncio.sleep(self.rng.choice([0.0, 0.01, REQUEST_TIMEOUT / 2]))
        self.trace[-1] += f" {cp} {key}: {first} -> {second} -> {first}"

    async def step_fault(self) -> None:
        faults = self.hub.faults
        kinds = ["503", "429", "009", "018", "hang", "late", "drop", "drop_unapplied"]
        kind = self.rng.choice(kinds)
        count = self.rng.randint(1, 2)
        if kind == "503":
            faults.fail_http(503, count=count)
        elif kind == "429":
            faults.fail_http(429, count=1, retry_after=1)
        elif kind in ("009", "018"):
            faults.answer_code(kind, count=1 if kind == "018" else count)
        elif kind == "hang":
            faults.hang(REQUEST_TIMEOUT * 2.5, count=1)  # times out; the hub drops it
        elif kind == "late":
            faults.late(LATE, count=1)  # times out; the hub applies it later all the same
        else:
            faults.drop(count=1, apply=kind == "drop")
        self.stats.faults += 1
        self.trace[-1] += f" {kind}"

    async def step_connection(self) -> None:
        cp = self.rng.choice(sorted(VERSIONS))
        what = self.rng.choice(["disconnect", "duplicate", "connect"])
        self.trace[-1] += f" {what} {cp}"
        old = self.chargers.pop(cp, None)
        if what == "disconnect":
            if old is not None:
                await _close(old)
            return
        if what == "connect" and old is not None:
            self.chargers[cp] = old
            return
        # duplicate: a second connection replaces the first, which the bridge closes
        self.chargers[cp] = await self.connected(cp)
        if old is not None:
            await _close(old)

    async def step_sleep(self) -> None:
        seconds = self.rng.choice([0.05, 0.2, LATE + 0.1])
        self.trace[-1] += f" {seconds:.2f}s"
        await asyncio.sleep(seconds)

    async def step_check(self) -> None:
        await self.check()

    async def step_restart(self) -> None:
        """SIGTERM, maybe a configuration change, start again."""
        self._maybe_change_config()
        assert self.bridge is not None
        code = await self.bridge.terminate()
        assert code == 0, f"bridge exited with {code}"
        await self._disconnect_all()
        await self.start()
        self.stats.restarts += 1

    async def step_kill(self) -> None:
        """Reports in flight, SIGKILL, maybe a configuration change, start again. The chargers
        send their unanswered reports again, or (as some do with status reports) not: then the
        bridge kept them or not, and the hub must agree with whichever it did."""
        for cp in self.rng.sample(sorted(VERSIONS), self.rng.randint(0, 2)):
            charger = await self.connected(cp)
            frame, _, _, _ = self._report_frame(cp)
            self.uncertain[cp] = frame
            await charger.ws.send(json.dumps(frame))
        await asyncio.sleep(self.rng.choice([0.0, 0.002, 0.01, 0.03]))
        assert self.bridge is not None
        await self.bridge.kill()
        await self._disconnect_all()
        resend = self.rng.random() < 0.5
        if not resend:
            for cp, frame in self.uncertain.items():
                said = _parse_frame(cp, frame, time.time())
                self.maybe.append((self.config.chargers()[cp], said))
        self._maybe_change_config()
        self.trace[-1] += f" in flight: {sorted(self.uncertain)} resent: {resend}"
        await self.start()
        self.stats.kills += 1
        uncertain, self.uncertain = self.uncertain, {}
        if not resend:
            await self.check()  # resolves what the bridge kept before anything else happens
            return
        for cp, frame in uncertain.items():
            charger = await self.connected(cp)
            await self._call(charger, frame)
            _, slot, status, at = _parse_frame(cp, frame, time.time())
            self.record(cp, slot, status, at)

    async def step_fullload_by_hand(self) -> None:
        """``bridge fullload`` (the bridge must be stopped), then start again."""
        assert self.bridge is not None
        assert await self.bridge.terminate() == 0
        await self._disconnect_all()
        config = self._write_config(scheduled=False)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.cli", "fullload", "--config", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            env=_env(),
        )  # fmt: skip
        code = await asyncio.wait_for(proc.wait(), 30)
        self.trace[-1] += f" exit {code}"
        await self.start()
        self.stats.full_loads_by_hand += 1

    # -- the invariant -----------------------------------------------------------------------------
    async def check(self) -> None:
        """Let the system quiesce, then check the invariant."""
        self.hub.faults.clear()
        await self._quiesce()
        expected = self.expected()
        configured = self.config.evses()
        bridge_view = await self._bridge_evses()
        computed = {e: item["status"] for e, item in bridge_view.items() if e in configured}
        if self.maybe:
            self._resolve_maybe(computed)
            expected = self.expected()
        assert computed == expected, f"the bridge computes {computed}, the model {expected}"
        stray = set(self.hub.state) - set(configured)
        assert not stray, f"the hub still holds EVSEs not configured: {sorted(stray)}"
        wrong = {e: (self.hub.state.get(e, "Unknown"), want) for e, want in expected.items()
                 if self.hub.state.get(e, "Unknown") != want}  # fmt: skip
        for evse_id in list(wrong):
            if self._parked_for_a_refusal(evse_id, bridge_view[evse_id]):
                del wrong[evse_id]
        assert not wrong, f"hub wrong once quiet (hub, expected): {wrong}"
        assert self.hub.max_in_flight <= 1, f"{self.hub.max_in_flight} requests in flight"
        self.stats.checks += 1
        self.trace[-1] += " (invariant held)"

    def _parked_for_a_refusal(self, evse_id: str, item: dict[str, Any]) -> bool:
        """A parked EVSE may differ if the hub's answer to its last request was a refusal."""
        if item.get("parked") is None:
            return False
        last = [p for p in self.hub.received if any(e == evse_id for e, _ in p.records)]
        return bool(last) and last[-1].code == item["parked"] == "018"

    async def _quiesce(self, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        quiet_polls = 0
        while quiet_polls < 3:
            if time.monotonic() > deadline:
                raise AssertionError(f"no quiet within {within}s: {await self._delivery()}")
            delivery = await self._delivery()
            quiet = (delivery["pending"] == 0 and not delivery["in_flight"]
                     and not delivery["full_load_pending"] and self.hub.in_flight == 0)  # fmt: skip
            quiet_polls = quiet_polls + 1 if quiet else 0
            await asyncio.sleep(0.05)

    def expected(self, reports: dict[tuple[str, int, int], Report] | None = None) -> dict[str, str]:
        """What the hub must show for every configured EVSE, from the newest reports."""
        reports = self.reports if reports is None else reports
        overrides = OVERRIDES[self.config.overrides]
        table = effective_table({OcppStatus(k): OicpStatus(v) for k, v in overrides.items()})
        out = {}
        for cp, evses in self.config.chargers().items():
            station = reports.get((cp, 0, 0))
            for evse_id in sorted(set(evses.values())):
                keys = [k for k, e in evses.items() if e == evse_id]
                connectors = [r.status for (c, k, n), r in reports.items()
                              if c == cp and k in keys and n >= 1]  # fmt: skip
                whole = next((reports[(cp, k, 0)].status for k in keys
                              if (cp, k, 0) in reports), None)  # fmt: skip
                status = evse_status(connectors, table, station.status if station else None, whole)
                out[evse_id] = status.value
        return out

    def record(self, cp: str, slot: tuple[int, int], status: OcppStatus, at: float) -> None:
        """What the bridge must make of a confirmed report."""
        self.reports = applied(self.reports, self.config.chargers()[cp], (cp, slot, status, at))

    def _resolve_maybe(self, computed: dict[str, str]) -> None:
        """Reports in flight at a SIGKILL that the chargers did not send again were kept by the
        bridge or not: adopt the outcome that explains what it computes (if any does)."""
        maybe, self.maybe = self.maybe, []
        for mask in range(2 ** len(maybe)):
            reports = self.reports
            for n, (evses, said) in enumerate(maybe):
                if mask >> n & 1:
                    reports = applied(reports, evses, said)
            if self.expected(reports) == computed:
                self.reports = reports
                self.trace[-1] += f" (kept {bin(mask)} of the reports in flight)"
                return
        raise AssertionError(
            f"the bridge computes {computed}: no outcome of the reports in flight explains it"
        )

    # -- the bridge --------------------------------------------------------------------------------
    async def start(self) -> None:
        config = self._write_config(scheduled=self.rng.random() < 0.5)
        self.bridge = await BridgeProcess(config).start()
        if self.api is not None:
            await self.api.aclose()
        self.api = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.bridge.ops_port}", timeout=5, headers=READ_AUTH
        )
        self.trace.append(f"   started ({self.config.describe()})")

    async def shutdown(self) -> None:
        await self._disconnect_all()
        proc = self.bridge.proc if self.bridge is not None else None
        if self.bridge is not None and proc is not None and proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.bridge.terminate()
        if self.api is not None:
            await self.api.aclose()

    def _write_config(self, *, scheduled: bool) -> Path:
        fullload: dict[str, Any] = {"enabled": False, "request_timeout": 1.0}
        if scheduled:  # a "daily" fullLoad due a few seconds from now
            due = datetime.now(UTC) + timedelta(seconds=self.rng.uniform(1.5, 4.0))
            fullload = {"enabled": True, "time": due.strftime("%H:%M:%S"), "timezone": "UTC",
                        "request_timeout": 1.0}  # fmt: skip
        settings: dict[str, Any] = {
            "ocpp": {
                "host": "127.0.0.1",
                "port": 0,
                "offline_grace": 3600,
                "heartbeat_interval": 300,
            },
            "oicp": {
                "base_url": self.hub.base_url,
                "operator_id": OPERATOR,
                "request_timeout": REQUEST_TIMEOUT,
            },
            # A longer group commit widens the moment in which a push is out before the
            # report it carries is on disk (a SIGKILL then must not leave the hub wrong).
            "state": {
                "database": self.tmp / "state.db",
                "group_commit_ms": self.rng.choice([2, 2, 30]),
            },
            "delivery": {
                "rate_limit_per_minute": 60000,
                "retry_initial": 0.05,
                "retry_max": 0.4,
                "pause_retry": 0.3,
                "shutdown_timeout": 1,
            },
            "fullload": fullload,
            "status": {"overrides": OVERRIDES[self.config.overrides]},
            "ops": {"host": "127.0.0.1", "port": 0},
            "api": {"tokens": [{"name": "walk", "hash": hash_token(READ_TOKEN), "scope": "read"}]},
            "log": {"level": "INFO"},
            "chargers": {cp: {"evses": evses} for cp, evses in self.config.chargers().items()},
        }
        return write_config(self.tmp / "bridge.yaml", settings)

    def _maybe_change_config(self) -> None:
        if self.rng.random() < 0.6:
            what = self.rng.choice(["swap", "remove", "overrides"])
            if what == "swap":
                self.config.swapped = not self.config.swapped
            elif what == "remove":
                self.config.removed = not self.config.removed
            else:
                self.config.overrides = (self.config.overrides + 1) % len(OVERRIDES)
            self.trace[-1] += f" config: {what}"

    async def _delivery(self) -> dict[str, Any]:
        assert self.api is not None
        data: dict[str, Any] = (await self.api.get("/api/v1/delivery")).json()["data"]
        return data

    async def _bridge_evses(self) -> dict[str, dict[str, Any]]:
        assert self.api is not None
        items = (await self.api.get("/api/v1/evses", params={"limit": 1000})).json()["data"]
        return {item["evse_id"]: item for item in items}

    # -- chargers ----------------------------------------------------------------------------------
    async def connected(self, cp: str) -> RawCharger:
        charger = self.chargers.get(cp)
        if charger is None or charger.ws.close_code is not None:
            assert self.bridge is not None
            charger = await RawCharger.connect(self.bridge.ocpp_port, cp, VERSIONS[cp])
            self.chargers[cp] = charger
        return charger

    async def _disconnect_all(self) -> None:
        chargers, self.chargers = self.chargers, {}
        for charger in chargers.values():
            await _close(charger)

    async def _call(self, charger: RawCharger, frame: list[Any]) -> str:
        self._call_ids += 1
        frame[1] = f"w{self._call_ids}"
        await charger.ws.send(json.dumps(frame))
        answer = json.loads(await asyncio.wait_for(charger.ws.recv(), 10))
        assert answer[0] == 3 and answer[1] == frame[1], f"unexpected answer {answer}"
        return "ok"

    def _report_frame(self, cp: str) -> tuple[list[Any], tuple[int, int], OcppStatus, float]:
        """A random report of charger ``cp``: the CALL, its slot, status and report time."""
        rng = self.rng
        now = time.time()
        if VERSIONS[cp] == "1.6":
            key = rng.choice([0, 1, 2, 3, 7] if cp == "M16B" else [0, 1, 2, 7])
            status = rng.choice(STATION_16 if key == 0 else STATUSES_16)
            at_text = self._timestamp(cp, (key, key), now, optional=True)
            payload: dict[str, Any] = {"connectorId": key, "errorCode": "NoError", "status": status}
            if at_text is not None:
                payload["timestamp"] = at_text
            frame = [2, "", "StatusNotification", payload]
        else:
            kind = rng.choice(["status", "status", "Connector", "EVSE", "ChargingStation"])
            status = rng.choice(STATUSES_201)
            key = 0 if kind == "ChargingStation" else rng.choice([1, 2, 2, 5])
            connector = 1 if kind in ("status", "Connector") else 0
            at_text = self._timestamp(cp, (key, connector), now, optional=False)
            assert at_text is not None
            if kind == "status":
                payload = {"timestamp": at_text, "connectorStatus": status, "evseId": key,
                           "connectorId": 1}  # fmt: skip
                frame = [2, "", "StatusNotification", payload]
            else:
                frame = [2, "", "NotifyEvent", _availability(kind, key, status, at_text)]
        _, slot, parsed_status, at = _parse_frame(cp, frame, now)
        return frame, slot, parsed_status, at

    def _timestamp(
        self, cp: str, slot: tuple[int, int], now: float, *, optional: bool
    ) -> str | None:
        """In order (now), missing (1.6: counts as the moment it arrives), out of order (older
        than what is held) or between the held one and now; never within a few hundred ms of
        the held one, so that the bridge's and the model's clocks cannot disagree."""
        held = self.reports.get((cp, *slot))
        kinds = ["now"] * 6 + ["old", "between"] + (["none"] if optional else [])
        kind = self.rng.choice(kinds)
        if kind == "none":
            return None
        if kind == "old" and held is not None:
            return _iso(held.at - self.rng.uniform(0.5, 120))
        if kind == "between" and held is not None and now - held.at > 1.0:
            return _iso(held.at + (now - held.at) / 2)
        return _iso(now)


def applied(
    reports: dict[tuple[str, int, int], Report], evses: dict[int, str], said: Said
) -> dict[tuple[str, int, int], Report]:
    """The newest reports after one more of a charger whose EVSEs were ``evses``."""
    cp, (key, connector), status, at = said
    held = reports.get((cp, key, connector))
    if held is not None and at < held.at:
        return reports  # older than what is held: changes nothing
    if key != 0 and key not in evses:
        return reports  # no EvseID: answered, not stored
    reports = dict(reports)
    if VERSIONS[cp] == "2.0.1" and connector != 0 and status not in STATION_DOWN:
        for level in ((cp, 0, 0), (cp, key, 0)):  # an operative connector ends an outage
            down = reports.get(level)
            if down is not None and down.status in STATION_DOWN and down.at <= at:
                reports[level] = Report(at, OcppStatus.AVAILABLE)
    reports[(cp, key, connector)] = Report(at, status)
    return reports


def _parse_frame(
    cp: str, frame: list[Any], now: float
) -> tuple[str, tuple[int, int], OcppStatus, float]:
    action, payload = frame[2], frame[3]
    if action == "StatusNotification" and VERSIONS[cp] == "1.6":
        slot = (payload["connectorId"], payload["connectorId"])
        status, text = payload["status"], payload.get("timestamp")
    elif action == "StatusNotification":
        slot = (payload["evseId"], payload["connectorId"])
        status, text = payload["connectorStatus"], payload["timestamp"]
    else:
        event = payload["eventData"][0]
        component = event["component"]
        name = component["name"]
        if name == "ChargingStation":
            slot = (0, 0)
        else:
            slot = (component["evse"]["id"], 1 if name == "Connector" else 0)
        status, text = event["actualValue"], event["timestamp"]
    at = now if text is None else min(datetime.fromisoformat(text).timestamp(), now)
    return cp, slot, OcppStatus(status), at


def _availability(component: str, key: int, status: str, at: str) -> dict[str, Any]:
    """A NotifyEvent payload: AvailabilityState of a Connector, an EVSE or the station."""
    described: dict[str, Any] = {"name": component}
    if component == "Connector":
        described["evse"] = {"id": key, "connectorId": 1}
    elif component == "EVSE":
        described["evse"] = {"id": key}
    event = {
        "eventId": 1,
        "timestamp": at,
        "trigger": "Delta",
        "actualValue": status,
        "component": described,
        "eventNotificationType": "HardWiredNotification",
        "variable": {"name": "AvailabilityState"},
    }
    return {"generatedAt": at, "seqNo": 0, "eventData": [event]}


def _iso(epoch: float) -> str:
    when = datetime.fromtimestamp(epoch, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _close(charger: RawCharger) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(charger.close(), 2)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return {**env, "PYTHONUNBUFFERED": "1"}
