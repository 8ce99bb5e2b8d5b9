"""GET /api/v2/data-quality over real HTTP against a running bridge, and `data-quality` CLI."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from bridge.app import Bridge
from bridge.cli import main
from bridge.config import Settings
from bridge.ops.quality import data_quality
from tests.conftest import AUTH, READ_AUTH
from tests.test_catalog_api import CONNECTOR, LOCATION, ok, refused, station

FACTS = {"hotline_phone": "+4930123456", "accessibility": "Free publicly accessible",
         "payment_options": ["Contract"], "authentication_modes": ["NFC RFID Classic"],
         "calibration_law": "Local"}  # fmt: skip


async def start(make_bridge: Callable[..., Awaitable[Bridge]]) -> tuple[Bridge, str]:
    bridge = await make_bridge(catalog={"operator_defaults": FACTS})
    assert bridge.ops_server is not None
    return bridge, f"http://127.0.0.1:{bridge.ops_server.port}/api/v2"


async def fill(api: httpx.AsyncClient) -> None:
    """Besides the 4 EVSEs of the configuration file (no location, no plugs: errors):
    LOC-1 is complete and right; LOC-2 has no postal code and swapped coordinates; CP-B's
    connector gives its voltage line-to-line (400 V on AC_3_PHASE)."""
    full = {**LOCATION, "parking_type": "PARKING_LOT", "energy_mix": {"is_green_energy": True},
            "opening_times": {"twentyfourseven": True}}  # fmt: skip
    await ok(api.post("/locations", json=full))
    await ok(api.post("/locations", json={
        **full, "id": "LOC-2", "postal_code": None,
        "coordinates": {"latitude": "13.404954", "longitude": "52.520008"}}))  # fmt: skip
    good = station("CP-A", evse_id="DE*ABC*E900*1")
    good["evses"][0].update(floor_level="0", capabilities=["RFID_READER"])
    await ok(api.post("/chargestations", json=good))
    bad = station("CP-B", evse_id="DE*ABC*E901*1", location_id="LOC-2")
    bad["evses"][0]["connectors"] = [{**CONNECTOR, "max_voltage": 400}]
    await ok(api.post("/chargestations", json=bad))


async def test_report_over_http(make_bridge: Callable[..., Awaitable[Bridge]]) -> None:
    _, base = await start(make_bridge)
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=READ_AUTH) as api:
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH) as writer:
            await fill(writer)
        data, response = await ok(api.get("/data-quality"))
        assert response.headers["X-Total-Count"] == "6"
        by_id = {e["evse_id"]: e for e in data["evses"]}
        good, bad = by_id["DE*ABC*E900*1"], by_id["DE*ABC*E901*1"]
        assert good["findings"] == [] and good["score"] == 100 and good["missing"] == []
        found = {(f["code"], f["field"], f["severity"]) for f in bad["findings"]}
        assert found == {
            ("postal_code_empty", "location.postal_code", "warning"),
            ("coordinates_swapped", "location.coordinates", "warning"),
            ("voltage_line_to_line", "evse.connectors[0].max_voltage", "warning"),
            ("power_mismatch", "evse.connectors[0].max_electric_power", "warning"),
        }  # fmt: skip
        assert bad["missing"] == ["location.postal_code", "evse.floor_level", "evse.capabilities"]
        summary = data["summary"]
        assert summary["evses"] == 6 and summary["evses_with_findings"] == 5
        assert summary["score_min"] == 0 and summary["worst"][4]["evse_id"] == "DE*ABC*E901*1"
        assert summary["findings_by_code"]["coordinates_swapped"] == 1
        assert summary["findings_by_code"]["location_missing"] == 4

        # Filters narrow the EVSEs, and the summary with them.
        data, _ = await ok(api.get("/data-quality", params={"code": "voltage_line_to_line"}))
        assert [e["evse_id"] for e in data["evses"]] == ["DE*ABC*E901*1"]
        assert data["summary"]["evses"] == 1
        for params in ({"location_id": "LOC-1"}, {"station_id": "CP-A"},
                       {"evse_id": "DE*ABC*E900*1"}):  # fmt: skip
            data, _ = await ok(api.get("/data-quality", params=params))
            assert [e["evse_id"] for e in data["evses"]] == ["DE*ABC*E900*1"], params
        data, _ = await ok(api.get("/data-quality", params={"severity": "error"}))
        assert {e["station_id"] for e in data["evses"]} == {"CP16", "CP201"}
        data, _ = await ok(api.get("/data-quality", params={"station_id": "CP-X"}))
        assert data["evses"] == [] and data["summary"]["score_mean"] is None

        # Paging as every list: one per page, a Link to the next.
        data, response = await ok(api.get("/data-quality", params={"limit": 1}))
        assert len(data["evses"]) == 1 and data["summary"]["evses"] == 6
        assert 'rel="next"' in response.headers["Link"] and "offset=1" in response.headers["Link"]

        # Bad parameters are refused by name.
        assert "code" in await refused(api.get("/data-quality", params={"code": "nonsense"}))
        assert "severity" in await refused(api.get("/data-quality", params={"severity": "x"}))
        assert "colour" in await refused(api.get("/data-quality", params={"colour": "red"}))
        r = await api.get("/data-quality", headers={"Authorization": "Token nope"})
        assert r.status_code == 401


async def test_fixing_the_data_clears_the_findings(
    make_bridge: Callable[..., Awaitable[Bridge]],
) -> None:
    _, base = await start(make_bridge)
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH) as api:
        await fill(api)
        await ok(api.patch("/locations/LOC-2", json={
            "postal_code": "10115",
            "coordinates": {"latitude": "52.520008", "longitude": "13.404954"}}))  # fmt: skip
        await ok(api.patch("/chargestations/CP-B", json={"evses": [
            {"uid": "CP-B-1", "evse_id": "DE*ABC*E901*1", "ocpp_ids": [1], "floor_level": "0",
             "capabilities": ["RFID_READER"], "connectors": [CONNECTOR]}]}))  # fmt: skip
        data, _ = await ok(api.get("/data-quality", params={"station_id": "CP-B"}))
        assert data["evses"][0]["findings"] == [] and data["summary"]["score_mean"] == 100


# -- the command ----------------------------------------------------------------------------------
async def test_command_reads_the_state_database(
    make_bridge: Callable[..., Awaitable[Bridge]],
) -> None:
    bridge, base = await start(make_bridge)
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH) as api:
        await fill(api)
    settings: Settings = bridge.settings
    out = io.StringIO()
    assert data_quality(settings, as_json=True, out=out) == 0
    document: dict[str, Any] = json.loads(out.getvalue())
    assert document["summary"]["evses"] == 6 and document["summary"]["evses_with_findings"] == 5
    out = io.StringIO()
    assert data_quality(settings, out=out) == 0
    text = out.getvalue()
    assert "DE*ABC*E901*1" in text and "voltage_line_to_line" in text
    assert "6 EVSEs, 5 with findings" in text
    mean = document["summary"]["score_mean"]
    assert data_quality(settings, fail_under=mean + 1, out=io.StringIO()) == 1
    assert data_quality(settings, fail_under=mean, out=io.StringIO()) == 0


def test_command_line(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"state: {{database: {tmp_path / 'state.db'}}}\n"
        "oicp: {operator_id: 'DE*ABC'}\n"
        "chargers: {CP1: {evses: {1: 'DE*ABC*E1*1'}}}\n"
    )
    # A station of the configuration file has no location and no plugs: errors, score 0.
    assert main(["data-quality", "-c", str(config), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["evses"][0]["evse_id"] == "DE*ABC*E1*1"
    assert {f["code"] for f in document["evses"][0]["findings"]} >= {"location_missing"}
    assert main(["data-quality", "-c", str(config), "--fail-under", "50"]) == 1
    assert "below --fail-under 50" in capsys.readouterr().err
