"""The data-quality report of the catalog: per EVSE what the hub's EVSE Data Score would miss.

Hubject scores each operator's EVSE data monthly: completeness of the optional fields and
consistency of address, coordinates, postal code, power, plug and voltage. This gives the same
view before the hub does, from the catalog alone (no I/O): per EVSE the counted fields it lacks,
the findings of the consistency checks (``bridge.catalog.checks``), a completeness and a score;
and a summary for the operator.

Counted fields (``COUNTED``) are the EvseDataRecord fields the catalog can carry. The score is
the completeness (percent of counted fields present) less 10 points per warning and 25 per
error, never below 0: an EVSE with every field and no finding scores 100.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field

from bridge.catalog.catalog import Catalog
from bridge.catalog.checks import (
    Finding,
    Severity,
    check_address,
    check_coordinates,
    check_current,
    check_oicp_limits,
    check_power,
    check_voltage,
    finding,
    split_street,
)
from bridge.catalog.enums import DeploymentState
from bridge.catalog.facts import OperatorFacts
from bridge.catalog.model import EvseBody, LocationBody, StationBody
from bridge.catalog.oicp_terms import OICP_POWER_TYPES, oicp_plug, standard_current
from bridge.status.table import OcpiStatus

__all__ = [
    "CODES",
    "COUNTED",
    "SCORE_BANDS",
    "SEVERITY",
    "EvseQuality",
    "Figures",
    "Finding",
    "Kept",
    "Report",
    "Severity",
    "Summary",
    "assess",
    "assess_kept",
    "figures",
]

#: Counted fields → what they become at the hub. Operator facts and plugs are required by
#: OICP: missing, they are also an error finding (the hub refuses the record).
COUNTED: dict[str, str] = {
    "location.name": "ChargingStationNames",
    "location.postal_code": "Address.PostalCode",
    "location.address (house number)": "Address.HouseNum",
    "location.parking_type": "AccessibilityLocation",
    "location.energy_mix": "RenewableEnergy",
    "location.opening_times": "OpeningTimes",
    "evse.floor_level": "Address.Floor",
    "evse.capabilities": "ValueAddedServices",
    "evse.connectors": "Plugs",
    "evse.connectors.max_electric_power": "ChargingFacilities.Power",
    "operator.hotline_phone": "HotlinePhoneNumber",
    "operator.accessibility": "Accessibility",
    "operator.payment_options": "PaymentOptions",
    "operator.authentication_modes": "AuthenticationModes",
    "operator.calibration_law": "CalibrationLawDataAvailability",
}
_REQUIRED_FACTS = (
    "hotline_phone",
    "accessibility",
    "payment_options",
    "authentication_modes",
    "calibration_law",
)
#: Every finding code, for filters (``bridge.catalog.checks`` makes the consistency ones).
CODES = ("ac_on_dc_plug", "coordinates_out_of_range", "coordinates_outside_country",
         "coordinates_swapped", "coordinates_zero", "dc_on_ac_plug", "house_number_missing",
         "location_missing", "no_oicp_plug", "no_oicp_power_type", "oicp_limit",
         "postal_code_empty", "power_mismatch", "required_missing", "street_too_short",
         "voltage_line_to_line")  # fmt: skip
#: The severity of each code: a code always has the same one (the docs' table lists them), so
#: the metrics can show every code at 0 without a series for impossible pairs.
SEVERITY: dict[str, Severity] = {
    code: Severity.ERROR
    if code in ("coordinates_out_of_range", "coordinates_zero", "location_missing",
                "required_missing")
    else Severity.WARNING
    for code in CODES
}  # fmt: skip
#: Score bands of the metrics (lowest, highest, label): a bounded set of series a dashboard can
#: stack, with 100 (nothing to improve) apart.
SCORE_BANDS = ((0, 24, "0-24"), (25, 49, "25-49"), (50, 74, "50-74"), (75, 99, "75-99"),
               (100, 100, "100"))  # fmt: skip
PENALTY = {Severity.WARNING: 10, Severity.ERROR: 25}
WORST = 10  # EVSEs listed in the summary


class EvseQuality(BaseModel):
    """One EVSE's report."""

    evse_id: str
    uid: str
    station_id: str
    location_id: str | None
    deployment_state: DeploymentState
    score: int = Field(ge=0, le=100, description="completeness less 10 per warning, 25 per error")
    completeness: int = Field(ge=0, le=100, description="percent of the counted fields present")
    missing: list[str] = Field(description="Counted fields without a value.")
    findings: list[Finding]
    last_updated: datetime | None = Field(None, description="The EVSE's last change.")


