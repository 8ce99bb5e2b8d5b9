"""The catalog's model and rules as plain functions (no I/O): cascade, versions, file import."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bridge.catalog.catalog import Catalog, content, file_station
from bridge.catalog.enums import Source
from bridge.catalog.facts import OperatorFacts
from bridge.catalog.model import LocationBody, StationBody, StationPatch
from bridge.catalog.rules import SetUp
from bridge.errors import CatalogError
from bridge.status.table import OCPI_TO_OICP, TABLE, OcpiStatus

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
LOCATION = {"id": "L1", "address": "Main Street 1", "city": "Berlin", "country": "DEU",
            "coordinates": {"latitude": "52.520008", "longitude": "13.404954"},
            "time_zone": "Europe/Berlin"}  # fmt: skip
CONNECTOR = {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET",
             "power_type": "AC_3_PHASE", "max_voltage": 230, "max_amperage": 32}  # fmt: skip


def station(**extra: Any) -> StationBody:
    evses = [
        {"uid": "E1", "evse_id": "DE*ABC*E1*1", "ocpp_ids": [1], "connectors": [CONNECTOR]},
        {"uid": "E2", "evse_id": "DE*ABC*E1*2", "ocpp_ids": [2], "connectors": [CONNECTOR]},
    ]
    return StationBody.model_validate({"id": "CP1", "location_id": "L1",
                                       "deployment_state": "production", "evses": evses,
                                       **extra})  # fmt: skip


def catalog_with_location() -> Catalog:
    catalog = Catalog(SetUp(operator_id="DE*ABC"))
    catalog.apply(catalog.plan_location(LocationBody.model_validate(LOCATION), now=T0))
    return catalog


def test_last_updated_cascades_from_connector_to_location() -> None:
    catalog = catalog_with_location()
    catalog.apply(catalog.plan_station(station(), now=T0))
    body = station()
    body.evses[1].connectors[0].max_amperage = 16  # one connector of EVSE E2 changes
    changes = catalog.plan_station(body, now=T1)
    assert [(c.kind, c.after.version) for c in changes] == [("station", 2), ("location", 3)]
    after = changes[0].after.body
    assert after.last_updated == T1
    assert after.evses[0].last_updated == T0 and after.evses[0].connectors[0].last_updated == T0
    assert after.evses[1].last_updated == T1 and after.evses[1].connectors[0].last_updated == T1
    assert changes[1].after.body.last_updated == T1
    catalog.apply(changes)
    assert catalog.plan_station(body, now=T1 + timedelta(1)) == []  # nothing changed: no write


def test_station_only_change_leaves_the_location() -> None:
    catalog = catalog_with_location()
    catalog.apply(catalog.plan_station(station(), now=T0))
    changes = catalog.plan_station(station(deployment_state="stock"), now=T1)
    assert [c.kind for c in changes] == ["station"]


def test_patch_keeps_what_it_does_not_name() -> None:
    catalog = catalog_with_location()
    catalog.apply(catalog.plan_station(station(), now=T0))
    patched = catalog.patched_station("CP1", StationPatch(deployment_state="stock"))  # type: ignore[arg-type]
    assert patched.deployment_state.value == "stock" and len(patched.evses) == 2


def test_refused_change_leaves_no_trace() -> None:
    catalog = catalog_with_location()
    catalog.apply(catalog.plan_station(station(), now=T0))
    other = station(id="CP2")
    with pytest.raises(CatalogError) as refused:
        catalog.plan_station(other, now=T1)
    assert refused.value.field == "evses[0].evse_id" and "CP1" in refused.value.message
    assert set(catalog.stations) == {"CP1"} and catalog.evse_owner["DE*ABC*E1*1"] == "CP1"


def test_file_import_is_idempotent_and_owned_by_the_file() -> None:
    catalog = Catalog()
    body = file_station("CP-F", {1: "DE*ABC*EF*1", 2: "DE*ABC*EF*1", 3: "DE*ABC*EF*3"}, None)
    assert [(e.evse_id, e.ocpp_ids) for e in body.evses] == [
        ("DE*ABC*EF*1", [1, 2]), ("DE*ABC*EF*3", [3])
    ]  # fmt: skip
    catalog.apply(catalog.plan_station(body, now=T0, source=Source.FILE))
    again = file_station("CP-F", {1: "DE*ABC*EF*1", 2: "DE*ABC*EF*1", 3: "DE*ABC*EF*3"}, None)
    assert catalog.plan_station(again, now=T1, source=Source.FILE) == []
    with pytest.raises(CatalogError, match="configuration file") as refused:
        catalog.plan_station(again, now=T1)  # the API may not change it
    assert refused.value.status_code == 2000


def test_operator_facts_override_defaults() -> None:
    defaults = OperatorFacts(hotline_phone="+4930123456", accessibility="Free publicly accessible")  # type: ignore[arg-type]
    mine = OperatorFacts(accessibility="Restricted access")  # type: ignore[arg-type]
    effective = mine.over(defaults)
    assert effective.hotline_phone == "+4930123456"
    assert effective.accessibility is not None and effective.accessibility.value == (
        "Restricted access"
    )
    with pytest.raises(ValidationError, match="authentication_modes"):
        OperatorFacts(authentication_modes=["Fingerprint"])  # type: ignore[list-item]


def test_ocpi_to_oicp_agrees_with_the_table() -> None:
    for row in TABLE:
        assert OCPI_TO_OICP[row.ocpi] is row.oicp, row
    assert set(OCPI_TO_OICP) == set(OcpiStatus) - {OcpiStatus.REMOVED}


@settings(max_examples=200, deadline=None)
@given(
    lat=st.floats(-100, 100, allow_nan=False), lon=st.floats(-200, 200, allow_nan=False),
    decimals=st.integers(3, 8),
)  # fmt: skip
def test_coordinates_are_checked_for_format_and_range(
    lat: float, lon: float, decimals: int
) -> None:
    data = {**LOCATION, "coordinates": {"latitude": f"{lat:.{decimals}f}",
                                        "longitude": f"{lon:.{decimals}f}"}}  # fmt: skip
    good = 5 <= decimals <= 7 and abs(lat) <= 90 and abs(lon) <= 180
    lat_digits = len(f"{abs(lat):.{decimals}f}".split(".")[0])
    good = good and lat_digits <= 2
    try:
        LocationBody.model_validate(data)
    except ValidationError as exc:
        assert not good, exc
        assert "coordinates" in str(exc)
    else:
        assert good


# -- property: any sequence of writes keeps the indexes true and refusals leave no trace ----------
EVSE_POOL = [f"DE*ABC*E{n}*1" for n in range(6)]
writes = st.lists(
    st.tuples(
        st.sampled_from(["CP1", "CP2", "CP3"]),  # station
        st.lists(st.sampled_from(EVSE_POOL), min_size=1, max_size=3),  # its EvseIDs
        st.sampled_from(["stock", "production", "deprecated"]),
        st.booleans(),  # remove the last EVSE (status REMOVED)
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(writes)
def test_writes_keep_the_catalog_consistent(ops: list[tuple[str, list[str], str, bool]]) -> None:
    catalog = catalog_with_location()
    now = T0
    for cp_id, evse_ids, state, remove_last in ops:
        now += timedelta(seconds=1)
        evses = [
            {"uid": f"{cp_id}-{evse_id}", "evse_id": evse_id, "ocpp_ids": [n + 1],
             "connectors": [CONNECTOR]}
            for n, evse_id in enumerate(dict.fromkeys(evse_ids))
        ]  # fmt: skip
        if remove_last:
            evses[-1]["status"] = "REMOVED"
        body = StationBody.model_validate({"id": cp_id, "location_id": "L1",
                                           "deployment_state": state, "evses": evses})  # fmt: skip
        before = {k: (v.version, content(v.body)) for k, v in catalog.stations.items()}
        owners = dict(catalog.evse_owner)
        try:
            changes = catalog.plan_station(body, now=now)
        except CatalogError as exc:
            event("refused")
            assert exc.field and exc.message  # names what is wrong
            assert {k: (v.version, content(v.body)) for k, v in catalog.stations.items()} == before
            assert catalog.evse_owner == owners
            continue
        event("applied" if changes else "unchanged")
        catalog.apply(changes)
        # every EVSE is owned by its station, and no EvseID or uid is in two stations
        seen: dict[str, str] = {}
        for station_id, entry in catalog.stations.items():
            for evse in entry.body.evses:
                assert seen.setdefault(evse.evse_id, station_id) == station_id
                assert catalog.evse_owner[evse.evse_id] == station_id
                assert catalog.uid_owner[evse.uid] == station_id
        assert set(catalog.evse_owner) == set(seen)
        assert catalog.ids("station") == sorted(catalog.stations)
        # the cascade: the location is at least as new as every EVSE at it
        location = catalog.locations["L1"].body
        assert location.last_updated is not None
        for entry in catalog.stations.values():
            for evse in entry.body.evses:
                assert evse.last_updated is not None and evse.last_updated <= location.last_updated
