"""The mapping table, per-EVSE aggregation and connector-0 rules (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.status.aggregate import evse_status
from bridge.status.engine import StatusEngine, StatusReport
from bridge.status.registry import Registry
from bridge.status.table import TABLE, OcppStatus, OicpStatus, effective_table

O = OicpStatus  # noqa: E741
DEFAULT = effective_table()

EXPECTED = {
    "Available": ("AVAILABLE", "Available"),
    "Preparing": ("CHARGING", "Occupied"),
    "Charging": ("CHARGING", "Occupied"),
    "SuspendedEV": ("CHARGING", "Occupied"),
    "SuspendedEVSE": ("CHARGING", "Occupied"),
    "Finishing": ("CHARGING", "Occupied"),
    "Occupied": ("BLOCKED", "Occupied"),
    "Reserved": ("RESERVED", "Reserved"),
    "Unavailable": ("INOPERATIVE", "OutOfService"),
    "Faulted": ("OUTOFORDER", "OutOfService"),
}


def test_table_is_exhaustive_and_exact() -> None:
    assert {row.ocpp.value: (row.ocpi.value, row.oicp.value) for row in TABLE} == EXPECTED
    assert len(TABLE) == len(OcppStatus)  # every OCPP status of both versions has a row
    assert {k.value: v.value for k, v in DEFAULT.items()} == {
        k: oicp for k, (_, oicp) in EXPECTED.items()
    }


def test_ocpp_enums_match_the_ocpp_package() -> None:
    from ocpp.v16.enums import ChargePointStatus
    from ocpp.v201.enums import ConnectorStatusEnumType

    both = {s.value for s in ChargePointStatus} | {s.value for s in ConnectorStatusEnumType}
    assert both == {s.value for s in OcppStatus}


def test_only_real_oicp_values_are_produced() -> None:
    values = {"Available", "Reserved", "Occupied", "OutOfService", "EvseNotFound", "Unknown"}
    assert {s.value for s in OicpStatus} == values
    assert {row.oicp.value for row in TABLE} <= values - {"EvseNotFound"}


def test_override_replaces_one_row() -> None:
    table = effective_table({OcppStatus.UNAVAILABLE: O.UNKNOWN})
    assert table[OcppStatus.UNAVAILABLE] is O.UNKNOWN
    assert table[OcppStatus.FAULTED] is O.OUT_OF_SERVICE
    with pytest.raises(ValueError):
        effective_table({OcppStatus.FAULTED: O.EVSE_NOT_FOUND})


statuses = st.sampled_from(list(OcppStatus))


@given(st.lists(statuses, max_size=6))
def test_aggregation_precedence(connectors: list[OcppStatus]) -> None:
    mapped = {DEFAULT[s] for s in connectors}
    result = evse_status(connectors, DEFAULT)
    if O.OCCUPIED in mapped:
        assert result is O.OCCUPIED
    elif O.RESERVED in mapped:
        assert result is O.RESERVED
    elif O.AVAILABLE in mapped:
        assert result is O.AVAILABLE
    elif connectors:
        assert result is O.OUT_OF_SERVICE
    else:
        assert result is O.UNKNOWN


@given(
    st.lists(statuses, max_size=6), st.sampled_from([OcppStatus.UNAVAILABLE, OcppStatus.FAULTED])
)
def test_station_down_overrides_every_connector(
    connectors: list[OcppStatus], station: OcppStatus
) -> None:
    assert evse_status(connectors, DEFAULT, station) is O.OUT_OF_SERVICE


@given(st.lists(statuses, max_size=6))
def test_station_available_shows_connectors(connectors: list[OcppStatus]) -> None:
    assert evse_status(connectors, DEFAULT, OcppStatus.AVAILABLE) is evse_status(
        connectors, DEFAULT
    )


def _engine(**kwargs: object) -> StatusEngine:
    registry = Registry(
        {"CP": {1: "DE*ABC*E1", 2: "DE*ABC*E1", 3: "DE*ABC*E3"}},
        "DE*ABC",
        **kwargs,  # type: ignore[arg-type]
    )
    return StatusEngine(DEFAULT, registry)


def test_session_of_many_ocpp_statuses_is_one_change() -> None:
    engine = _engine()
    changes = []
    for status in ("Available", "Preparing", "Charging", "SuspendedEVSE", "Finishing"):
        changes += engine.apply(StatusReport("CP", 3, 3, OcppStatus(status)))[1]
    assert [(c.evse_id, c.old, c.new) for c in changes] == [
        ("DE*ABC*E3", O.UNKNOWN, O.AVAILABLE),
        ("DE*ABC*E3", O.AVAILABLE, O.OCCUPIED),
    ]


def test_two_connectors_one_evse() -> None:
    engine = _engine()
    engine.apply(StatusReport("CP", 1, 1, OcppStatus.AVAILABLE))
    engine.apply(StatusReport("CP", 2, 2, OcppStatus.FAULTED))
    assert engine.status("DE*ABC*E1") is O.AVAILABLE
    _, changes = engine.apply(StatusReport("CP", 1, 1, OcppStatus.CHARGING))
    assert [c.new for c in changes] == [O.OCCUPIED]
    engine.apply(StatusReport("CP", 1, 1, OcppStatus.FAULTED))
    assert engine.status("DE*ABC*E1") is O.OUT_OF_SERVICE


@given(st.lists(st.tuples(st.sampled_from([0, 1, 2, 3]), statuses), max_size=30))
def test_engine_equals_recomputation_from_scratch(reports: list[tuple[int, OcppStatus]]) -> None:
    """Whatever the order of reports, each EVSE shows the aggregation of the last statuses."""
    engine = _engine()
    last: dict[int, OcppStatus] = {}
    for key, status in reports:
        engine.apply(StatusReport("CP", key, key, status))
        last[key] = status
    station = last.get(0)
    for evse_id, keys in (("DE*ABC*E1", (1, 2)), ("DE*ABC*E3", (3,))):
        mine = [last[k] for k in keys if k in last]
        assert engine.status(evse_id) is evse_status(mine, DEFAULT, station)


def test_connector_zero_down_and_back() -> None:
    engine = _engine()
    engine.apply(StatusReport("CP", 1, 1, OcppStatus.CHARGING))
    engine.apply(StatusReport("CP", 3, 3, OcppStatus.AVAILABLE))
    _, down = engine.apply(StatusReport("CP", 0, 0, OcppStatus.FAULTED))
    assert {(c.evse_id, c.new) for c in down} == {
        ("DE*ABC*E1", O.OUT_OF_SERVICE),
        ("DE*ABC*E3", O.OUT_OF_SERVICE),
    }
    # A connector report while the station is down changes nothing at the hub...
    assert engine.apply(StatusReport("CP", 3, 3, OcppStatus.RESERVED))[1] == []
    _, up = engine.apply(StatusReport("CP", 0, 0, OcppStatus.AVAILABLE))
    # ...but is what the EVSE shows when the station returns.
    assert {(c.evse_id, c.new) for c in up} == {
        ("DE*ABC*E1", O.OCCUPIED),
        ("DE*ABC*E3", O.RESERVED),
    }


def test_offline_and_back() -> None:
    engine = _engine()
    engine.apply(StatusReport("CP", 3, 3, OcppStatus.AVAILABLE))
    # E1 never reported, so it already is Unknown: only E3 changes.
    assert [(c.evse_id, c.new) for c in engine.set_offline("CP", True)] == [
        ("DE*ABC*E3", O.UNKNOWN)
    ]
    assert [(c.evse_id, c.new) for c in engine.set_offline("CP", False)] == [
        ("DE*ABC*E3", O.AVAILABLE)
    ]


def test_unmapped_connector_changes_nothing() -> None:
    engine = _engine()
    assert engine.apply(StatusReport("CP", 9, 9, OcppStatus.AVAILABLE)) == (None, [])


def test_template_for_unlisted_chargers() -> None:
    registry = Registry(
        {}, "DE*ABC", template="{operator}*E{charge_point}*{evse}", allow_unlisted=True
    )
    assert registry.knows("any-cp")
    assert registry.evse_id("CP-77/x", 2) == "DE*ABC*ECP77x*2"
    assert registry.evse_id("CP", 0) is None
    assert not Registry({}, "DE*ABC").knows("any-cp")


def test_unlisted_chargers_never_get_another_chargers_evse_id() -> None:
    registry = Registry(
        {"CP-0001": {1: "DE*ABC*E0001*1"}, "CP9": {1: "DE*ABC*EX*1"}},
        "DE*ABC",
        template="{operator}*E{charge_point}*{evse}",
        allow_unlisted=True,
        max_unlisted=2,
    )
    # '0001' would map to DE*ABC*E0001*1, the listed CP-0001's EVSE (also spelled otherwise).
    assert registry.taken_evse_id("0001") == "DE*ABC*E0001*1"
    assert registry.taken_evse_id("00-01") == "DE*ABC*E0001*1"
    assert registry.taken_evse_id("x") == "DE*ABC*Ex*1"  # OICP IDs ignore case
    assert registry.evse_id("0001", 1) is None  # and never given out at run time either
    assert registry.evse_id("CP-0001", 1) == "DE*ABC*E0001*1"
    assert registry.taken_evse_id("CP-0001") is None  # listed: its own
    # An admitted unlisted charger owns its EvseIDs: a look-alike ID is refused.
    assert registry.taken_evse_id("NEW-1") is None and registry.admit("NEW-1")
    assert registry.taken_evse_id("NEW1") == "DE*ABC*ENEW1*1"
    assert registry.evse_id("NEW-1", 8) == "DE*ABC*ENEW1*8"
    assert registry.evse_id("NEW1", 8) is None  # every number it may use is checked at connect
    assert registry.evse_id("NEW-1", 9) is None  # beyond template_max_evses: no EVSE at all
    # At most max_unlisted unlisted chargers; admitted ones stay admitted.
    assert registry.admit("NEW2") and not registry.admit("NEW3")
    assert registry.admit("NEW-1") and registry.admit("CP9")