class WorstEvse(BaseModel):
    evse_id: str
    score: int
    findings: int


class Summary(BaseModel):
    """The whole set (or the filtered part of it)."""

    evses: int
    evses_with_findings: int
    errors: int
    warnings: int
    score_mean: float | None = Field(description="None when there is no EVSE.")
    score_min: int | None
    completeness_mean: float | None
    findings_by_code: dict[str, int]
    missing_by_field: dict[str, int]
    worst: list[WorstEvse] = Field(description=f"The {WORST} lowest scores, lowest first.")


class Report(BaseModel):
    summary: Summary
    evses: list[EvseQuality]


# -- one EVSE -------------------------------------------------------------------------------------
def assess_evse(
    evse: EvseBody, station: StationBody, location: LocationBody | None, defaults: OperatorFacts
) -> EvseQuality:
    missing: list[str] = []
    findings: list[Finding] = []
    if location is None:
        findings.append(
            finding(
                "location_missing",
                "station.location_id",
                "the station has no location: the hub needs an address and coordinates",
                Severity.ERROR,
            )
        )
        missing += [k for k in COUNTED if k.startswith("location.")]
        facts = defaults
    else:
        missing += _location_missing(location)
        findings += _location_findings(location)
        facts = location.operator.over(defaults)
    for name in _REQUIRED_FACTS:
        if getattr(facts, name) is None:
            missing.append(f"operator.{name}")
            findings.append(
                finding(
                    "required_missing",
                    f"operator.{name}",
                    f"OICP requires {COUNTED[f'operator.{name}']}: set catalog.operator_defaults."
                    f"{name} or the location's operator.{name}",
                    Severity.ERROR,
                )
            )
    if evse.floor_level is None:
        missing.append("evse.floor_level")
    if not evse.capabilities:
        missing.append("evse.capabilities")
    if not evse.connectors:
        missing += ["evse.connectors", "evse.connectors.max_electric_power"]
        findings.append(
            finding(
                "required_missing",
                "evse.connectors",
                "no connectors: the hub needs the plugs (Plugs)",
                Severity.ERROR,
            )
        )
    else:
        if any(c.max_electric_power is None for c in evse.connectors):
            missing.append("evse.connectors.max_electric_power")
        findings += _connector_findings(evse)
    completeness = round(100 * (len(COUNTED) - len(missing)) / len(COUNTED))
    penalty = sum(PENALTY[f.severity] for f in findings)
    return EvseQuality(
        evse_id=evse.evse_id,
        uid=evse.uid,
        station_id=station.id,
        location_id=station.location_id,
        deployment_state=station.deployment_state,
        score=max(0, completeness - penalty),
        completeness=completeness,
        missing=missing,
        findings=findings,
        last_updated=evse.last_updated,
    )


def _location_missing(location: LocationBody) -> list[str]:
    out = []
    if not (location.name or "").strip():
        out.append("location.name")
    if not (location.postal_code or "").strip():
        out.append("location.postal_code")
    if not split_street(location.address)[1]:
        out.append("location.address (house number)")
    if location.parking_type is None:
        out.append("location.parking_type")
    if location.energy_mix is None:
        out.append("location.energy_mix")
    if location.opening_times is None:
        out.append("location.opening_times")
    return out


def _location_findings(location: LocationBody) -> list[Finding]:
    street, house = split_street(location.address)
    out = check_address("location.", street, house, location.postal_code)
    point = location.coordinates
    out += check_coordinates(
        "location.coordinates", location.country, float(point.latitude), float(point.longitude)
    )
    return out


