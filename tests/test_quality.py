"""The data-quality report as plain functions (no I/O): checks, per-EVSE report, summary."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.catalog.catalog import Catalog
from bridge.catalog.checks import check_record, split_street
from bridge.catalog.facts import OperatorFacts
from bridge.catalog.model import LocationBody, StationBody
from bridge.catalog.quality import (
    CODES,
    COUNTED,
    SEVERITY,
    Kept,
    Severity,
    assess,
    assess_evse,
    assess_kept,
    figures,
    report,
    stations_of,
    summarise,
)
from bridge.catalog.rules import SetUp

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
GUIDE = Path(__file__).parent / "data" / "guide_push_evse_data.json"
FACTS = OperatorFacts.model_validate({
    "hotline_phone": "+4930123456", "accessibility": "Free publicly accessible",
    "payment_options": ["Contract"], "authentication_modes": ["NFC RFID Classic", "REMOTE"],
    "calibration_law": "Local",
})  # fmt: skip
CONSISTENCY = {"power_mismatch", "voltage_line_to_line", "dc_on_ac_plug", "ac_on_dc_plug",
               "coordinates_zero", "coordinates_swapped", "coordinates_outside_country",
               "coordinates_out_of_range", "postal_code_empty", "street_too_short"}  # fmt: skip


def location(**extra: Any) -> LocationBody:
    body = {"id": "L1", "name": "Depot", "address": "Main Street 1", "city": "Berlin",
            "postal_code": "10115", "country": "DEU", "time_zone": "Europe/Berlin",
            "coordinates": {"latitude": "52.520008", "longitude": "13.404954"},
            "parking_type": "PARKING_LOT", "energy_mix": {"is_green_energy": True},
            "opening_times": {"twentyfourseven": True}}  # fmt: skip
    return LocationBody.model_validate({**body, **extra})


def connector(**extra: Any) -> dict[str, Any]:
    return {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET",
            "power_type": "AC_3_PHASE", "max_voltage": 230, "max_amperage": 32,
            "max_electric_power": 22000, **extra}  # fmt: skip


def station(*connectors: dict[str, Any], **evse: Any) -> StationBody:
    one = {"uid": "E1", "evse_id": "DE*ABC*E1*1", "ocpp_ids": [1], "floor_level": "0",
           "capabilities": ["RFID_READER"], "connectors": list(connectors) or [connector()],
           **evse}  # fmt: skip
    return StationBody.model_validate(
        {"id": "CP1", "location_id": "L1", "deployment_state": "production", "evses": [one]}
    )


def codes(
    body: StationBody, loc: LocationBody | None = None, facts: OperatorFacts = FACTS
) -> set[str]:
    result = assess_evse(body.evses[0], body, loc or location(), facts)
    found = {f.code for f in result.findings}
    assert found <= set(CODES)  # the API's code filter knows each
    # The metrics show each code with its one severity.
    assert all(f.severity is SEVERITY[f.code] for f in result.findings)
    return found


# -- the guide's example: its two data mistakes are flagged ---------------------------------------
def test_guide_record_flags_line_to_line_voltage_and_mode_4_on_a_type_2_outlet() -> None:
    record = json.loads(GUIDE.read_text())["OperatorEvseData"]["EvseDataRecord"][0]
    findings = {(f.code, f.field) for f in check_record(record)}
    assert ("voltage_line_to_line", "ChargingFacilities[0].Voltage") in findings
    assert ("dc_on_ac_plug", "ChargingFacilities[0]") in findings
    # 22 kW is what 230 V x 32 A x 3 give, not 480 V: the power disagrees as well.
    assert ("power_mismatch", "ChargingFacilities[0].Power") in findings
    message = next(f.message for f in check_record(record) if f.code == "dc_on_ac_plug")
    assert "Mode_4" in message and "Type 2 Outlet" in message
    # Corrected as OICP wants it, nothing is left.
    facility = record["ChargingFacilities"][0]
    facility.update(Voltage=230, ChargingModes=["Mode_3"])
    assert check_record(record) == []


def test_catalog_form_of_the_guide_example_is_flagged() -> None:
    """The same EVSE in the catalog: its Type 2 socket at 480 V on AC_3_PHASE, and a Type 2
    socket with DC power (the catalog's way to say Mode_4: the mode follows the power type)."""
    loc = location(address="EUREF CAMPUS 22", postal_code="10829",
                   coordinates={"latitude": "52.480495", "longitude": "13.356465"})  # fmt: skip
    body = station(connector(max_voltage=480), connector(id="2", power_type="DC",
                                                         max_electric_power=None))  # fmt: skip
    result = assess_evse(body.evses[0], body, loc, FACTS)
    found = {(f.code, f.field) for f in result.findings}
    assert ("voltage_line_to_line", "evse.connectors[0].max_voltage") in found
    assert ("dc_on_ac_plug", "evse.connectors[1].power_type") in found
    assert ("power_mismatch", "evse.connectors[0].max_electric_power") in found
    assert result.score < result.completeness


# -- each check -----------------------------------------------------------------------------------
def test_a_complete_consistent_evse_scores_100() -> None:
    body = station()
    result = assess_evse(body.evses[0], body, location(), FACTS)
    assert result.findings == [] and result.missing == []
    assert result.completeness == result.score == 100


def test_missing_fields_lower_completeness_and_required_ones_are_errors() -> None:
    bare = location(name=None, postal_code=None, parking_type=None, energy_mix=None,
                    opening_times=None, address="Main Street")  # fmt: skip
    body = station(connector(max_electric_power=None), floor_level=None, capabilities=[])
    result = assess_evse(body.evses[0], body, bare, OperatorFacts(hotline_phone="+4930123456"))
    assert set(result.missing) == set(COUNTED) - {"operator.hotline_phone", "evse.connectors"}
    assert result.completeness == round(100 * 2 / len(COUNTED))
    errors = {f.field for f in result.findings if f.severity == "error"}
    assert errors == {"operator.accessibility", "operator.payment_options",
                      "operator.authentication_modes", "operator.calibration_law"}  # fmt: skip
    assert {"postal_code_empty", "house_number_missing"} <= {f.code for f in result.findings}
    assert result.score == 0
    # A location's own facts complete the defaults.
    override = bare.model_copy(update={"operator": FACTS})
    assert "required_missing" not in {
        f.code for f in assess_evse(body.evses[0], body, override, OperatorFacts()).findings
    }


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"coordinates": {"latitude": "0.000000", "longitude": "0.000000"}}, "coordinates_zero"),
        ({"coordinates": {"latitude": "13.404954", "longitude": "52.520008"}},
         "coordinates_swapped"),
        ({"coordinates": {"latitude": "40.712776", "longitude": "-74.005974"}},
         "coordinates_outside_country"),
        ({"postal_code": " "}, "postal_code_empty"),
        ({"address": "B 12"}, "street_too_short"),
        ({"address": "Main Street"}, "house_number_missing"),
    ],
)  # fmt: skip
def test_place_checks(change: dict[str, Any], code: str) -> None:
    assert code in codes(station(), location(**change))
    assert code not in codes(station(), location())


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"max_electric_power": 7360}, "power_mismatch"),  # one phase's power on three
        ({"max_voltage": 400, "max_electric_power": None}, "voltage_line_to_line"),
        ({"power_type": "DC", "max_electric_power": None}, "dc_on_ac_plug"),
        ({"standard": "IEC_62196_T2_COMBO", "format": "CABLE"}, "ac_on_dc_plug"),
        ({"standard": "GBT_AC"}, "no_oicp_plug"),
        ({"power_type": "AC_2_PHASE", "max_electric_power": 14720}, "no_oicp_power_type"),
        ({"power_type": "DC", "standard": "CHADEMO", "max_amperage": 125, "max_voltage": 500,
          "max_electric_power": 62500}, "oicp_limit"),
    ],
)  # fmt: skip
def test_power_and_plug_checks(change: dict[str, Any], code: str) -> None:
    assert code in codes(station(connector(**change)))


