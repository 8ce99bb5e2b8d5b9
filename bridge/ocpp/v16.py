"""OCPP 1.6J handlers: record and answer, nothing else (no HTTP, no calls to the charger)."""

from __future__ import annotations

from typing import Any

from bridge.ocpp.session import Handler, Session, utc_now
from bridge.status.table import OcppStatus


async def boot_notification(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    info = {
        "charge_point_vendor": payload["chargePointVendor"],
        "charge_point_model": payload["chargePointModel"],
        "firmware_version": payload.get("firmwareVersion"),
        "serial_number": payload.get("chargePointSerialNumber"),
    }
    await session.sink.boot(session.charge_point_id, info)
    return {"status": "Accepted", "currentTime": utc_now(), "interval": session.heartbeat_interval}


async def heartbeat(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    return {"currentTime": utc_now()}


async def status_notification(session: Session, payload: dict[str, Any]) -> dict[str, Any]:
    connector_id = payload["connectorId"]
    await session.sink.status(
        session.charge_point_id,
        connector_id,  # 1.6: a connector is its own unit; 0 = the whole charge point
        connector_id,
        OcppStatus(payload["status"]),
        error_code=payload["errorCode"],
        reported_at=payload.get("timestamp"),
    )
    return {}


HANDLERS: dict[str, Handler] = {
    "BootNotification": boot_notification,
    "Heartbeat": heartbeat,
    "StatusNotification": status_notification,
}
