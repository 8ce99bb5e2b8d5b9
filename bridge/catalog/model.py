"""The catalog's objects as pydantic models: the API's bodies, the stored JSON, the export file.

Locations, EVSEs and connectors follow OCPI 2.2.1 (``mod_locations``); the charge station, which
holds the EVSEs, and the hardware template follow GreenFlux's charge-station management API.
Each field's own rule (pattern, enum, range) is checked here; rules between objects (unique
EvseIDs, a location that exists, the operator prefix) live in ``bridge.catalog.rules``.

Fields marked read-only are set by the bridge: they may be sent back as read (a GET body can be
PUT again) and are ignored. ``password`` is write-only: accepted once, stored as its scrypt
hash, never returned.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from bridge.catalog.countries import ALPHA3
from bridge.catalog.enums import (
    PHASES,
    Capability,
    ConnectorFormat,
    ConnectorStandard,
    DeploymentState,
    ParkingType,
    PowerType,
    Source,
    StatusSource,
)
from bridge.catalog.facts import OperatorFacts, unique_values
from bridge.config import EvseId
from bridge.status.table import OcpiStatus

# -- identifiers ----------------------------------------------------------------------------------
#: OCPI CiString(36) ids; kept to characters that need no escaping in a URL path.
ObjectId = Annotated[
    str, StringConstraints(min_length=1, max_length=36, pattern=r"^[A-Za-z0-9._:~*+-]+$")
]
#: The OCPP charge point identity (≤ 48 printable ASCII characters, no '/', no outer spaces).
StationId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=48, pattern=r"^[!-.0-~]([ -.0-~]{0,46}[!-.0-~])?$"),
]
OcppNumber = Annotated[int, Field(ge=1, le=2**31 - 1)]


def read_only(description: str, default: Any = None) -> Any:
    return Field(default, description=description, json_schema_extra={"readOnly": True})


class _Body(BaseModel):
    """Unknown fields are refused by name (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


# -- location -------------------------------------------------------------------------------------
_LATITUDE = re.compile(r"^-?[0-9]{1,2}\.[0-9]{5,7}$")
_LONGITUDE = re.compile(r"^-?[0-9]{1,3}\.[0-9]{5,7}$")


class GeoLocation(_Body):
    """OCPI coordinates: decimal degrees as strings with 5-7 decimals."""

    latitude: str = Field(description="e.g. 52.520008 (-90..90, 5-7 decimals)", max_length=11)
    longitude: str = Field(description="e.g. 13.404954 (-180..180, 5-7 decimals)", max_length=12)

    @field_validator("latitude")
    @classmethod
    def _lat(cls, value: str) -> str:
        if not _LATITUDE.match(value):
            raise ValueError("latitude must look like -?DD.ddddd (5-7 decimals), as a string")
        if abs(float(value)) > 90:
            raise ValueError("latitude out of range -90..90")
        return value

    @field_validator("longitude")
    @classmethod
    def _lon(cls, value: str) -> str:
        if not _LONGITUDE.match(value):
            raise ValueError("longitude must look like -?DDD.ddddd (5-7 decimals), as a string")
        if abs(float(value)) > 180:
            raise ValueError("longitude out of range -180..180")
        return value


_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class RegularHours(_Body):
    weekday: int = Field(ge=1, le=7, description="1 = Monday … 7 = Sunday")
    period_begin: Annotated[str, StringConstraints(pattern=_HHMM)] = Field(description="HH:MM")
    period_end: Annotated[str, StringConstraints(pattern=_HHMM)] = Field(description="HH:MM")


class Hours(_Body):
    """OCPI Hours: open around the clock, or the regular hours of each weekday."""

    twentyfourseven: bool = Field(description="Open 24/7 (then regular_hours is empty).")
    regular_hours: list[RegularHours] = Field(default_factory=list, max_length=70)

    @model_validator(mode="after")
    def _consistent(self) -> Hours:
        if self.twentyfourseven and self.regular_hours:
            raise ValueError("twentyfourseven: true takes no regular_hours")
        if not self.twentyfourseven and not self.regular_hours:
            raise ValueError("regular_hours: needed when twentyfourseven is false")
        return self


class EnergyMix(_Body):
    is_green_energy: bool
    supplier_name: str | None = Field(None, max_length=64)
    energy_product_name: str | None = Field(None, max_length=64)


def _country(value: str) -> str:
    if value not in ALPHA3:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-3 country code (e.g. DEU)")
    return value


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
    return value


Country = Annotated[str, StringConstraints(min_length=3, max_length=3), AfterValidator(_country)]
TimeZone = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_zone)]


