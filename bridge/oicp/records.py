"""EVSE data records from the catalog: pure functions, no I/O.

:func:`build_record` turns one EVSE (with its charge station and location) and the operator
facts in force into an OICP ``EvseDataRecord`` (2.3, or the 2.2 shape), following the OCPI →
OICP mapping (``docs/how-it-works.md``, EVSE data): plugs from the connector's standard and
format, ChargingFacilities from its power type, voltage line to neutral, amperage, power in kW
as an integer, ``TimeZone`` as the ``UTC+hh:mm`` offset in force when the record is built.

What cannot be expressed in OICP (a GB/T plug, a two-phase supply) is reported as a field
error, the same way as a schema failure: such a record is never pushed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bridge.catalog.checks import split_street
from bridge.catalog.enums import PHASES, ConnectorStandard, PowerType
from bridge.catalog.facts import OperatorFacts
from bridge.catalog.model import ConnectorBody, EvseBody, LocationBody, StationBody
from bridge.catalog.oicp_terms import oicp_plug
from bridge.oicp.evse_schema import FieldError, Version, record_errors

_POWER_TYPES = {
    PowerType.AC_1_PHASE: "AC_1_PHASE",
    PowerType.AC_3_PHASE: "AC_3_PHASE",
    PowerType.DC: "DC",
}
_PARKING = {
    "ON_STREET": "OnStreet",
    "PARKING_LOT": "ParkingLot",
    "PARKING_GARAGE": "ParkingGarage",
    "UNDERGROUND_GARAGE": "UndergroundParkingGarage",
}
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# The OICP 2.3 schema's ranges (hubject/oicp#153: they exclude high-power DC). Voltage and
# Amperage are optional: a value beyond them is left out rather than refusing the record.
_MAX_VOLTAGE, _MAX_AMPERAGE, _MAX_POWER_KW = 999, 99, 999


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """What an EVSE's record needs besides the catalog objects: the operator facts in force
    (configured defaults under the location's overrides) and the record language."""

    facts: OperatorFacts
    lang: str = "en"


@dataclass(frozen=True, slots=True)
class Built:
    """One EVSE's record and whether it may be pushed: ``errors`` empty means it validates."""

    evse_id: str
    record: dict[str, Any] | None
    errors: tuple[FieldError, ...] = ()
    digest: str = ""  # of the record without TimeZone-independent stamps (what changed?)
    zone: str = ""  # the location's IANA zone (DST changes rebuild its records)

    @property
    def ok(self) -> bool:
        return self.record is not None and not self.errors


@dataclass(slots=True)
class _Problems:
    errors: list[FieldError] = field(default_factory=list)

    def add(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))


def utc_offset(zone: str, at: datetime) -> str:
    """``UTC+hh:mm`` in force in the IANA ``zone`` at ``at`` (an aware datetime)."""
    offset = at.astimezone(ZoneInfo(zone)).utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"


def split_address(address: str) -> tuple[str, str]:
    """OCPI's one-line address as OICP's Street and HouseNum ("" when there is no number); the
    data-quality report splits it the same way."""
    return split_street(" ".join(address.split()))


def build_record(
    location: LocationBody,
    station: StationBody,
    evse: EvseBody,
    facts: RecordFacts,
    *,
    now: datetime,
    version: Version = "2.3",
) -> Built:
    """The EvseDataRecord of ``evse`` and every reason it may not be pushed."""
    problems = _Problems()
    record = _record_23(location, station, evse, facts, now=now, problems=problems)
    if version == "2.2":
        record = to_v22(record, now)
    errors = problems.errors or record_errors(record, version)
    return Built(evse.evse_id, record, tuple(errors), digest(record), location.time_zone)


