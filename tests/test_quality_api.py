"""GET /api/v2/data-quality over real HTTP against a running bridge, and `data-quality` CLI."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.app import Bridge
from bridge.catalog.quality import CODES, COUNTED, SCORE_BANDS, SEVERITY
from bridge.config import Settings
from bridge.ops.quality import data_quality
from tests.conftest import AUTH, READ_AUTH
from tests.test_catalog_api import CONNECTOR, LOCATION, ok, refused, station
from tests.test_ops_http import Scrape

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
        before, _ = await ok(api.get("/data-quality", params={"station_id": "CP-B"}))
        assert len(before["evses"][0]["findings"]) == 4  # kept per station until it changes
        await ok(api.patch("/locations/LOC-2", json={
            "postal_code": "10115",
            "coordinates": {"latitude": "52.520008", "longitude": "13.404954"}}))  # fmt: skip
        # A change of its location alone is seen at once.
        data, _ = await ok(api.get("/data-quality", params={"station_id": "CP-B"}))
        assert {f["code"] for f in data["evses"][0]["findings"]} == {
            "voltage_line_to_line", "power_mismatch"}  # fmt: skip
        await ok(api.patch("/chargestations/CP-B", json={"evses": [
            {"uid": "CP-B-1", "evse_id": "DE*ABC*E901*1", "ocpp_ids": [1], "floor_level": "0",
             "capabilities": ["RFID_READER"], "connectors": [CONNECTOR]}]}))  # fmt: skip
        data, _ = await ok(api.get("/data-quality", params={"station_id": "CP-B"}))
        assert data["evses"][0]["findings"] == [] and data["summary"]["score_mean"] == 100


# -- the report on /metrics ----------------------------------------------------------------------
async def metrics_and_report(api: httpx.AsyncClient) -> tuple[Scrape, dict[str, Any]]:
    """A scrape and the report right after it; the gauges must be the report in numbers."""
    response = await api.get("/metrics")  # the ops port's root
    assert response.status_code == 200
    scrape = Scrape(response.text)
    report, _ = await ok(api.get("/api/v2/data-quality", params={"limit": 1000}))
    evses, summary = report["evses"], report["summary"]
    assert scrape.value("bridge_evse_data_assessed") == summary["evses"] == len(evses)
    for code in CODES:  # each the X-Total-Count of the API's filter by the code
        _, r = await ok(api.get("/api/v2/data-quality", params={"code": code, "limit": 0}))
        value = scrape.value("bridge_evse_data_findings", severity=SEVERITY[code], code=code)
        assert value == int(r.headers["X-Total-Count"]), code
    for severity in ("error", "warning"):
        _, r = await ok(api.get("/api/v2/data-quality", params={"severity": severity,
                                                                  "limit": 0}))  # fmt: skip
        value = scrape.value("bridge_evse_data_evses_with_findings", severity=severity)
        assert value == int(r.headers["X-Total-Count"]), severity
    for field in COUNTED:
        value = scrape.value("bridge_evse_data_missing_fields", field=field)
        assert value == sum(field in e["missing"] for e in evses), field
    for low, high, band in SCORE_BANDS:
        value = scrape.value("bridge_evse_data_score_evses", score=band)
        assert value == sum(low <= e["score"] <= high for e in evses), band
    assert scrape.value("bridge_evse_data_score_min") == summary["score_min"]
    score_mean = scrape.value("bridge_evse_data_score_mean")
    assert score_mean is not None and round(score_mean, 1) == summary["score_mean"]
    completeness = scrape.value("bridge_evse_data_completeness_mean")
    assert completeness is not None and round(completeness, 1) == summary["completeness_mean"]
    return scrape, report


async def test_metrics_are_the_report_in_numbers_and_follow_catalog_changes(
    make_bridge: Callable[..., Awaitable[Bridge]],
) -> None:
    bridge, base = await start(make_bridge)
    root = base.removesuffix("/api/v2")
    async with httpx.AsyncClient(base_url=root, timeout=10, headers=AUTH) as api:
        async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH) as writer:
            await fill(writer)
        scrape, _ = await metrics_and_report(api)
        # The known problems of fill(): the file's 4 EVSEs (no location, no plugs) are errors,
        # CP-B's location and connector give it 4 warnings, CP-A is right.
        assert scrape.value("bridge_evse_data_findings", severity="error",
                            code="location_missing") == 4  # fmt: skip
        assert scrape.value("bridge_evse_data_evses_with_findings", severity="error") == 4
        assert scrape.value("bridge_evse_data_evses_with_findings", severity="warning") == 1
        for code in ("postal_code_empty", "coordinates_swapped", "voltage_line_to_line"):
            assert scrape.value("bridge_evse_data_findings", severity="warning", code=code) == 1
        assert scrape.value("bridge_evse_data_score_evses", score="100") == 1
        assert scrape.value("bridge_evse_data_score_min") == 0
        mean = scrape.value("bridge_evse_data_score_mean")

        # A scrape of an unchanged catalog makes nothing again.
        made = bridge.quality.made
        await metrics_and_report(api)
        assert bridge.quality.made == made

        # A live change through the management API: the next scrape shows it.
        kept_a = bridge.quality.kept["CP-A"]
        await ok(api.patch("/api/v2/locations/LOC-2", json={
            "postal_code": "10115",
            "coordinates": {"latitude": "52.520008", "longitude": "13.404954"}}))  # fmt: skip
        scrape, _ = await metrics_and_report(api)
        assert bridge.quality.made == made + 1
        assert bridge.quality.kept["CP-A"] is kept_a  # CP-A's location did not change
        for code in ("postal_code_empty", "coordinates_swapped"):
            assert scrape.value("bridge_evse_data_findings", severity="warning", code=code) == 0
        assert scrape.value("bridge_evse_data_findings", severity="warning",
                            code="voltage_line_to_line") == 1  # fmt: skip
        new_mean = scrape.value("bridge_evse_data_score_mean")
        assert mean is not None and new_mean is not None and new_mean > mean

        # A new station in stock whose only plug OICP does not know (GB/T) is an error more
        # (production refuses it: the hub would refuse its record); deprecating it takes it
        # out of the report again.
        gbt = station("CP-C", evse_id="DE*ABC*E902*1", deployment_state="stock")
        gbt["evses"][0]["connectors"] = [{**CONNECTOR, "standard": "GBT_AC"}]
        await ok(api.post("/api/v2/chargestations", json=gbt))
        scrape, _ = await metrics_and_report(api)
        assert scrape.value("bridge_evse_data_assessed") == 7
        assert scrape.value("bridge_evse_data_evses_with_findings", severity="error") == 5
        assert scrape.value("bridge_evse_data_findings", severity="warning",
                            code="no_oicp_plug") == 1  # fmt: skip
        await ok(api.patch("/api/v2/chargestations/CP-C", json={
            "deployment_state": "deprecated"}))  # fmt: skip
        # Two scrapes at once after the change share one run.
        made = bridge.quality.made
        await asyncio.gather(api.get("/metrics"), api.get("/metrics"))
        assert bridge.quality.made == made + 1
        scrape, _ = await metrics_and_report(api)
        assert scrape.value("bridge_evse_data_assessed") == 6
        assert scrape.value("bridge_evse_data_evses_with_findings", severity="error") == 4


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


def test_command_line(tmp_path: Path) -> None:
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"state: {{database: {tmp_path / 'state.db'}}}\n"
        "oicp: {operator_id: 'DE*ABC'}\n"
        "chargers: {CP1: {evses: {1: 'DE*ABC*E1*1'}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "bridge", "data-quality", "-c", str(config), *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)

    # A station of the configuration file has no location and no plugs: errors, score 0.
    done = run("--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["evses"][0]["evse_id"] == "DE*ABC*E1*1"
    assert {f["code"] for f in document["evses"][0]["findings"]} >= {"location_missing"}
    done = run("--fail-under", "50")
    assert done.returncode == 1 and "below --fail-under 50" in done.stderr
    assert "1 EVSEs, 1 with findings" in done.stdout


# -- values the hub would refuse are refused at the API, the field named --------------------------
async def test_values_the_hub_would_refuse_are_refused_by_field(
    make_bridge: Callable[..., Awaitable[Bridge]],
) -> None:
    bridge, base = await start(make_bridge)
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH) as api:
        for change, words in [
            ({"name": "N" * 151}, ["name", "150", "ChargingStationNames"]),
            ({"address": "B 12"}, ["address", "shorter than 2", "Street"]),
            ({"address": "   "}, ["address", "blank"]),
            ({"city": " "}, ["city", "blank"]),
        ]:  # fmt: skip
            message = await refused(api.post("/locations", json={**LOCATION, **change}))
            assert all(w in message for w in words), (change, message)
        assert not bridge.catalog.locations
        await ok(api.post("/locations", json={**LOCATION, "name": "N" * 150}))
        assert "address" in await refused(api.patch("/locations/LOC-1", json={"address": "X"}))

        two_phase = station("CP-2P", evse_id="DE*ABC*E902*1")
        two_phase["evses"][0]["connectors"] = [{**CONNECTOR, "power_type": "AC_2_PHASE",
                                                "max_electric_power": 14720}]  # fmt: skip
        message = await refused(api.post("/chargestations", json=two_phase))
        assert "evses[0].connectors[0].power_type" in message and "AC_2_PHASE" in message
        gbt = station("CP-GB", evse_id="DE*ABC*E903*1")
        gbt["evses"][0]["connectors"] = [{**CONNECTOR, "standard": "GBT_AC"}]
        message = await refused(api.post("/chargestations", json=gbt))
        assert "evses[0].connectors:" in message and "GBT_AC" in message
        # In stock the station is not shared yet: accepted, and refused on the way to the hub.
        await ok(api.post("/chargestations", json={**gbt, "deployment_state": "stock"}))
        message = await refused(
            api.patch("/chargestations/CP-GB", json={"deployment_state": "production"})
        )
        assert "evses[0].connectors" in message
        assert bridge.catalog.stations["CP-GB"].body.deployment_state.value == "stock"
        # One connector with an OICP plug is enough (the other is reported, not refused).
        gbt["evses"][0]["connectors"].append({**CONNECTOR, "id": "2"})
        await ok(api.put("/chargestations/CP-GB", json=gbt))
        data, _ = await ok(api.get("/data-quality", params={"station_id": "CP-GB"}))
        assert {f["code"] for f in data["evses"][0]["findings"]} == {"no_oicp_plug"}


async def test_a_failed_computation_is_tried_once_per_scrape(
    make_bridge: Callable[..., Awaitable[Bridge]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figures cannot be made (a bug, say): the scrape is answered with the other metrics
    after one try, not two, and the next scrape tries again."""
    from bridge.ops import quality_metrics

    bridge, base = await start(make_bridge)
    root = base.removesuffix("/api/v2")
    tries = 0

    def failing(*_: Any) -> Any:
        nonlocal tries
        tries += 1
        raise RuntimeError("cannot assess")

    monkeypatch.setattr(quality_metrics, "_figures", failing)
    async with httpx.AsyncClient(base_url=root, timeout=10, headers=AUTH) as api:
        first = await api.get("/metrics")
        assert first.status_code == 200 and "bridge_chargers_connected" in first.text
        assert tries == 1 and bridge.quality is not None and bridge.quality.made == 0
        monkeypatch.undo()
        second = await api.get("/metrics")
        assert tries == 1 and "bridge_evse_data_assessed" in second.text
        assert bridge.quality.made == 1
