"""The OCPP → OCPI → OICP status table: one visible table, overridable row by row.

Source: Hubject's integration guide, page "eRoamingPushEvseStatus", section "OCPP to OICP
Mapping". That table's OCPI and OICP column headers are swapped (its "OICP" column holds OCPI
values such as ``Charging`` / ``Out of order``); it is read here with the headers corrected, so
the third column holds real OICP ``EvseStatus`` values.

Rows the guide does not cover, and why we chose what we chose:

* ``SuspendedEVSE`` (1.6): missing from the guide (it lists a non-existent "Suspended"). A car is
  plugged in and a session runs while the EVSE withholds energy, so the spot is taken for other
  drivers: CHARGING → ``Occupied``, like ``SuspendedEV``.
* ``Preparing`` / ``Finishing`` (1.6): a driver is at the spot (plugged in / unplugging), so the
  spot is not free: ``Occupied`` (as the guide says).
* ``Occupied`` (2.0.1): the guide's "Occupied → BLOCKED"; the OICP value is ``Occupied``.
* ``Unavailable``: INOPERATIVE → ``OutOfService``. Some hubs and CPOs prefer ``Unknown``; an
  operator can change this one row with ``status.overrides``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class OcppStatus(StrEnum):
    """Connector statuses of OCPP 1.6 (ChargePointStatus) and 2.0.1 (ConnectorStatusEnumType)."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"  # 1.6
    CHARGING = "Charging"  # 1.6
    SUSPENDED_EVSE = "SuspendedEVSE"  # 1.6
    SUSPENDED_EV = "SuspendedEV"  # 1.6
    FINISHING = "Finishing"  # 1.6
    OCCUPIED = "Occupied"  # 2.0.1
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class OcpiStatus(StrEnum):
    """OCPI 2.2.1 EVSE status (the intermediate column; informative)."""

    AVAILABLE = "AVAILABLE"
    BLOCKED = "BLOCKED"
    CHARGING = "CHARGING"
    INOPERATIVE = "INOPERATIVE"
    OUTOFORDER = "OUTOFORDER"
    PLANNED = "PLANNED"
    REMOVED = "REMOVED"
    RESERVED = "RESERVED"
    UNKNOWN = "UNKNOWN"


class OicpStatus(StrEnum):
    """OICP 2.3 ``EvseStatus`` (exact spellings of the OpenAPI enum)."""

    AVAILABLE = "Available"
    RESERVED = "Reserved"
    OCCUPIED = "Occupied"
    OUT_OF_SERVICE = "OutOfService"
    EVSE_NOT_FOUND = "EvseNotFound"
    UNKNOWN = "Unknown"


#: The statuses the bridge can give an EVSE (EvseNotFound is the hub's answer, never ours).
OICP_STATUSES = tuple(s for s in OicpStatus if s is not OicpStatus.EVSE_NOT_FOUND)


@dataclass(frozen=True, slots=True)
class Row:
    ocpp: OcppStatus
    ocpi: OcpiStatus
    oicp: OicpStatus
    versions: str  # which OCPP versions send this status


S, P, O = OcppStatus, OcpiStatus, OicpStatus  # noqa: E741  (short names keep the table readable)

#: The mapping table. Keep it one screen long and in this order.
TABLE: tuple[Row, ...] = (
    #   OCPP               OCPI            OICP              versions
    Row(S.AVAILABLE,       P.AVAILABLE,    O.AVAILABLE,      "1.6, 2.0.1"),
    Row(S.PREPARING,       P.CHARGING,     O.OCCUPIED,       "1.6"),
    Row(S.CHARGING,        P.CHARGING,     O.OCCUPIED,       "1.6"),
    Row(S.SUSPENDED_EV,    P.CHARGING,     O.OCCUPIED,       "1.6"),
    Row(S.SUSPENDED_EVSE,  P.CHARGING,     O.OCCUPIED,       "1.6"),
    Row(S.FINISHING,       P.CHARGING,     O.OCCUPIED,       "1.6"),
    Row(S.OCCUPIED,        P.BLOCKED,      O.OCCUPIED,       "2.0.1"),
    Row(S.RESERVED,        P.RESERVED,     O.RESERVED,       "1.6, 2.0.1"),
    Row(S.UNAVAILABLE,     P.INOPERATIVE,  O.OUT_OF_SERVICE, "1.6, 2.0.1"),
    Row(S.FAULTED,         P.OUTOFORDER,   O.OUT_OF_SERVICE, "1.6, 2.0.1"),
)  # fmt: skip

del S, P, O

#: The other direction of the OCPI column: an OCPI status fed over the API (for stations whose
#: status_source is ``api``) → OICP. Agrees with TABLE wherever TABLE has the OCPI status; the
#: rest: PLANNED (not operating yet) is OutOfService, UNKNOWN is Unknown. REMOVED is no status:
#: the EVSE leaves the hub.
OCPI_TO_OICP: Mapping[OcpiStatus, OicpStatus] = MappingProxyType({
    OcpiStatus.AVAILABLE: OicpStatus.AVAILABLE,
    OcpiStatus.BLOCKED: OicpStatus.OCCUPIED,
    OcpiStatus.CHARGING: OicpStatus.OCCUPIED,
    OcpiStatus.INOPERATIVE: OicpStatus.OUT_OF_SERVICE,
    OcpiStatus.OUTOFORDER: OicpStatus.OUT_OF_SERVICE,
    OcpiStatus.PLANNED: OicpStatus.OUT_OF_SERVICE,
    OcpiStatus.RESERVED: OicpStatus.RESERVED,
    OcpiStatus.UNKNOWN: OicpStatus.UNKNOWN,
})  # fmt: skip

#: How an OICP status reads as OCPI (for the catalog's EVSE ``status`` of OCPP-fed stations).
OICP_TO_OCPI: Mapping[OicpStatus, OcpiStatus] = MappingProxyType({
    OicpStatus.AVAILABLE: OcpiStatus.AVAILABLE,
    OicpStatus.OCCUPIED: OcpiStatus.CHARGING,
    OicpStatus.RESERVED: OcpiStatus.RESERVED,
    OicpStatus.OUT_OF_SERVICE: OcpiStatus.INOPERATIVE,
    OicpStatus.UNKNOWN: OcpiStatus.UNKNOWN,
    OicpStatus.EVSE_NOT_FOUND: OcpiStatus.UNKNOWN,
})  # fmt: skip

#: OICP statuses an operator may map to (EvseNotFound is for pull answers, never pushed).
PUSHABLE: frozenset[OicpStatus] = frozenset(OicpStatus) - {OicpStatus.EVSE_NOT_FOUND}


def effective_table(
    overrides: Mapping[OcppStatus, OicpStatus] | None = None,
) -> Mapping[OcppStatus, OicpStatus]:
    """OCPP → OICP after applying operator overrides; read-only."""
    table = {row.ocpp: row.oicp for row in TABLE}
    for ocpp_status, oicp_status in (overrides or {}).items():
        if oicp_status not in PUSHABLE:
            raise ValueError(f"{ocpp_status} cannot be mapped to {oicp_status}")
        table[OcppStatus(ocpp_status)] = OicpStatus(oicp_status)
    return MappingProxyType(table)