class LocationBody(_Body):
    """An OCPI 2.2.1 Location (what a client writes)."""

    id: ObjectId
    name: str | None = Field(None, max_length=255)
    address: str = Field(min_length=1, max_length=45)
    city: str = Field(min_length=1, max_length=45)
    postal_code: str | None = Field(None, max_length=10)
    country: Country = Field(description="ISO 3166-1 alpha-3, e.g. DEU")
    coordinates: GeoLocation
    time_zone: TimeZone = Field(description="IANA time zone, e.g. Europe/Berlin")
    opening_times: Hours | None = Field(None, description="Absent: open 24/7.")
    parking_type: ParkingType | None = None
    energy_mix: EnergyMix | None = None
    publish: bool = True
    operator: OperatorFacts = Field(
        default_factory=OperatorFacts,
        description="Overrides of the operator facts configured in catalog.operator_defaults.",
    )
    last_updated: datetime | None = read_only("Set by the bridge on every change.")


class Location(LocationBody):
    """A location as read: plus who owns it and the operator facts in force."""

    source: Source | None = read_only("api, or file (from the configuration; read-only here)")
    operator_effective: OperatorFacts | None = read_only(
        "The operator facts in force: this location's overrides over the configured defaults."
    )


class LocationPatch(_Body):
    """Fields to change; the others stay as they are."""

    name: str | None = Field(None, max_length=255)
    address: str | None = Field(None, min_length=1, max_length=45)
    city: str | None = Field(None, min_length=1, max_length=45)
    postal_code: str | None = Field(None, max_length=10)
    country: Country | None = None
    coordinates: GeoLocation | None = None
    time_zone: TimeZone | None = None
    opening_times: Hours | None = None
    parking_type: ParkingType | None = None
    energy_mix: EnergyMix | None = None
    publish: bool | None = None
    operator: OperatorFacts | None = None
    last_updated: datetime | None = read_only("Ignored.")


# -- connectors and EVSEs -------------------------------------------------------------------------
class ConnectorBody(_Body):
    """An OCPI 2.2.1 Connector. max_voltage is line-to-neutral for AC (OCPI; 230 in Europe)."""

    id: ObjectId
    standard: ConnectorStandard
    format: ConnectorFormat
    power_type: PowerType
    max_voltage: int = Field(ge=1, le=1500, description="V (AC: line to neutral)")
    max_amperage: int = Field(ge=1, le=1000, description="A")
    max_electric_power: int | None = Field(None, ge=1, le=2_000_000, description="W")

    @model_validator(mode="after")
    def _power(self) -> ConnectorBody:
        if self.max_electric_power is not None:
            ceiling = PHASES[self.power_type] * self.max_voltage * self.max_amperage
            if self.max_electric_power > ceiling * 1.05:
                raise ValueError(
                    f"max_electric_power {self.max_electric_power} W exceeds what "
                    f"{self.power_type.value} at {self.max_voltage} V and {self.max_amperage} A "
                    f"can give ({ceiling} W)"
                )
        return self


class Connector(ConnectorBody):
    last_updated: datetime | None = read_only("Set by the bridge.")


def _ocpp_ids(value: list[int]) -> list[int]:
    if len(set(value)) != len(value):
        raise ValueError("each OCPP number at most once")
    return sorted(value)


OcppIds = Annotated[list[OcppNumber], Field(min_length=1, max_length=16), AfterValidator(_ocpp_ids)]


class EvseLayout(_Body):
    """An EVSE of a hardware template: its OCPP address and plugs, no identity yet."""

    ocpp_ids: OcppIds = Field(
        description="OCPP 1.6: the connectorIds that make this EVSE; 2.0.1: [evseId]."
    )
    capabilities: Annotated[list[Capability], AfterValidator(unique_values)] = Field(
        default_factory=list
    )
    connectors: list[ConnectorBody] = Field(min_length=1, max_length=8)

    @model_validator(mode="after")
    def _connector_ids(self) -> EvseLayout:
        _no_duplicates([c.id for c in self.connectors], "connectors", "connector id")
        return self


class EvseBody(_Body):
    """An OCPI 2.2.1 EVSE of a charge station."""

    uid: ObjectId = Field(description="Unique in the catalog.")
    evse_id: EvseId = Field(
        description="The OICP EvseID (OCPI evse_id): pattern, operator prefix, unique."
    )
    ocpp_ids: OcppIds = Field(
        description="OCPP 1.6: the connectorIds that make this EVSE; 2.0.1: [evseId]."
    )
    capabilities: Annotated[list[Capability], AfterValidator(unique_values)] = Field(
        default_factory=list
    )
    floor_level: str | None = Field(None, max_length=4)
    status: OcpiStatus | None = Field(
        None,
        description="OCPI status. Written only for stations with status_source api, or "
        "REMOVED (the EVSE leaves the hub; final). Read: the status in force.",
    )
    connectors: list[Connector] = Field(
        default_factory=list,
        max_length=8,
        description="At least one (the configuration "
        "file's stations have none: their plugs are not known).",
    )
    last_updated: datetime | None = read_only("Set by the bridge.")
    oicp_status: str | None = read_only("The OICP status the bridge wants the hub to show.")
    hub_data: Any = read_only("Ignored (read form).")

    @model_validator(mode="after")
    def _connector_ids(self) -> EvseBody:
        _no_duplicates([c.id for c in self.connectors], "connectors", "connector id")
        return self