def _connector_findings(evse: EvseBody) -> list[Finding]:
    out: list[Finding] = []
    for n, c in enumerate(evse.connectors):
        where = f"evse.connectors[{n}]"
        plug = oicp_plug(c.standard, c.format)
        if plug is None:
            out.append(
                finding(
                    "no_oicp_plug",
                    f"{where}.standard",
                    f"{c.standard.value} has no OICP plug: the hub will not list it",
                )
            )
        if c.power_type not in OICP_POWER_TYPES:
            out.append(
                finding(
                    "no_oicp_power_type",
                    f"{where}.power_type",
                    f"OICP knows AC_1_PHASE, AC_3_PHASE and DC, not {c.power_type.value}",
                )
            )
        one = {plug or c.standard.value: standard_current(c.standard)}
        out += check_voltage(f"{where}.max_voltage", c.power_type.value, c.max_voltage)
        out += check_power(
            f"{where}.max_electric_power",
            c.power_type.value,
            c.max_voltage,
            c.max_amperage,
            c.max_electric_power,
        )
        out += check_current(f"{where}.power_type", c.power_type.value, (), one)
        out += check_oicp_limits(where, c.max_voltage, c.max_amperage, c.max_electric_power)
    if all(oicp_plug(c.standard, c.format) is None for c in evse.connectors):
        out.append(
            finding(
                "required_missing",
                "evse.connectors",
                "no connector has an OICP plug: the hub would refuse the record",
                Severity.ERROR,
            )
        )
    return out


# -- the catalog ----------------------------------------------------------------------------------
def stations_of(catalog: Catalog) -> list[tuple[StationBody, LocationBody | None]]:
    """The stations the report covers, with their locations: in stock or production (stock is
    checked before it goes live), in station id order. Bodies are never changed in place
    (every write replaces them), so this list may be assessed outside the event loop."""
    out = []
    for station_id in catalog.ids("station"):
        station = catalog.stations[station_id].body
        if station.deployment_state is DeploymentState.DEPRECATED:
            continue
        entry = catalog.locations.get(station.location_id or "")
        out.append((station, entry.body if entry is not None else None))
    return out


def assess_station(
    station: StationBody, location: LocationBody | None, defaults: OperatorFacts
) -> list[EvseQuality]:
    """Every EVSE of the station that is not REMOVED."""
    return [
        assess_evse(evse, station, location, defaults)
        for evse in station.evses
        if evse.status != OcpiStatus.REMOVED
    ]


def assess(catalog: Catalog, defaults: OperatorFacts) -> list[EvseQuality]:
    return [i for s, loc in stations_of(catalog) for i in assess_station(s, loc, defaults)]


#: Station id → (its body, its location's, the operator defaults, its EVSEs' reports).
Kept = MutableMapping[
    str, tuple[StationBody, LocationBody | None, OperatorFacts, list[EvseQuality]]
]


#: Location bodies compared during one run: (id, id) → (before, now, says the same).
_Compared = dict[tuple[int, int], tuple[LocationBody, LocationBody, bool]]


def assess_kept(
    stations: Iterable[tuple[StationBody, LocationBody | None]],
    defaults: OperatorFacts,
    kept: Kept,
) -> list[EvseQuality]:
    """``assess`` of ``stations_of``'s list, reusing ``kept`` reports of stations whose body and
    defaults are the very objects they were made from (a write replaces bodies, never changes
    them) and whose location says the same: a repeated report only assesses what changed. Safe
    in a worker thread (the API and /metrics may run it at once: each entry is replaced whole).
    """
    out: list[EvseQuality] = []
    same: _Compared = {}
    for station, location in stations:
        entry = kept.get(station.id)
        if (
            entry is not None
            and entry[0] is station
            and entry[2] is defaults
            and _says_the_same(entry[1], location, same)
        ):
            if entry[1] is not location:  # the next run finds it by identity
                kept[station.id] = (station, location, defaults, entry[3])
            out += entry[3]
            continue
        items = assess_station(station, location, defaults)
        kept[station.id] = (station, location, defaults, items)
        out += items
    return out


