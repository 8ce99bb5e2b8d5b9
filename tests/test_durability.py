"""Never lose a status: hub outages, crashes, restarts, signals (real processes and sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import websockets

from bridge.app import Bridge
from bridge.hubsim import HubSimulator
from bridge.status.table import OcppStatus, effective_table
from tests.conftest import OPERATOR, charger, eventually, pushes
from tests.procs import BridgeProcess, RawCharger, write_config

TABLE = effective_table()
STATUSES_16 = [
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEV",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
]
STATUSES_201 = ["Available", "Occupied", "Reserved", "Unavailable", "Faulted"]

# Four chargers, two of each version, two EVSEs each (one connector per EVSE).
FLEET = {f"CP{n}": {"evses": {1: f"DE*ABC*E{n}*1", 2: f"DE*ABC*E{n}*2"}} for n in range(1, 5)}
VERSION = {"CP1": "1.6", "CP2": "2.0.1", "CP3": "1.6", "CP4": "2.0.1"}


def process_config(
    tmp_path: Path, hub: HubSimulator, backend: dict[str, Any] | None = None, **extra: Any
) -> Path:
    settings: dict[str, Any] = {
        "ocpp": {"host": "127.0.0.1", "port": 0, "offline_grace": 600},
        "oicp": {"base_url": hub.base_url, "operator_id": OPERATOR, "request_timeout": 0.5},
        "state": {"database": tmp_path / "state.db"},
        "delivery": {
            "rate_limit_per_minute": 60000,
            "retry_initial": 0.05,
            "retry_max": 0.4,
            "pause_retry": 0.3,
            "shutdown_timeout": 3,
        },
        "fullload": {"enabled": False},
        "ops": {"enabled": False},
        "log": {"level": "INFO"},
        "chargers": FLEET,
    }
    if backend is not None and "url" in backend:  # one process on PostgreSQL: a short lease
        settings["state"] = {**backend, "database": tmp_path / "state.db"}
        settings["replication"] = {"lease_ttl": 2, "acquire_interval": 0.2, "push_timeout": 0.5,
                                   "replica_timeout": 6}  # fmt: skip
    for key, value in extra.items():
        settings[key] = {**settings.get(key, {}), **value}
    return write_config(tmp_path / "bridge.yaml", settings)


class Fleet:
    """Chargers that remember what they sent and what the bridge confirmed."""

    def __init__(self) -> None:
        self.chargers: dict[str, RawCharger] = {}
        self.confirmed: dict[str, str] = {}  # EvseID -> last OCPP status the bridge confirmed
        self.attempted: dict[str, str] = {}  # EvseID -> last OCPP status sent (maybe unanswered)

    async def connect(self, port: int) -> None:
        for cp_id, version in VERSION.items():
            self.chargers[cp_id] = await RawCharger.connect(port, cp_id, version)

    async def burst(self, count: int, seed: int, stop_on_error: bool = False) -> int:
        """Each charger sends ``count`` random statuses as fast as the bridge answers."""
        rng = random.Random(seed)

        async def one(cp_id: str, charger: RawCharger) -> int:
            sent = 0
            choices = STATUSES_16 if charger.version == "1.6" else STATUSES_201
            for _ in range(count):
                key = rng.choice([1, 2])
                status = rng.choice(choices)
                evse_id = FLEET[cp_id]["evses"][key]
                self.attempted[evse_id] = status
                try:
                    await charger.status(key, status)
                except (websockets.ConnectionClosed, OSError, TimeoutError):
                    if stop_on_error:
                        return sent
                    raise
                self.confirmed[evse_id] = status
                sent += 1
            return sent

        done = await asyncio.gather(*(one(c, ch) for c, ch in self.chargers.items()))
        return sum(done)

    async def close(self) -> None:
        for raw in self.chargers.values():
            with contextlib.suppress(Exception):
                await raw.close()

    def truth(self, statuses: dict[str, str] | None = None) -> dict[str, str]:
        return {e: TABLE[OcppStatus(s)].value for e, s in (statuses or self.confirmed).items()}


def hub_matches(hub: HubSimulator, fleet: Fleet) -> bool:
    """The hub holds, for every EVSE, the last confirmed status (or the one in flight at a crash,
    which the bridge may have stored before it could answer)."""
    confirmed, attempted = fleet.truth(fleet.confirmed), fleet.truth(fleet.attempted)
    return set(hub.state) == set(attempted) and all(
        status in (confirmed.get(evse_id), attempted[evse_id])
        for evse_id, status in hub.state.items()
    )


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["503", "timeout", "429"])
async def test_hub_outage_during_burst_loses_nothing_and_coalesces(
    tmp_path: Path, hub: HubSimulator, fault: str
) -> None:
    if fault == "503":
        hub.faults.fail_http(503)
    elif fault == "timeout":
        hub.faults.hang(2.0)  # longer than the bridge's request_timeout of 0.5 s
    else:
        hub.faults.fail_http(429, retry_after=1)
    bridge = await BridgeProcess(process_config(tmp_path, hub)).start()
    fleet = Fleet()
    try:
        await fleet.connect(bridge.ocpp_port)
        sent = await fleet.burst(25, seed=7)
        assert sent == 100  # every status confirmed while the hub was failing
        await asyncio.sleep(0.5)
        failed_attempts = len(hub.received)
        assert failed_attempts >= 1 and hub.state == {}
        hub.faults.clear()
        truth = fleet.truth()
        await eventually(lambda: hub.state == truth, within=20)
    finally:
        await fleet.close()
        assert await bridge.terminate() == 0
    ok = [p for p in hub.received if p.code == "000"]
    # Coalesced: after the outage each EVSE got exactly one push, with its newest status.
    assert len(ok) == len(truth)
    assert all(p.action == "insert" and len(p.records) == 1 for p in ok)
    assert hub.max_in_flight == 1
    assert bridge.named("push.retry")


@pytest.mark.slow
async def test_sigkill_during_burst_then_restart(
    tmp_path: Path, hub: HubSimulator, backend: dict[str, Any]
) -> None:
    config = process_config(tmp_path, hub, backend)
    hub.latency = 0.01  # keep a queue so the kill finds pushes pending
    first = await BridgeProcess(config).start()
    fleet = Fleet()
    await fleet.connect(first.ocpp_port)
    burst = asyncio.create_task(fleet.burst(200, seed=11, stop_on_error=True))
    await eventually(lambda: len(fleet.confirmed) >= 8 and len(hub.received) >= 3, within=30)
    await asyncio.sleep(0.2)
    assert await first.kill() == -9
    await burst
    await fleet.close()
    second = await BridgeProcess(config).start()
    try:
        await eventually(lambda: hub_matches(hub, fleet), within=40)
        await asyncio.sleep(0.3)  # nothing more arrives
        assert hub_matches(hub, fleet), (hub.state, fleet.confirmed, fleet.attempted)
        assert hub.max_in_flight == 1
    finally:
        assert await second.terminate() == 0


@pytest.mark.slow
async def test_sigterm_during_traffic_exits_0_and_resumes_without_duplicates(
    tmp_path: Path, hub: HubSimulator, backend: dict[str, Any]
) -> None:
    config = process_config(tmp_path, hub, backend)
    hub.latency = 0.01
    first = await BridgeProcess(config).start()
    fleet = Fleet()
    await fleet.connect(first.ocpp_port)
    burst = asyncio.create_task(fleet.burst(200, seed=3, stop_on_error=True))
    await eventually(lambda: len(hub.received) >= 5, within=30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await first.terminate() == 0
    assert loop.time() - started < 10
    await burst
    await fleet.close()
    assert first.named("bridge.stopped")
    held = dict(hub.state)
    before = len(hub.received)
    second = await BridgeProcess(config).start()
    try:
        await eventually(lambda: hub_matches(hub, fleet), within=40)
        await asyncio.sleep(0.3)
        assert hub_matches(hub, fleet), (hub.state, fleet.confirmed, fleet.attempted)
    finally:
        assert await second.terminate() == 0
    # No duplicate: nothing sent after the restart repeats what the hub already held.
    for push in hub.received[before:]:
        for evse_id, status in push.records:
            assert held.get(evse_id) != status, (evse_id, status)


async def test_update_of_forgotten_evse_becomes_insert(bridge: Bridge, hub: HubSimulator) -> None:
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await eventually(lambda: hub.state.get("DE*ABC*E16*1") == "Available")
        assert hub.faults.forget("DE*ABC*E16*1")
        await cp.status(1, "Charging")
        await eventually(lambda: hub.state.get("DE*ABC*E16*1") == "Occupied")
    sent = [(p.action, p.code) for p in hub.received]
    assert sent == [("insert", "000"), ("update", "022"), ("insert", "000")]


async def test_configuration_error_pauses_keeps_everything_and_drains(
    bridge: Bridge, hub: HubSimulator
) -> None:
    hub.faults.answer_code("017")
    assert bridge.worker is not None
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp16:
        await cp16.status(1, "Charging")
        await cp16.status(2, "Reserved")
        await eventually(lambda: bridge.worker is not None and bridge.worker.paused_reason)
        async with charger(bridge.ocpp.port, "CP201", "2.0.1") as cp201:
            await cp201.status(1, "Faulted", evse=1)
            await asyncio.sleep(0.5)  # several slow retries, still refused
            assert bridge.worker.paused_reason is not None and "017" in bridge.worker.paused_reason
            assert len(bridge.outbox) == 3 and hub.state == {}
            assert all(p.code == "017" for p in hub.received)
            hub.faults.clear()
            await eventually(
                lambda: (
                    hub.state
                    == {
                        "DE*ABC*E16*1": "Occupied",
                        "DE*ABC*E16*2": "Reserved",
                        "DE*ABC*E201*1": "OutOfService",
                    }
                )
            )
    assert bridge.worker.paused_reason is None
    assert len(bridge.outbox) == 0


async def test_data_error_parks_one_evse_without_blocking_others(
    bridge: Bridge, hub: HubSimulator
) -> None:
    hub.faults.answer_code("018", count=1)
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")  # refused with 018: parked
        await cp.status(2, "Available")
        await eventually(lambda: hub.state == {"DE*ABC*E16*2": "Available"})
        assert bridge.outbox.rows["DE*ABC*E16*1"].parked_code == "018"
        await cp.status(1, "Charging")  # a new status is a new try
        await eventually(lambda: hub.state.get("DE*ABC*E16*1") == "Occupied")


@pytest.mark.parametrize("offline_status", ["Unknown", "OutOfService"])
async def test_offline_charger_becomes_unknown_after_grace(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator, offline_status: str
) -> None:
    overrides = {} if offline_status == "Unknown" else {"offline_status": offline_status}
    bridge = await make_bridge(ocpp={"offline_grace": 0.3, **overrides})
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await cp.status(2, "Charging")
        await eventually(lambda: len(hub.state) == 2)
    await eventually(
        lambda: hub.state == {"DE*ABC*E16*1": offline_status, "DE*ABC*E16*2": offline_status}
    )
    # Back online: its last statuses show again, and fresh reports update them.
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await eventually(
            lambda: hub.state == {"DE*ABC*E16*1": "Available", "DE*ABC*E16*2": "Occupied"}
        )
        await cp.status(2, "Available")
        await eventually(lambda: hub.state["DE*ABC*E16*2"] == "Available")


async def test_reconnect_within_grace_pushes_nothing(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator
) -> None:
    bridge = await make_bridge(ocpp={"offline_grace": 1.0})
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await eventually(lambda: len(pushes(hub)) == 1)
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await asyncio.sleep(1.3)  # past the grace of the first connection
        await cp.status(1, "Available")
    assert len(hub.received) == 1


async def test_second_connection_replaces_first(bridge: Bridge, hub: HubSimulator) -> None:
    first = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await first.status(1, "Available")
    second = await RawCharger.connect(bridge.ocpp.port, "CP16")
    await second.status(1, "Charging")
    await eventually(lambda: first.ws.close_code is not None)
    assert first.ws.close_code == 1000
    await eventually(lambda: hub.state.get("DE*ABC*E16*1") == "Occupied")
    assert bridge.ingest.charge_points["CP16"].connected
    await second.close()


async def test_change_back_to_what_the_hub_has_is_not_pushed(
    bridge: Bridge, hub: HubSimulator
) -> None:
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await eventually(lambda: hub.state.get("DE*ABC*E16*1") == "Available")
        hub.faults.fail_http(503)  # hold pushes back while the EVSE changes and changes back
        await cp.status(1, "Charging")
        await eventually(lambda: len(hub.received) >= 2)
        assert bridge.outbox.is_pending("DE*ABC*E16*1")
        await cp.status(1, "Available")
        assert not bridge.outbox.is_pending("DE*ABC*E16*1")
        hub.faults.clear()
        await cp.status(2, "Reserved")  # a later change still goes through
        await eventually(lambda: hub.state.get("DE*ABC*E16*2") == "Reserved")
    assert [p for p in pushes(hub) if p[1] == "DE*ABC*E16*1"] == [
        ("insert", "DE*ABC*E16*1", "Available")
    ]
