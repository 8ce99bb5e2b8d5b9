"""Rules between catalog objects: every refusal names the field and the rule.

The models check each field on its own; these check a station against the rest of the catalog
and the bridge's set-up (operator prefix, unique EvseIDs and uids, the location and template it
names, what its security profile needs, what may change on a REMOVED EVSE).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bridge.catalog.checks import split_street
from bridge.catalog.enums import DeploymentState, Source, StatusSource
from bridge.catalog.model import EvseBody, LocationBody, StationBody
from bridge.catalog.oicp_terms import OICP_POWER_TYPES, oicp_plug
from bridge.config import EVSE_ID_RE, evse_belongs_to
from bridge.errors import CatalogError
from bridge.status.table import OcpiStatus

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


@dataclass(frozen=True, slots=True)
class SetUp:
    """What the rules need to know of the bridge's configuration."""

    operator_id: str = "DE*ABC"
    default_profile: int = 0
    tls: bool = False  # the OCPP port speaks TLS (profiles 2 and 3 need it)
    client_certs: bool = False  # the OCPP port asks chargers for certificates (profile 3)
    evse_id_template: str = "{operator}*E{charge_point}*{evse}"


def bad(field: str, message: str) -> CatalogError:
    return CatalogError(field, message)


def check_station(
    body: StationBody,
    before: StationBody | None,
    *,
    source: Source,
    password_hash: str | None,
    locations: Mapping[str, object],
    evse_owner: Mapping[str, str],
    uid_owner: Mapping[str, str],
    setup: SetUp,
) -> None:
    """Raise CatalogError unless ``body`` may replace ``before`` in the catalog."""
    if source is Source.API:
        if body.location_id is None:
            raise bad("location_id", "required")
        if not body.evses:
            raise bad(
                "evses", "a charge station needs at least one EVSE (evses, or "
                "charge_station_template_id on create)"
            )  # fmt: skip
    if body.location_id is not None and body.location_id not in locations:
        raise CatalogError("location_id", f"location {body.location_id!r} does not exist")
    active: set[int] = set()
    old = {e.uid: e for e in before.evses} if before is not None else {}
    for n, evse in enumerate(body.evses):
        where = f"evses[{n}]"
        _check_evse(evse, old.get(evse.uid), where=where, station=body, source=source, setup=setup)
        owner = evse_owner.get(evse.evse_id)
        if owner is not None and owner != body.id:
            raise bad(f"{where}.evse_id", f"EvseID {evse.evse_id!r} belongs to station {owner!r}")
        owner = uid_owner.get(evse.uid)
        if owner is not None and owner != body.id:
            raise bad(f"{where}.uid", f"uid {evse.uid!r} belongs to station {owner!r}")
        if evse.status is not OcpiStatus.REMOVED:
            for number in evse.ocpp_ids:
                if number in active:
                    raise bad(f"{where}.ocpp_ids", f"OCPP number {number} is used by two EVSEs")
                active.add(number)
    kept = {e.uid for e in body.evses}
    for uid in old:
        if uid not in kept:
            raise bad(
                "evses", f"EVSE {uid!r} is missing; EVSEs are not deleted: set its status to "
                "REMOVED (it then leaves the hub, its history stays readable)"
            )  # fmt: skip
    _check_security(body, password_hash, setup)


def _check_evse(
    evse: EvseBody,
    before: EvseBody | None,
    *,
    where: str,
    station: StationBody,
    source: Source,
    setup: SetUp,
) -> None:
    if not evse_belongs_to(evse.evse_id, setup.operator_id):
        raise bad(
            f"{where}.evse_id", f"EvseID {evse.evse_id!r} does not carry the operator prefix "
            f"{setup.operator_id!r} (the hub would answer 018)"
        )  # fmt: skip
    if source is Source.API and not evse.connectors:
        raise bad(f"{where}.connectors", "an EVSE needs at least one connector")
    if source is Source.API and station.deployment_state is DeploymentState.PRODUCTION:
        _check_oicp_evse(evse, where)
    if before is not None and before.status is OcpiStatus.REMOVED:
        if evse.status is not OcpiStatus.REMOVED and source is Source.API:
            raise bad(f"{where}.status", "the EVSE is REMOVED, which is final")
        if evse.evse_id != before.evse_id:
            raise bad(f"{where}.evse_id", "the EVSE is REMOVED: its EvseID stays as it was")


# -- what the hub's EVSE data takes (OICP 2.3 EvseDataRecord) ------------------------------------
#: ChargingStationNames[].value is at most 150 characters (OCPI's name: 255).
OICP_NAME_MAX = 150


def check_location(body: LocationBody) -> None:
    """The location's values as the hub's EVSE data must carry them (written by the API or an
    import; stored objects are not checked again at start)."""
    if body.name is not None and len(body.name) > OICP_NAME_MAX:
        raise bad("name", f"at most {OICP_NAME_MAX} characters (OICP ChargingStationNames), "
                  f"got {len(body.name)}")  # fmt: skip
    for field in ("address", "city"):
        if not getattr(body, field).strip():
            raise bad(field, "must not be blank")
    street, _ = split_street(body.address)
    if len(street) < 2:
        raise bad("address", f"the street {street!r} is shorter than 2 characters (OICP Street; "
                  "the house number goes after it, e.g. 'Main Street 1')")  # fmt: skip


def _check_oicp_evse(evse: EvseBody, where: str) -> None:
    """An EVSE of a station in production goes to the hub: its plugs and power types must
    exist in OICP (Plugs needs at least one; PowerType is AC_1_PHASE, AC_3_PHASE or DC)."""
    for n, connector in enumerate(evse.connectors):
        if connector.power_type not in OICP_POWER_TYPES:
            raise bad(
                f"{where}.connectors[{n}].power_type", f"{connector.power_type.value} has no "
                "OICP power type (AC_1_PHASE, AC_3_PHASE, DC); a station in production is "
                "shared with the hub"
            )  # fmt: skip
    if evse.connectors and all(oicp_plug(c.standard, c.format) is None for c in evse.connectors):
        names = ", ".join(sorted({c.standard.value for c in evse.connectors}))
        raise bad(
            f"{where}.connectors", f"no connector has an OICP plug ({names}); a station in "
            "production is shared with the hub, which needs at least one of its plugs"
        )  # fmt: skip


def _check_security(body: StationBody, password_hash: str | None, setup: SetUp) -> None:
    if body.status_source is StatusSource.API:
        return  # its chargers talk to another system: nothing logs in here
    profile = setup.default_profile if body.security_profile is None else body.security_profile
    field = "security_profile" if body.security_profile is not None else "password"
    if profile in (1, 2) and password_hash is None:
        raise bad("password", f"security profile {profile} needs a password (16-40 characters)")
    if profile >= 2 and not setup.tls:
        raise bad(field, f"security profile {profile} needs TLS on the OCPP port "
                  "(ocpp.security.tls_cert)")  # fmt: skip
    if profile == 3 and not setup.client_certs:
        raise bad(
            field, "security profile 3 needs the OCPP port to ask for client certificates: "
            "set ocpp.security.charger_ca and give at least one configured charger profile 3"
        )  # fmt: skip


def template_evse_id(setup: SetUp, station_id: str, number: int) -> str:
    """The EvseID of EVSE ``number`` of a station made from a template."""
    return setup.evse_id_template.format(
        operator=setup.operator_id, charge_point=_NOT_ALNUM.sub("", station_id), evse=number
    )


def valid_evse_id(value: str) -> bool:
    return bool(EVSE_ID_RE.match(value))