def _says_the_same(before: LocationBody | None, now: LocationBody | None, same: _Compared) -> bool:
    """Whether a location body says what the one a report was made from said, ``last_updated``
    aside: a station's write stamps its location (OCPI), which no report shows, and without this
    a write at a location of N stations would assess all N again. Compared once per pair of
    bodies (``same``), not per station."""
    if before is now:
        return True
    if before is None or now is None:
        return False
    key = (id(before), id(now))
    if key not in same:  # the entry holds both bodies: their ids are not reused during the run
        same[key] = (
            before,
            now,
            before.model_copy(update={"last_updated": now.last_updated}) == now,
        )
    return same[key][2]


@dataclass(frozen=True, slots=True)
class Figures:
    """The report in numbers for dashboards: counts of EVSEs, not of findings."""

    evses: int
    #: (code, severity) → EVSEs with at least one such finding; every code of ``CODES``.
    by_code: dict[tuple[str, Severity], int]
    #: Severity → EVSEs with at least one finding of it.
    by_severity: dict[Severity, int]
    #: Counted field → EVSEs without it; every field of ``COUNTED``.
    missing: dict[str, int]
    #: Label of ``SCORE_BANDS`` → EVSEs whose score is in the band.
    bands: dict[str, int]
    score_min: int | None
    score_mean: float | None
    completeness_mean: float | None


def figures(items: Iterable[EvseQuality]) -> Figures:
    by_code: Counter[tuple[str, Severity]] = Counter(
        {(code, severity): 0 for code, severity in SEVERITY.items()}
    )
    by_severity: Counter[Severity] = Counter(dict.fromkeys(Severity, 0))
    missing: Counter[str] = Counter(dict.fromkeys(COUNTED, 0))
    bands: Counter[str] = Counter({label: 0 for _, _, label in SCORE_BANDS})
    band_of = {score: label for low, high, label in SCORE_BANDS for score in range(low, high + 1)}
    n = score_sum = completeness_sum = 0
    score_min: int | None = None
    for item in items:
        n += 1
        score_sum += item.score
        completeness_sum += item.completeness
        score_min = item.score if score_min is None else min(score_min, item.score)
        bands[band_of[item.score]] += 1
        # An EVSE counts once per code and severity however many fields the finding names.
        pairs = {(f.code, f.severity) for f in item.findings}
        by_code.update(pairs)
        by_severity.update({severity for _, severity in pairs})
        missing.update(set(item.missing))
    return Figures(
        evses=n,
        by_code=dict(by_code),
        by_severity=dict(by_severity),
        missing=dict(missing),
        bands=dict(bands),
        score_min=score_min,
        score_mean=score_sum / n if n else None,
        completeness_mean=completeness_sum / n if n else None,
    )


def summarise(items: Iterable[EvseQuality]) -> Summary:
    items = list(items)
    codes: Counter[str] = Counter(f.code for i in items for f in i.findings)
    missing: Counter[str] = Counter(m for i in items for m in i.missing)
    severities = Counter(f.severity for i in items for f in i.findings)
    worst = sorted(items, key=lambda i: (i.score, i.evse_id))[:WORST]
    n = len(items)
    return Summary(
        evses=n,
        evses_with_findings=sum(1 for i in items if i.findings),
        errors=severities[Severity.ERROR],
        warnings=severities[Severity.WARNING],
        score_mean=round(sum(i.score for i in items) / n, 1) if n else None,
        score_min=min((i.score for i in items), default=None),
        completeness_mean=round(sum(i.completeness for i in items) / n, 1) if n else None,
        findings_by_code=dict(sorted(codes.items())),
        missing_by_field=dict(sorted(missing.items())),
        worst=[
            WorstEvse(evse_id=i.evse_id, score=i.score, findings=len(i.findings)) for i in worst
        ],
    )


def report(catalog: Catalog, defaults: OperatorFacts) -> Report:
    items = assess(catalog, defaults)
    return Report(summary=summarise(items), evses=items)
