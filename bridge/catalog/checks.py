"""The consistency checks of the data-quality report, on plain values (no I/O).

Each check is what Hubject's EVSE Data Score looks at, or a mistake the hub's schema lets pass
but EMPs show wrongly: power against voltage x amperage x phases, a line-to-line voltage where
OICP (and OCPI) want line-to-neutral, DC on a plug that only carries AC (and the reverse),
coordinates at 0,0, out of range, swapped or outside their country, an empty postal code, a
street shorter than 2 characters. The same checks run on catalog EVSEs (``bridge.catalog.
quality``) and on OICP EvseDataRecords (``check_record``), so a record built elsewhere can be
checked as the hub would see it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from bridge.catalog.geo import in_country
from bridge.catalog.oicp_terms import PLUG_CURRENT, Current

#: Line-to-neutral voltages stay below this; above it an AC voltage is line-to-line (400, 480).
LINE_TO_NEUTRAL_MAX = 300
POWER_TOLERANCE = 0.10  # power may differ this much from voltage x amperage x phases
AC_PHASES = {"AC_1_PHASE": 1, "AC_2_PHASE": 2, "AC_2_PHASE_SPLIT": 2, "AC_3_PHASE": 3}
DC_MODES = frozenset({"Mode_4", "CHAdeMO"})
#: OICP ChargingFacilities limits (integers: Voltage 0-999, Amperage 0-99, Power 0-999 kW).
OICP_MAX_VOLTAGE, OICP_MAX_AMPERAGE, OICP_MAX_POWER_KW = 999, 99, 999


class Severity(StrEnum):
    """error: the hub would refuse the record or it is certainly wrong; warning: it passes
    but is inconsistent (the hub's data score drops, drivers see wrong data)."""

    ERROR = "error"
    WARNING = "warning"


class Finding(BaseModel):
    code: str = Field(description="Stable code, e.g. voltage_line_to_line.")
    field: str = Field(description="Where: e.g. location.postal_code, evse.connectors[0].")
    message: str
    severity: Severity


def finding(code: str, field: str, message: str, severity: Severity = Severity.WARNING) -> Finding:
    return Finding(code=code, field=field, message=message, severity=severity)


# -- power ----------------------------------------------------------------------------------------
def check_power(
    field: str,
    power_type: str,
    voltage: float | None,
    amperage: float | None,
    power_w: float | None,
) -> list[Finding]:
    """AC: the stated power must agree with line-to-neutral voltage x amperage x phases."""
    phases = AC_PHASES.get(power_type)
    if phases is None or not voltage or not amperage or power_w is None:
        return []
    expected = phases * voltage * amperage
    if abs(power_w - expected) <= POWER_TOLERANCE * expected:
        return []
    hints = [
        f"{n} phase{'s' if n > 1 else ''} would give it"
        for n in (1, 3)
        if n != phases and abs(power_w - n * voltage * amperage) <= POWER_TOLERANCE * power_w
    ]
    if voltage > LINE_TO_NEUTRAL_MAX:
        neutral = voltage / math.sqrt(3)
        if abs(power_w - phases * neutral * amperage) <= POWER_TOLERANCE * power_w:
            hints.append(f"{neutral:.0f} V line-to-neutral would give it")
    return [
        finding(
            "power_mismatch",
            field,
            f"{power_w / 1000:g} kW does not agree with {power_type} at {voltage:g} V x "
            f"{amperage:g} A ({expected / 1000:g} kW)"
            + (f" ({'; '.join(hints)})" if hints else ""),
        )
    ]


def check_voltage(field: str, power_type: str, voltage: float | None) -> list[Finding]:
    """OICP and OCPI give AC voltage line-to-neutral (230 in Europe), not line-to-line."""
    if power_type not in AC_PHASES or voltage is None or voltage <= LINE_TO_NEUTRAL_MAX:
        return []
    return [
        finding(
            "voltage_line_to_line",
            field,
            f"{voltage:g} V on {power_type} is a line-to-line voltage; give it line-to-neutral "
            f"(about {voltage / math.sqrt(3):.0f} V)",
        )
    ]


def check_current(
    field: str, power_type: str, modes: Collection[str], plugs: Mapping[str, Current | None]
) -> list[Finding]:
    """DC power (or a DC charging mode) on plugs that only carry AC, and the reverse.

    ``plugs``: each plug's name → the only current it carries (None: both or unknown).
    """
    currents = set(plugs.values())
    if not plugs or None in currents or len(currents) != 1:
        return []
    (only,) = currents
    names = ", ".join(sorted(plugs))
    dc = power_type == "DC" or bool(DC_MODES & set(modes))
    if only == "AC" and dc:
        what = (
            "DC power"
            if power_type == "DC"
            else ("/".join(sorted(DC_MODES & set(modes))) + f" (DC charging) with {power_type}")
        )
        return [finding("dc_on_ac_plug", field, f"{what} on {names}, which carries AC only")]
    if only == "DC" and power_type in AC_PHASES:
        return [finding("ac_on_dc_plug", field, f"{power_type} on {names}, which carries DC only")]
    return []


def check_oicp_limits(
    field: str, voltage: float | None, amperage: float | None, power_w: float | None
) -> list[Finding]:
    """Values OICP's ChargingFacilities cannot carry (high-power DC exceeds them)."""
    out = []
    if voltage is not None and voltage > OICP_MAX_VOLTAGE:
        out.append(f"Voltage {voltage:g} V (OICP takes at most {OICP_MAX_VOLTAGE})")
    if amperage is not None and amperage > OICP_MAX_AMPERAGE:
        out.append(f"Amperage {amperage:g} A (OICP takes at most {OICP_MAX_AMPERAGE})")
    if power_w is not None and power_w > OICP_MAX_POWER_KW * 1000:
        out.append(f"Power {power_w / 1000:g} kW (OICP takes at most {OICP_MAX_POWER_KW})")
    return [finding("oicp_limit", field, "; ".join(out))] if out else []


# -- place ----------------------------------------------------------------------------------------
def check_coordinates(
    field: str, country: str | None, latitude: float, longitude: float
) -> list[Finding]:
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return [
            finding(
                "coordinates_out_of_range",
                field,
                f"{latitude}, {longitude} is outside -90..90, -180..180",
                Severity.ERROR,
            )
        ]
    if abs(latitude) < 1e-6 and abs(longitude) < 1e-6:
        return [
            finding("coordinates_zero", field, "0, 0 is a placeholder, not a place", Severity.ERROR)
        ]
    if country is None or in_country(country, latitude, longitude) is not False:
        return []
    if abs(longitude) <= 90 and in_country(country, longitude, latitude):
        return [
            finding(
                "coordinates_swapped",
                field,
                f"latitude {latitude} and longitude {longitude} are swapped: "
                f"{longitude}, {latitude} is in {country}",
            )
        ]
    return [
        finding(
            "coordinates_outside_country", field, f"{latitude}, {longitude} is not in {country}"
        )
    ]


_HOUSE_LAST = re.compile(r"^(?P<street>.*?)[\s,]+(?P<num>\d[0-9A-Za-z/\-]{0,7}(?:\s?[A-Za-z])?)$")
_HOUSE_FIRST = re.compile(r"^(?P<num>\d[0-9A-Za-z/\-]{0,9}),?\s+(?P<street>.*)$")


def split_street(address: str) -> tuple[str, str]:
    """``"Main Street 1a"`` → ``("Main Street", "1a")``; ``"12 rue X"`` → ``("rue X", "12")``;
    no number: ``(address, "")``. OCPI has one address line, OICP Street and HouseNum."""
    text = address.strip()
    for pattern in (_HOUSE_LAST, _HOUSE_FIRST):
        match = pattern.match(text)
        if match and match["street"].strip():
            return match["street"].strip().rstrip(","), match["num"]
    return text, ""


def check_address(
    prefix: str, street: str, house_number: str | None, postal_code: str | None
) -> list[Finding]:
    out = []
    if not (postal_code or "").strip():
        out.append(
            finding(
                "postal_code_empty",
                f"{prefix}postal_code",
                "no postal code (OICP 2.3 requires PostalCode; the hub scores it)",
            )
        )
    if len(street.strip()) < 2:
        out.append(
            finding(
                "street_too_short",
                f"{prefix}address",
                f"street {street.strip()!r} is shorter than 2 characters (OICP)",
            )
        )
    if house_number is not None and not house_number.strip():
        out.append(
            finding(
                "house_number_missing",
                f"{prefix}address",
                "no house number in the address (OICP 2.3 requires HouseNum)",
            )
        )
    return out


# -- an OICP EvseDataRecord ----------------------------------------------------------------------
def check_record(record: Mapping[str, Any]) -> list[Finding]:
    """The consistency checks on one EvseDataRecord (OICP field names and paths)."""
    out: list[Finding] = []
    plugs = {p: PLUG_CURRENT.get(p) for p in record.get("Plugs") or [] if isinstance(p, str)}
    for n, facility in enumerate(record.get("ChargingFacilities") or []):
        where = f"ChargingFacilities[{n}]"
        power_type = str(facility.get("PowerType", ""))
        voltage, amperage = _number(facility.get("Voltage")), _number(facility.get("Amperage"))
        power = _number(facility.get("Power"))
        power_w = power * 1000 if power is not None else None
        out += check_voltage(f"{where}.Voltage", power_type, voltage)
        out += check_power(f"{where}.Power", power_type, voltage, amperage, power_w)
        modes = [m for m in facility.get("ChargingModes") or [] if isinstance(m, str)]
        out += check_current(where, power_type, modes, plugs)
    address = record.get("Address") or {}
    out += check_address(
        "Address.",
        str(address.get("Street") or ""),
        str(address.get("HouseNum") or ""),
        address.get("PostalCode"),
    )
    for f in out:  # OICP names the street and postal code fields differently
        if f.field == "Address.address":
            f.field = "Address.Street" if f.code == "street_too_short" else "Address.HouseNum"
        elif f.field == "Address.postal_code":
            f.field = "Address.PostalCode"
    point = _point(record.get("GeoCoordinates") or {})
    if point is not None:
        country = address.get("Country")
        out += check_coordinates(
            "GeoCoordinates", country if isinstance(country, str) else None, *point
        )
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _point(geo: Mapping[str, Any]) -> tuple[float, float] | None:
    try:
        if "DecimalDegree" in geo:
            d = geo["DecimalDegree"]
            return float(d["Latitude"]), float(d["Longitude"])
        if "Google" in geo:
            lat, lon = re.split(r"[\s,]+", str(geo["Google"]["Coordinates"]).strip())[:2]
            return float(lat), float(lon)
    except (KeyError, TypeError, ValueError):
        return None
    return None
