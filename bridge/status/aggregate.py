"""Per-EVSE aggregation of connector statuses: pure functions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bridge.status.table import OcppStatus, OicpStatus

#: OCPP 1.6 connectorId 0 ("the whole charge point") in one of these takes every EVSE down.
STATION_DOWN: frozenset[OcppStatus] = frozenset({OcppStatus.UNAVAILABLE, OcppStatus.FAULTED})

#: An EVSE shows the first of these that any of its connectors has.
PRECEDENCE: tuple[OicpStatus, ...] = (
    OicpStatus.OCCUPIED,
    OicpStatus.RESERVED,
    OicpStatus.AVAILABLE,
    OicpStatus.OUT_OF_SERVICE,
)


def evse_status(
    connectors: Iterable[OcppStatus],
    table: Mapping[OcppStatus, OicpStatus],
    station: OcppStatus | None = None,
    evse: OcppStatus | None = None,
) -> OicpStatus:
    """The one OICP status of an EVSE.

    ``connectors``: the last OCPP status of each of its connectors that has reported one.
    ``station``: the last status of the whole charger (OCPP 1.6 connector 0, the 2.0.1
    ChargingStation component), ``evse``: the last status of the whole EVSE (the 2.0.1 EVSE
    component), if any. While one of them is Unavailable or Faulted it decides (mapped through
    ``table``, so an operator override applies to it too); when it returns, the connectors' own
    statuses show again.
    Occupied if any connector is in use, else Reserved, else Available, else OutOfService;
    ``Unknown`` if nothing was ever reported (or every status maps to Unknown).
    """
    if station in STATION_DOWN:
        return table[station]
    if evse is not None:
        if evse in STATION_DOWN:
            return table[evse]
        connectors = [*connectors, evse]
    mapped = {table[status] for status in connectors}
    for candidate in PRECEDENCE:
        if candidate in mapped:
            return candidate
    return OicpStatus.UNKNOWN