def test_power_hint_names_the_phases_that_fit() -> None:
    body = station(connector(max_electric_power=7400))
    result = assess_evse(body.evses[0], body, location(), FACTS)
    (mismatch,) = [f for f in result.findings if f.code == "power_mismatch"]
    assert "1 phase would give it" in mismatch.message


def test_station_without_location_and_without_plugs() -> None:
    body = StationBody.model_validate({"id": "CP1", "deployment_state": "production", "evses": [
        {"uid": "E1", "evse_id": "DE*ABC*E1*1", "ocpp_ids": [1]}]})  # fmt: skip
    result = assess_evse(body.evses[0], body, None, FACTS)
    assert {(f.code, f.field) for f in result.findings} == {
        ("location_missing", "station.location_id"),
        ("required_missing", "evse.connectors"),
    }
    assert result.score == 0


@pytest.mark.parametrize(
    ("address", "street", "number"),
    [("Main Street 1", "Main Street", "1"), ("Hauptstr. 12a", "Hauptstr.", "12a"),
     ("12 rue de la Paix", "rue de la Paix", "12"), ("Am Markt 3-5", "Am Markt", "3-5"),
     ("Main Street", "Main Street", ""), ("Route 66 Diner", "Route 66 Diner", ""),
     ("Friedrichstraße 2 B", "Friedrichstraße", "2 B")],
)  # fmt: skip
def test_split_street(address: str, street: str, number: str) -> None:
    assert split_street(address) == (street, number)


