"""How catalog objects read over the API: the stored object plus what is live (the status in
force, the charger's connection and boot data, the operator facts in force)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from bridge.api.context import ApiContext
from bridge.catalog.catalog import Entry
from bridge.catalog.model import BootInfo, LocationBody, StationBody, TemplateBody
from bridge.status.table import OICP_TO_OCPI, OcpiStatus


def location_out(ctx: ApiContext, entry: Entry[LocationBody]) -> dict[str, Any]:
    data = entry.body.model_dump(mode="json")
    data["source"] = entry.source.value
    data["operator_effective"] = entry.body.operator.over(ctx.operator_defaults).model_dump(
        mode="json"
    )
    return data


def template_out(ctx: ApiContext, entry: Entry[TemplateBody]) -> dict[str, Any]:
    return entry.body.model_dump(mode="json")


def station_out(ctx: ApiContext, entry: Entry[StationBody]) -> dict[str, Any]:
    body = entry.body
    cached = ctx.station_cache.get(body.id)
    if cached is None or cached[0] is not entry:
        dumped = body.model_dump(mode="json", exclude={"password"})
        cached = ctx.station_cache[body.id] = (entry, dumped)
    data = dict(cached[1])
    evses = []
    for stored in data["evses"]:
        evse = dict(stored)
        if evse.get("status") != OcpiStatus.REMOVED.value:
            oicp = ctx.engine.status(evse["evse_id"])
            evse["oicp_status"] = oicp.value
            if evse.get("status") is None:
                evse["status"] = OICP_TO_OCPI[oicp].value
        else:
            evse["oicp_status"] = None
        evse["hub_data"] = ctx.hub_data(evse["evse_id"])
        evses.append(evse)
    data["evses"] = evses
    data["source"] = entry.source.value
    credentials = ctx.live.credentials
    data["has_password"] = entry.password_hash is not None or (
        credentials is not None and credentials.has_password(body.id)
    )
    presence = ctx.presence.get(body.id)
    data["boot"] = data["connection"] = None
    if presence is not None:
        # Plain dicts in the shape of ConnectionInfo / BootInfo: a page of 100 stations is read
        # often (portals, data warehouses), pydantic per row would double its cost.
        data["connection"] = {
            "connected": bool(presence.connected), "protocol": presence.protocol,
            "offline": bool(presence.offline), "last_seen": _rfc3339(presence.last_seen),
        }  # fmt: skip
        if presence.boot:
            data["boot"] = _boot(presence.boot)
    return data


def _rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@lru_cache(maxsize=4096)
def _boot(raw: str) -> dict[str, Any] | None:
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    return BootInfo(
        vendor=info.get("charge_point_vendor") or info.get("vendor_name"),
        model=info.get("charge_point_model") or info.get("model"),
        serial=info.get("serial_number"),
        firmware=info.get("firmware_version"),
    ).model_dump(mode="json")