def digest(record: dict[str, Any]) -> str:
    """A short fingerprint of a record (its content decides insert/update/nothing)."""
    stable = {k: v for k, v in record.items() if k != "lastUpdate"}
    text = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _record_23(
    location: LocationBody,
    station: StationBody,
    evse: EvseBody,
    facts: RecordFacts,
    *,
    now: datetime,
    problems: _Problems,
) -> dict[str, Any]:
    f = facts.facts
    street, house = split_address(location.address)
    address: dict[str, Any] = {
        "Country": location.country,
        "City": location.city,
        "Street": street,
        "PostalCode": location.postal_code or "",
        "HouseNum": house,
        "TimeZone": utc_offset(location.time_zone, now),
    }
    if evse.floor_level:
        address["Floor"] = evse.floor_level
    name = (location.name or station.id)[:150]
    hours = location.opening_times
    open_always = hours is None or hours.twentyfourseven
    record: dict[str, Any] = {
        "EvseID": evse.evse_id,
        "ChargingStationId": station.id,
        "ChargingStationNames": [{"lang": facts.lang, "value": name}],
        "Address": address,
        "GeoCoordinates": {
            "DecimalDegree": {
                "Latitude": f"{float(location.coordinates.latitude):.6f}",
                "Longitude": f"{float(location.coordinates.longitude):.6f}",
            }
        },
        "Plugs": _plugs(evse.connectors, problems),
        "ChargingFacilities": _facilities(evse.connectors, problems),
        "RenewableEnergy": bool(location.energy_mix and location.energy_mix.is_green_energy),
        "AuthenticationModes": _auth_modes(f, evse),
        "ValueAddedServices": [s.value for s in f.value_added_services]
        if f.value_added_services
        else _services(evse),
        "IsOpen24Hours": open_always,
        "IsHubjectCompatible": f.is_hubject_compatible
        if f.is_hubject_compatible is not None
        else True,
        "DynamicInfoAvailable": (
            f.dynamic_info_available.value if f.dynamic_info_available is not None else "auto"
        ),
    }
    if not evse.connectors:
        problems.add("Plugs", "the EVSE has no connectors (plugs and power are not known)")
    _facts(record, f, problems)
    if hours is not None and not hours.twentyfourseven:
        record["OpeningTimes"] = _opening_times(hours.regular_hours)
    parking = location.parking_type.value if location.parking_type is not None else None
    if parking in _PARKING:
        record["AccessibilityLocation"] = _PARKING[parking]
    return record


def _facts(record: dict[str, Any], f: OperatorFacts, problems: _Problems) -> None:
    """The operator facts OCPI has no field for; a missing one names its configuration key."""
    given = {
        "HotlinePhoneNumber": f.hotline_phone,
        "Accessibility": f.accessibility.value if f.accessibility is not None else None,
        "PaymentOptions": [p.value for p in f.payment_options] if f.payment_options else None,
        "CalibrationLawDataAvailability": (
            f.calibration_law.value if f.calibration_law is not None else None
        ),
    }
    keys = {
        "HotlinePhoneNumber": "hotline_phone",
        "Accessibility": "accessibility",
        "PaymentOptions": "payment_options",
        "CalibrationLawDataAvailability": "calibration_law",
    }
    for name, value in given.items():
        if value is None:
            problems.add(
                name,
                f"required; set catalog.operator_defaults.{keys[name]} (or the "
                f"location's operator.{keys[name]})",
            )
        else:
            record[name] = value


def _plug(connector: ConnectorBody) -> str | None:
    return oicp_plug(connector.standard, connector.format)


def _plugs(connectors: Iterable[ConnectorBody], problems: _Problems) -> list[str]:
    plugs: list[str] = []
    for i, connector in enumerate(connectors):
        plug = _plug(connector)
        if plug is None:
            problems.add(
                f"Plugs[{i}]",
                f"connector {connector.id}: {connector.standard.value} "
                f"({connector.format.value}) has no OICP plug type",
            )
        elif plug not in plugs:
            plugs.append(plug)
    return plugs


