"""The catalog across restarts and crashes, the file's chargers, and the CLI on a running bridge
(real processes, real sockets)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.typing import Subprotocol

from bridge.api.tokens import hash_token
from bridge.app import Bridge
from bridge.config import ChargerSettings, load_settings
from bridge.errors import ConfigError
from bridge.hubsim import HubSimulator
from bridge.status.table import OcpiStatus
from tests.conftest import (
    AUTH,
    OPERATOR,
    OPERATOR_FACTS,
    WRITE_TOKEN,
    eventually,
    pushes,
    settings_for,
)
from tests.procs import BridgeProcess, RawCharger, write_config
from tests.test_catalog_api import CONNECTOR, LOCATION, PASSWORD, station


async def test_catalog_survives_a_restart(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator
) -> None:
    first = await make_bridge()
    assert first.ops_server is not None
    async with httpx.AsyncClient(base_url=first.ops_server.api_url, headers=AUTH) as api:
        assert (await api.post("/api/v2/locations", json=LOCATION)).json()["status_code"] == 1000
        body = station(security_profile=1, password=PASSWORD)
        assert (await api.post("/api/v2/chargestations", json=body)).json()["status_code"] == 1000
    await first.stop()
    second = await make_bridge()
    entry = second.catalog.stations["CP-NEW"]
    assert entry.version == 1 and entry.password_hash is not None
    basic = base64.b64encode(f"CP-NEW:{PASSWORD}".encode()).decode()
    url = f"ws://127.0.0.1:{second.ocpp.port}/ocpp/CP-NEW"
    async with websockets.connect(
        url,
        subprotocols=[Subprotocol("ocpp1.6")],
        additional_headers={"Authorization": f"Basic {basic}"},
    ):
        pass  # logs in with the stored hash, no restart config needed
    assert second.catalog.locations["LOC-1"].version == 2  # not bumped by the restart


async def test_file_chargers_follow_the_file(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator, tmp_path: Path
) -> None:
    first = await make_bridge()
    assert first.catalog.stations["CP16"].source.value == "file"
    await first.stop()
    # CP201 left the file: its station becomes deprecated (readable), its EVSEs leave the hub.
    fewer = {"CP16": ChargerSettings(evses={1: "DE*ABC*E16*1"})}
    second = Bridge(settings_for(tmp_path, hub.base_url).model_copy(update={"chargers": fewer}))
    await second.start()
    cp201 = second.catalog.stations["CP201"]
    assert cp201.body.deployment_state.value == "deprecated" and cp201.version == 2
    cp16 = second.catalog.stations["CP16"]
    assert cp16.version == 2  # its EVSE 2 went away: kept as REMOVED
    assert [e.status for e in cp16.body.evses] == [None, OcpiStatus.REMOVED]
    assert not second.registry.knows("CP201")
    await second.stop()


async def test_api_station_id_in_the_file_is_a_configuration_error(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator
) -> None:
    first = await make_bridge()
    assert first.ops_server is not None
    async with httpx.AsyncClient(base_url=first.ops_server.api_url, headers=AUTH) as api:
        await api.post("/api/v2/locations", json=LOCATION)
        await api.post("/api/v2/chargestations", json=station("CP9", evse_id="DE*ABC*E9*1"))
    await first.stop()
    with pytest.raises(ConfigError, match=r"chargers\.CP9.*management API"):
        await make_bridge(chargers={"CP9": {"evses": {1: "DE*ABC*E9*2"}}})


def process_config(tmp_path: Path, hub: HubSimulator) -> Path:
    return write_config(tmp_path / "bridge.yaml", {
        "ocpp": {"host": "127.0.0.1", "port": 0, "offline_grace": 600},
        "oicp": {"base_url": hub.base_url, "operator_id": OPERATOR, "request_timeout": 0.5},
        "state": {"database": tmp_path / "state.db"},
        "delivery": {"rate_limit_per_minute": 60000, "retry_initial": 0.05, "retry_max": 0.3,
                     "pause_retry": 0.3},
        "fullload": {"enabled": False},
        "ops": {"host": "127.0.0.1", "port": 0},
        "api": {"tokens": [{"name": "crm", "hash": hash_token(WRITE_TOKEN), "scope": "write"}]},
        "catalog": {"operator_defaults": OPERATOR_FACTS},
        "chargers": {},
    })  # fmt: skip


def api_of(proc: BridgeProcess) -> str:
    started = proc.named("bridge.started")[-1]
    return f"http://127.0.0.1:{started['ops_port']}/api/v2"


@pytest.mark.slow
async def test_crash_in_the_middle_of_an_evse_id_change(tmp_path: Path, hub: HubSimulator) -> None:
    """kill -9 right after a new EvseID was confirmed, before the hub heard of it: after the
    restart the old record leaves the hub and the new one arrives, once."""
    config = process_config(tmp_path, hub)
    proc = await BridgeProcess(config).start()
    try:
        async with httpx.AsyncClient(base_url=api_of(proc), headers=AUTH, timeout=10) as api:
            await api.post("/locations", json=LOCATION)
            r = await api.post("/chargestations", json=station())
            assert r.json()["status_code"] == 1000
            cp = await RawCharger.connect(proc.ocpp_port, "CP-NEW")
            await cp.status(1, "Charging")
            await eventually(lambda: ("insert", "DE*ABC*E900*1", "Occupied") in pushes(hub))
            hub.faults.fail_http(503)  # from here the hub hears nothing
            data = r.json()["data"]
            data["evses"][0]["evse_id"] = "DE*ABC*E901*1"
            r = await api.put("/chargestations/CP-NEW", json=data)
            assert r.json()["status_code"] == 1000  # durable now
            await cp.close()
    finally:
        await proc.kill()
    assert hub.state == {"DE*ABC*E900*1": "Occupied"}
    hub.faults.clear()
    before = len(hub.received)
    proc = await BridgeProcess(config).start()
    try:
        await eventually(lambda: hub.state == {"DE*ABC*E901*1": "Occupied"}, within=10)
        await asyncio.sleep(0.3)  # nothing more follows
        after = hub.received[before:]
        assert [p.action for p in after if p.code == "000"].count("fullLoad") == 1
        new_pushes = [p for p in after if p.code == "000" and p.action != "fullLoad"
                      and p.endpoint == "status"
                      and any(e == "DE*ABC*E901*1" for e, _ in p.records)]  # fmt: skip
        assert len(new_pushes) <= 1
        assert hub.state == {"DE*ABC*E901*1": "Occupied"}
        # Its EVSE data moved along: the new EvseID's record is there, the old one deleted.
        await eventually(lambda: set(hub.data_state) == {"DE*ABC*E901*1"})
    finally:
        await proc.terminate()


@pytest.mark.slow
async def test_fullload_command_asks_the_running_bridge(tmp_path: Path, hub: HubSimulator) -> None:
    config = process_config(tmp_path, hub)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}

    async def cli(*args: str, token: str | None = WRITE_TOKEN) -> tuple[int, str, str]:
        extra = {"BRIDGE_API_TOKEN": token} if token else {}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.cli", *args, "-c", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**env, **extra},
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    bridge = await BridgeProcess(config).start()
    try:
        async with httpx.AsyncClient(base_url=api_of(bridge), headers=AUTH, timeout=10) as api:
            await api.post("/locations", json=LOCATION)
            await api.post("/chargestations", json=station())
        code, out, err = await cli("fullload", "--dry-run")
        assert code == 0, err
        assert json.loads(out)["OperatorEvseStatus"]["EvseStatusRecord"] == [
            {"EvseID": "DE*ABC*E900*1", "EvseStatus": "Unknown"}
        ]
        code, out, err = await cli("fullload", token=None)
        assert code == 1 and "BRIDGE_API_TOKEN" in err
        # A preview without a token reads the database (no lock, nothing written).
        code, out, err = await cli("fullload", "--dry-run", token=None)
        assert code == 0, err
        assert json.loads(out)["OperatorEvseStatus"]["EvseStatusRecord"] == [
            {"EvseID": "DE*ABC*E900*1", "EvseStatus": "Unknown"}
        ]
        code, out, err = await cli("fullload")
        assert code == 0, err
        assert "1 EVSE status records accepted" in out
        assert any(p.action == "fullLoad" for p in hub.received)
        code, out, err = await cli("catalog", "import", str(tmp_path / "none.json"))
        assert code == 1
    finally:
        await bridge.terminate()
    # Stopped: the commands work on the database directly.
    code, out, err = await cli("status")
    assert code == 0 and "DE*ABC*E900*1  CP-NEW" in out, out + err  # a station of the API
    export = tmp_path / "catalog.json"
    code, out, err = await cli("catalog", "export")
    assert code == 0, err
    document = json.loads(out)
    assert [s["id"] for s in document["charge_stations"]] == ["CP-NEW"]
    document["charge_stations"][0]["deployment_state"] = "stock"
    document["charge_stations"].append({**station("CP-2", evse_id="DE*ABC*E2*1")})
    export.write_text(json.dumps(document))
    code, out, err = await cli("catalog", "import", str(export), "--dry-run")
    assert code == 0, err
    assert "change station CP-NEW: deployment_state" in out and "create station CP-2" in out
    assert "nothing written" in out
    bad = json.loads(export.read_text())
    bad["charge_stations"][1]["evses"][0]["connectors"] = [{**CONNECTOR, "format": "PLUG"}]
    export.write_text(json.dumps(bad))
    code, out, err = await cli("catalog", "import", str(export))
    assert code == 2 and "charge_stations[1]" in err and "format" in err
    assert "nothing was imported" in err
    export.write_text(json.dumps(document))
    code, out, err = await cli("catalog", "import", str(export))
    assert code == 0, err
    settings = load_settings(config)
    check = Bridge(settings)
    check.load_state()
    assert check.catalog.stations["CP-NEW"].body.deployment_state.value == "stock"
    assert "CP-2" in check.catalog.stations
    check.store._db.close()  # type: ignore[union-attr]
    check.store._executor.shutdown()


async def test_check_config_names_a_station_owned_by_the_api(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator, tmp_path: Path
) -> None:
    from bridge.ops.check_config_cmd import check_settings

    first = await make_bridge()
    assert first.ops_server is not None
    async with httpx.AsyncClient(base_url=first.ops_server.api_url, headers=AUTH) as api:
        await api.post("/api/v2/locations", json=LOCATION)
        await api.post("/api/v2/chargestations", json=station("CP9", evse_id="DE*ABC*E9*1"))
    await first.stop()
    clash = settings_for(tmp_path, hub.base_url, chargers={"CP9": {"evses": {1: "DE*ABC*E9*2"}}})
    problems = check_settings(clash).problems
    assert any(p.startswith("chargers.CP9: ") and "management API" in p for p in problems)
    assert not any(
        "CP16" in p for p in check_settings(settings_for(tmp_path, hub.base_url)).problems
    )