# -- properties -----------------------------------------------------------------------------------
AC_PLUGS = st.sampled_from([("IEC_62196_T2", "SOCKET"), ("IEC_62196_T2", "CABLE"),
                            ("IEC_62196_T1", "CABLE"), ("DOMESTIC_F", "SOCKET")])  # fmt: skip
DC_PLUGS = st.sampled_from([("IEC_62196_T2_COMBO", "CABLE"), ("CHADEMO", "CABLE")])


@st.composite
def consistent_connector(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        standard, form = draw(AC_PLUGS)
        power_type = draw(st.sampled_from(["AC_1_PHASE", "AC_3_PHASE"]))
        voltage, amperage = draw(st.integers(220, 240)), draw(st.integers(6, 63))
        phases = 3 if power_type == "AC_3_PHASE" else 1
        factor = draw(st.floats(0.92, 1.04))
        power = draw(st.none() | st.just(round(phases * voltage * amperage * factor)))
    else:
        standard, form = draw(DC_PLUGS)
        power_type = "DC"
        voltage, amperage = draw(st.integers(200, 999)), draw(st.integers(10, 99))
        power = draw(st.none() | st.integers(1000, min(voltage * amperage, 999_000)))
    return connector(standard=standard, format=form, power_type=power_type, max_voltage=voltage,
                     max_amperage=amperage, max_electric_power=power)  # fmt: skip


DEU_POINT = st.tuples(st.floats(47.3, 55.0), st.floats(5.9, 15.0))


@given(st.lists(consistent_connector(), min_size=1, max_size=4), DEU_POINT)
def test_a_consistent_evse_has_no_consistency_finding(
    connectors: list[dict[str, Any]], point: tuple[float, float]
) -> None:
    numbered = [{**c, "id": str(n)} for n, c in enumerate(connectors)]
    loc = location(coordinates={"latitude": f"{point[0]:.6f}", "longitude": f"{point[1]:.6f}"})
    found = codes(station(*numbered), loc)
    assert not found & CONSISTENCY, found


@given(DEU_POINT)
def test_swapped_coordinates_are_flagged(point: tuple[float, float]) -> None:
    lat, lon = point
    swapped = location(coordinates={"latitude": f"{lon:.6f}", "longitude": f"{lat:.6f}"})
    assert "coordinates_swapped" in codes(station(), swapped)
    right = location(coordinates={"latitude": f"{lat:.6f}", "longitude": f"{lon:.6f}"})
    assert "coordinates_swapped" not in codes(station(), right)


@given(st.integers(301, 999), st.sampled_from(["AC_1_PHASE", "AC_3_PHASE"]))
def test_any_line_to_line_ac_voltage_is_flagged(voltage: int, power_type: str) -> None:
    body = station(connector(power_type=power_type, max_voltage=voltage, max_electric_power=None))
    assert "voltage_line_to_line" in codes(body)


# -- the catalog and the summary ------------------------------------------------------------------
def test_report_covers_shared_evses_and_sums_up() -> None:
    catalog = Catalog(SetUp(operator_id="DE*ABC"))
    catalog.apply(catalog.plan_location(location(), now=T0))
    catalog.apply(catalog.plan_location(location(id="L2", postal_code=None), now=T0))
    good = station()
    bad = StationBody.model_validate({**station(connector(max_voltage=400)).model_dump(),
                                      "id": "CP2", "location_id": "L2"})  # fmt: skip
    bad.evses[0].uid, bad.evses[0].evse_id = "E2", "DE*ABC*E2*1"
    gone = StationBody.model_validate({**good.model_dump(), "id": "CP3",
                                       "deployment_state": "deprecated"})  # fmt: skip
    gone.evses[0].uid, gone.evses[0].evse_id = "E3", "DE*ABC*E3*1"
    removed = StationBody.model_validate({**good.model_dump(), "id": "CP4"})
    removed.evses[0].uid, removed.evses[0].evse_id = "E4", "DE*ABC*E4*1"
    removed.evses[0].status = "REMOVED"  # type: ignore[assignment]
    for body in (good, bad, gone, removed):
        catalog.apply(catalog.plan_station(body, now=T0))
    items = assess(catalog, FACTS)
    assert [i.evse_id for i in items] == ["DE*ABC*E1*1", "DE*ABC*E2*1"]
    summary = report(catalog, FACTS).summary
    assert summary == summarise(items)
    assert summary.evses == 2 and summary.evses_with_findings == 1
    assert summary.findings_by_code == {"postal_code_empty": 1, "power_mismatch": 1,
                                        "voltage_line_to_line": 1}  # fmt: skip
    assert summary.missing_by_field == {"location.postal_code": 1}
    assert summary.score_min == items[1].score < 100
    assert summary.score_mean == (100 + items[1].score) / 2
    assert [w.evse_id for w in summary.worst] == ["DE*ABC*E2*1", "DE*ABC*E1*1"]
    assert summarise([]).score_mean is None


def test_figures_count_evses_per_code_and_severity_not_findings() -> None:
    catalog = Catalog(SetUp(operator_id="DE*ABC"))
    catalog.apply(catalog.plan_location(location(), now=T0))
    catalog.apply(catalog.plan_location(location(id="L2", postal_code=None), now=T0))
    catalog.apply(catalog.plan_station(station(), now=T0))
    bad = StationBody.model_validate({**station(connector(max_voltage=400)).model_dump(),
                                      "id": "CP2", "location_id": "L2"})  # fmt: skip
    bad.evses[0].uid, bad.evses[0].evse_id = "E2", "DE*ABC*E2*1"
    catalog.apply(catalog.plan_station(bad, now=T0))
    # Without operator facts every EVSE has five required_missing errors: it counts once.
    items = assess(catalog, OperatorFacts())
    assert sum(f.code == "required_missing" for f in items[0].findings) == 5
    got = figures(items)
    assert got.evses == 2
    assert got.by_code[("required_missing", Severity.ERROR)] == 2
    assert got.by_code[("postal_code_empty", Severity.WARNING)] == 1
    assert got.by_code[("coordinates_zero", Severity.ERROR)] == 0  # every code, 0 when unseen
    assert set(got.by_code) == set(SEVERITY.items())
    assert got.by_severity == {Severity.ERROR: 2, Severity.WARNING: 1}
    assert set(got.missing) == set(COUNTED) and got.missing["location.postal_code"] == 1
    assert got.missing["operator.hotline_phone"] == 2 and got.missing["evse.floor_level"] == 0
    assert sum(got.bands.values()) == 2
    assert got.score_min == min(i.score for i in items)
    assert got.score_mean == sum(i.score for i in items) / 2
    assert got.completeness_mean == sum(i.completeness for i in items) / 2
    empty = figures([])
    assert empty.evses == 0 and empty.score_min is None and empty.score_mean is None
    assert set(empty.bands.values()) == {0}


def test_kept_reports_are_reused_until_the_station_or_its_location_changes() -> None:
    catalog = Catalog(SetUp(operator_id="DE*ABC"))
    catalog.apply(catalog.plan_location(location(), now=T0))
    catalog.apply(catalog.plan_location(location(id="L2"), now=T0))
    catalog.apply(catalog.plan_station(station(), now=T0))
    other = StationBody.model_validate({**station().model_dump(), "id": "CP2",
                                        "location_id": "L2"})  # fmt: skip
    other.evses[0].uid, other.evses[0].evse_id = "E2", "DE*ABC*E2*1"
    catalog.apply(catalog.plan_station(other, now=T0))
    kept: Kept = {}
    first = assess_kept(stations_of(catalog), FACTS, kept)
    assert first == assess(catalog, FACTS)
    revision = catalog.revision
    catalog.apply(catalog.plan_location(location(id="L2", postal_code=None), now=T0))
    assert catalog.revision > revision  # what /metrics keeps is stale now
    second = assess_kept(stations_of(catalog), FACTS, kept)
    assert second[0] is first[0]  # CP1: same body, same location, same facts
    assert second[1] is not first[1] and second == assess(catalog, FACTS)
    assert {f.code for f in second[1].findings} == {"postal_code_empty"}
    # A station's write stamps its location; the other stations there keep their reports.
    neighbour = StationBody.model_validate({**station().model_dump(), "id": "CP3",
                                            "location_id": "L2"})  # fmt: skip
    neighbour.evses[0].uid, neighbour.evses[0].evse_id = "E3", "DE*ABC*E3*1"
    location_before = catalog.locations["L2"].body
    catalog.apply(catalog.plan_station(neighbour, now=T0.replace(hour=13)))
    assert catalog.locations["L2"].body is not location_before  # stamped
    again = assess_kept(stations_of(catalog), FACTS, kept)
    assert again[1] is second[1] and again == assess(catalog, FACTS)
    assert kept["CP2"][1] is catalog.locations["L2"].body  # found by identity from now on
    # Other operator facts: every station again.
    third = assess_kept(stations_of(catalog), OperatorFacts(), kept)
    assert third[0] is not second[0] and third == assess(catalog, OperatorFacts())