def _facilities(connectors: Iterable[ConnectorBody], problems: _Problems) -> list[dict[str, Any]]:
    facilities: list[dict[str, Any]] = []
    for i, c in enumerate(connectors):
        power_type = _POWER_TYPES.get(c.power_type)
        if power_type is None:
            problems.add(
                f"ChargingFacilities[{i}].PowerType",
                f"connector {c.id}: {c.power_type.value} has no OICP power type",
            )
            continue
        watts = c.max_electric_power or PHASES[c.power_type] * c.max_voltage * c.max_amperage
        kw = round(watts / 1000)
        if kw > _MAX_POWER_KW:
            problems.add(
                f"ChargingFacilities[{i}].Power",
                f"connector {c.id}: {kw} kW exceeds OICP's {_MAX_POWER_KW}",
            )
        facility: dict[str, Any] = {"PowerType": power_type, "Power": kw}
        if c.max_voltage <= _MAX_VOLTAGE:
            facility["Voltage"] = c.max_voltage  # AC: line to neutral, as OCPI has it
        if c.max_amperage <= _MAX_AMPERAGE:
            facility["Amperage"] = c.max_amperage
        facility["ChargingModes"] = [_mode(c)]
        if facility not in facilities:
            facilities.append(facility)
    return facilities


def _mode(c: ConnectorBody) -> str:
    if c.standard is ConnectorStandard.CHADEMO:
        return "CHAdeMO"
    return "Mode_4" if c.power_type is PowerType.DC else "Mode_3"


def _auth_modes(f: OperatorFacts, evse: EvseBody) -> list[str]:
    if f.authentication_modes:
        return [m.value for m in f.authentication_modes]
    modes = []
    caps = {c.value for c in evse.capabilities}
    if "RFID_READER" in caps:
        modes.append("NFC RFID Classic")
    if "REMOTE_START_STOP_CAPABLE" in caps:
        modes.append("REMOTE")
    return modes


def _services(evse: EvseBody) -> list[str]:
    caps = {c.value for c in evse.capabilities}
    return ["Reservation"] if "RESERVABLE" in caps else ["None"]


def _opening_times(hours: Iterable[Any]) -> list[dict[str, Any]]:
    by_day: dict[int, list[dict[str, str]]] = {}
    for h in hours:
        by_day.setdefault(h.weekday, []).append({"begin": h.period_begin, "end": h.period_end})
    return [{"Period": by_day[d], "on": _WEEKDAYS[d - 1]} for d in sorted(by_day)]


# -- OICP 2.2 --------------------------------------------------------------------------------------
_NOT_IN_22 = {"ChargingStationNames", "ChargingStationId", "ChargingFacilities"}


def to_v22(record: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The same record in OICP 2.2's shape: one ChargingStationName (and its English twin),
    ChargingModes on the record instead of per facility, ``lastUpdate``; values 2.3 added are
    dropped (2.2's enums do not know them)."""
    out = {k: v for k, v in record.items() if k not in _NOT_IN_22}
    names = record.get("ChargingStationNames") or [{"value": ""}]
    out["ChargingStationID"] = record.get("ChargingStationId", "")[:50]
    out["ChargingStationName"] = names[0]["value"][:50]
    out["EnChargingStationName"] = names[0]["value"][:50]
    modes: list[str] = []
    facilities = []
    for facility in record.get("ChargingFacilities", []):
        for mode in facility.get("ChargingModes", []):
            if mode not in modes:
                modes.append(mode)
        facilities.append({k: v for k, v in facility.items() if k != "ChargingModes"})
    out["ChargingFacilities"] = facilities
    if modes:
        out["ChargingModes"] = modes
    if "AuthenticationModes" in out:
        out["AuthenticationModes"] = [
            m for m in out["AuthenticationModes"] if m != "No Authentication Required"
        ]
    if "ValueAddedServices" in out:
        out["ValueAddedServices"] = [s for s in out["ValueAddedServices"] if s != "RoofProvided"]
    out["lastUpdate"] = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return out
