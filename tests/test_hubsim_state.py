"""The hub simulator keeps its records in a file when asked, so a restart of both sides agrees."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from bridge.app import Bridge
from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.hubsim import HubSimulator
from bridge.hubsim.statefile import StateFile
from bridge.oicp.models import ActionType, build_status_request
from bridge.status.table import OicpStatus
from tests.conftest import Events, charger, eventually, pushes, settings_for
from tests.oicp_schema import evse_data_record, validate_push_body

OP = "DE*ABC"
STATUS_PATH = "/api/oicp/evsepush/v21/operators/DE*ABC/status-records"
DATA_PATH = "/api/oicp/evsepush/v23/operators/DE*ABC/data-records"
NETWORK_PATH = "/api/evsenetwork/v1/operators/DE*ABC/network"


async def post(sim: HubSimulator, path: str, body: dict[str, object]) -> str:
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=5) as http:
        response = await http.post(path, json=body)
    code: str = response.json()["StatusCode"]["Code"]
    return code


def status_body(action: ActionType, records: list[tuple[str, OicpStatus]]) -> dict[str, object]:
    return build_status_request(action, OP, "ABC", records).model_dump(mode="json")


async def test_records_survive_a_restart_of_the_simulator(tmp_path: Path) -> None:
    path = tmp_path / "sim" / "hub-sim.json"
    async with HubSimulator(state_file=StateFile(path), body_validator=validate_push_body) as sim:
        insert = status_body(ActionType.INSERT, [("DE*ABC*E1", OicpStatus.AVAILABLE)])
        assert await post(sim, STATUS_PATH, insert) == "000"
        records = [evse_data_record("DE*ABC*E1")]
        data = {"ActionType": "fullLoad", "OperatorEvseData": {
            "OperatorID": OP, "OperatorName": "ABC", "EvseDataRecord": records}}  # fmt: skip
        assert await post(sim, DATA_PATH, data) == "000"
        async with httpx.AsyncClient(base_url=sim.base_url, timeout=5) as http:
            assigned = await http.post(NETWORK_PATH, json={"NetworkName": "N",
                "GroupsAssignments": [{"GroupName": "G", "Evses": ["DE*ABC*E1"]}]})  # fmt: skip
            assert assigned.status_code == 200
        sim.networks.set_state(OP, "N", "active")
        # written shortly after the change, while still running (a kill -9 loses at most that)
        await eventually(path.is_file)
    saved = json.loads(path.read_text())
    assert saved["status"] == {OP: {"DE*ABC*E1": "Available"}}

    async with HubSimulator(state_file=StateFile(path)) as again:
        assert again.state == {"DE*ABC*E1": "Available"}
        assert set(again.data_state) == {"DE*ABC*E1"}
        assert again.networks.describe() == {
            OP: {"N": {"state": "active", "groups": {"DE*ABC*E1": "G"}}}
        }
        # the hub holds the record: an update is accepted, an insert is refused
        update = status_body(ActionType.UPDATE, [("DE*ABC*E1", OicpStatus.OCCUPIED)])
        assert await post(again, STATUS_PATH, update) == "000"
        insert = status_body(ActionType.INSERT, [("DE*ABC*E1", OicpStatus.AVAILABLE)])
        assert await post(again, STATUS_PATH, insert) == "022"
        again.reset()  # /sim/reset forgets everything, also in the file
    assert json.loads(path.read_text())["status"] == {}


async def test_without_a_state_file_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with HubSimulator() as sim:
        insert = status_body(ActionType.INSERT, [("DE*ABC*E1", OicpStatus.AVAILABLE)])
        assert await post(sim, STATUS_PATH, insert) == "000"
    assert sim.state_file is None and not any(tmp_path.iterdir())  # noqa: ASYNC240


async def restart_scenario(
    tmp_path: Path, events: Events, *, state_file: StateFile | None
) -> list[str]:
    """Bridge and simulator both restart; what the bridge's next push per EVSE meets."""
    answers = []
    for status in ("Available", "Charging"):
        async with HubSimulator(state_file=state_file) as sim:
            settings: Settings = settings_for(tmp_path, sim.base_url)
            bridge = Bridge(settings)
            await bridge.start()
            try:
                async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
                    await cp.status(1, status)
                    await eventually(lambda b=bridge, s=sim: not b.outbox and len(pushes(s)) == 1)
                answers += [f"{p.action}:{p.code}" for p in sim.received]
            finally:
                await bridge.stop()
    return answers


async def test_bridge_and_simulator_agree_after_a_restart(tmp_path: Path, events: Events) -> None:
    """The bridge remembers the hub holds the EVSE; a simulator with a state file does too."""
    kept = await restart_scenario(
        tmp_path / "kept", events, state_file=StateFile(tmp_path / "hub-sim.json")
    )
    assert kept == ["insert:000", "update:000"]
    assert events.named("push.flip") == []
    # Without the file the restarted simulator has forgotten it: the update meets 022 first.
    forgotten = await restart_scenario(tmp_path / "forgotten", events, state_file=None)
    assert forgotten == ["insert:000", "update:022", "insert:000"]
    assert len(events.named("push.flip")) == 1


def test_a_broken_state_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "hub-sim.json"
    path.write_text("{ not json")
    with pytest.raises(ConfigError) as raised:
        StateFile(path).load()
    assert raised.value.field == "hub_sim.state_file" and str(path) in str(raised.value)
    assert "delete the file" in str(raised.value)

    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "hub-sim", "--port", "0", "--state-file", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert f"--state-file: cannot read {path}" in proc.stderr


async def test_the_embedded_simulator_takes_the_setting(
    make_bridge: Callable[..., Awaitable[Bridge]], tmp_path: Path
) -> None:
    path = tmp_path / "embedded.json"
    bridge = await make_bridge(hub_sim={"embedded": True, "port": 0, "state_file": path})
    assert bridge.hub_sim is not None and bridge.hub_sim.state_file is not None
    assert bridge.hub_sim.state_file.path == path
    await bridge.stop()
    assert json.loads(path.read_text()) == {"version": 1, "status": {}, "data": {}}