class Evse(EvseBody):
    """An EVSE as read."""

    hub_data: dict[str, Any] | None = read_only(
        "Its EVSE data at the hub: state (acknowledged, pending, invalid, parked, deleting, "
        "withdrawn), the record's field errors, the hub's last code. null: no data (no "
        "connectors, or EVSE data disabled)."
    )


class EvsePatch(_Body):
    """Fields of one EVSE to change (the status feed sends just ``status``)."""

    evse_id: EvseId | None = None
    ocpp_ids: OcppIds | None = None
    capabilities: Annotated[list[Capability] | None, AfterValidator(unique_values)] = None
    floor_level: str | None = Field(None, max_length=4)
    status: OcpiStatus | None = None
    connectors: list[Connector] | None = Field(None, min_length=1, max_length=8)
    last_updated: datetime | None = read_only("Ignored.")


# -- charge stations ------------------------------------------------------------------------------
class BootInfo(BaseModel):
    """What the charger said in its last BootNotification."""

    vendor: str | None = None
    model: str | None = None
    serial: str | None = None
    firmware: str | None = None


class ConnectionInfo(BaseModel):
    connected: bool = False
    protocol: str | None = None
    offline: bool = False
    last_seen: datetime | None = None


class StationBody(_Body):
    """A charge station (GreenFlux): it holds the EVSEs; its id is the OCPP charge point ID."""

    id: StationId
    location_id: ObjectId | None = Field(
        None,
        description="The location it stands at (required, except for stations of the "
        "configuration file).",
    )
    deployment_state: DeploymentState
    status_source: StatusSource = StatusSource.OCPP
    security_profile: int | None = Field(
        None, ge=0, le=3, description="null: ocpp.security.profile."
    )
    password: SecretStr | None = Field(
        None,
        min_length=16,
        max_length=40,
        exclude=True,
        description="Basic-auth password (profiles 1, 2), 16-40 characters. Write-only: "
        "stored as its scrypt hash; absent in a PUT/PATCH keeps the stored one.",
        json_schema_extra={"writeOnly": True},
    )
    charge_station_template_id: ObjectId | None = Field(
        None, description="On create: copy this template's EVSE layout (when evses is empty)."
    )
    evses: list[EvseBody] = Field(default_factory=list, max_length=64)
    last_updated: datetime | None = read_only("Set by the bridge.")
    # Read-only fields of the read form, accepted back and ignored.
    source: Source | None = read_only("api or file.")
    has_password: bool | None = read_only("Whether a password hash is stored.")
    boot: BootInfo | None = read_only("The charger's last BootNotification.")
    connection: ConnectionInfo | None = read_only("Whether the charger is connected now.")

    @model_validator(mode="after")
    def _evse_keys(self) -> StationBody:
        _no_duplicates([e.uid for e in self.evses], "evses", "uid")
        _no_duplicates([e.evse_id for e in self.evses], "evses", "evse_id")
        return self


class Station(StationBody):
    """A charge station as read."""

    evses: list[Evse] = Field(default_factory=list)  # type: ignore[assignment]


class StationPatch(_Body):
    """Fields to change; ``evses`` given replaces the whole list (each EVSE kept by uid)."""

    location_id: ObjectId | None = None
    deployment_state: DeploymentState | None = None
    status_source: StatusSource | None = None
    security_profile: int | None = Field(None, ge=0, le=3)
    password: SecretStr | None = Field(
        None, min_length=16, max_length=40, exclude=True, json_schema_extra={"writeOnly": True}
    )
    evses: list[EvseBody] | None = Field(None, max_length=64)
    last_updated: datetime | None = read_only("Ignored.")


# -- hardware templates ---------------------------------------------------------------------------
class TemplateBody(_Body):
    """A hardware template: vendor, model and the EVSE/connector layout, copied into a station
    created from it (not linked: changing the template later changes no station)."""

    id: ObjectId
    vendor: str = Field(min_length=1, max_length=50)
    model: str = Field(min_length=1, max_length=50)
    evses: list[EvseLayout] = Field(min_length=1, max_length=64)
    last_updated: datetime | None = read_only("Set by the bridge.")

    @model_validator(mode="after")
    def _ocpp(self) -> TemplateBody:
        _no_duplicates([n for e in self.evses for n in e.ocpp_ids], "evses", "OCPP number")
        return self


class Template(TemplateBody):
    pass


def _no_duplicates(values: list[Any], field: str, what: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{field}: {what} {value!r} appears twice")
        seen.add(value)
