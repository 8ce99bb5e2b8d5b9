"""OCPP 2.0.1 handlers: record and answer, nothing else (no HTTP, no calls to the charger)."""

from __future__ import annotations

from typing import Any

import structlog

from bridge.errors import OcppCallError
from bridge.ocpp.session import Handler, Session, utc_now
from bridge.status.table import OcppStatus

log = structlog.get_logger("bridge.ocpp")

#: ConnectorStatusEnumType; AvailabilityState "replicates the connectorStatus values".
CONNECTOR_STATUSES = frozenset(
    {OcppStatus.AVAILABLE, OcppStatus.OCCUPIED, OcppStatus.RESERVED, OcppStatus.UNAVAILABLE,
     OcppStatus.FAULTED}
)  # fmt: skip


async def boot_notification(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    station = payload["chargingStation"]
    info = {
        "vendor_name": station["vendorName"],
        "model": station["model"],
        "firmware_version": station.get("firmwareVersion"),
        "serial_number": station.get("serialNumber"),
        "reason": payload["reason"],
    }
    await session.sink.boot(session.charge_point_id, info)
    return {"currentTime": utc_now(), "interval": session.heartbeat_interval, "status": "Accepted"}


async def heartbeat(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    return {"currentTime": utc_now()}


async def status_notification(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    evse_id, connector_id = payload["evseId"], payload["connectorId"]
    if evse_id < 0 or connector_id < 0:
        raise OcppCallError("PropertyConstraintViolation", "evseId and connectorId must be >= 0")
    await session.sink.status(
        session.charge_point_id,
        evse_id,
        connector_id,
        OcppStatus(payload["connectorStatus"]),
        reported_at=payload["timestamp"],
    )
    return {}


async def notify_event(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    """AvailabilityState events of a Connector, an EVSE or the ChargingStation are status
    reports (2.0.1 H02.FR.04/06)."""
    for event in payload["eventData"]:
        component, variable = event["component"], event["variable"]
        if variable["name"].lower() != "availabilitystate":
            continue
        name = component["name"].lower()
        if name in ("connector", "evse"):
            evse = component.get("evse") or {}
            if "id" not in evse:
                log.warning("status.ignored", charge_point_id=session.charge_point_id,
                            reason=f"{component['name']} AvailabilityState without evse.id",
                            )  # fmt: skip
                continue
            # The EVSE component is the whole EVSE: connector 0 of it.
            evse_key = evse["id"]
            connector_id = evse.get("connectorId", 1) if name == "connector" else 0
        elif name == "chargingstation":  # the whole station, like 1.6 connector 0
            evse_key, connector_id = 0, 0
        else:
            continue
        value = event["actualValue"]
        try:
            status = OcppStatus(value)
        except ValueError:
            status = None
        if status not in CONNECTOR_STATUSES:
            log.warning(
                "status.ignored",
                charge_point_id=session.charge_point_id,
                reason=f"AvailabilityState {value!r} is not a connector status",
            )
            continue
        assert status is not None
        await session.sink.status(
            session.charge_point_id, evse_key, connector_id, status,
            reported_at=event["timestamp"],
        )  # fmt: skip
    return {}


HANDLERS: dict[str, Handler] = {
    "BootNotification": boot_notification,
    "Heartbeat": heartbeat,
    "StatusNotification": status_notification,
    "NotifyEvent": notify_event,
}
