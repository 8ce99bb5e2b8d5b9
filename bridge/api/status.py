"""The read-only status API (``/api/v1``): what the bridge knows of each charger and EVSE.

Lists take ``offset``, ``limit``, ``date_from`` (inclusive) and ``date_to`` (exclusive, both on
``last_updated``) plus their own filters, and return ``X-Total-Count``, ``X-Limit`` and, when
there is more, a ``Link: <…>; rel="next"`` header.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.api.envelope import UNKNOWN_OBJECT, envelope, iso
from bridge.api.paging import PAGING, boolean, choice, page, paged, single
from bridge.errors import OpsRequestError
from bridge.ocpp.rpc import PROTOCOLS
from bridge.status.table import OICP_STATUSES, OcppStatus
from bridge.store.base import ChargePointRow, EvseRow

if TYPE_CHECKING:
    from bridge.api.context import ApiContext

PREFIX = "/api/v1"
OICP_VALUES = tuple(s.value for s in OICP_STATUSES)
OCPP_VALUES = tuple(s.value for s in OcppStatus)


# -- the resources ------------------------------------------------------------------------------
class StatusApi:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    # charge points
    async def charge_points(self, request: web.Request) -> web.Response:
        values = single(request.query, (*PAGING, "connected", "offline", "protocol"))
        window = page(values)
        connected = boolean(values, "connected")
        offline = boolean(values, "offline")
        protocols = choice(values, "protocol", PROTOCOLS)
        items = []
        for cp_id in self._charge_point_ids():
            item, updated = self._charge_point(cp_id)
            if connected is not None and item["connected"] is not connected:
                continue
            if offline is not None and item["offline"] is not offline:
                continue
            if protocols is not None and item["protocol"] not in protocols:
                continue
            if window.window(updated):
                items.append(item)
        return paged(request, window, items)

    async def charge_point(self, request: web.Request) -> web.Response:
        single(request.query, ())
        cp_id = request.match_info["charge_point_id"]
        if cp_id not in self.ctx.catalog.stations and cp_id not in self.ctx.presence:
            raise OpsRequestError(
                UNKNOWN_OBJECT, f"unknown charge point {cp_id!r}", http_status=404
            )
        return envelope(self._charge_point(cp_id)[0])

    def _charge_point_ids(self) -> list[str]:
        return sorted(set(self.ctx.catalog.stations) | set(self.ctx.presence))

    def _charge_point(self, cp_id: str) -> tuple[dict[str, Any], float | None]:
        """The API item and the time it last changed (for date_from / date_to)."""
        b = self.ctx
        row = b.presence.get(cp_id) or ChargePointRow(cp_id)
        updated = _latest(row.last_seen, row.disconnected_at)
        return {
            "charge_point_id": cp_id,
            "configured": cp_id in b.catalog.stations,
            "connected": bool(row.connected),
            "protocol": row.protocol,
            "offline": bool(row.offline),
            "last_seen": iso(row.last_seen),
            "disconnected_at": iso(row.disconnected_at),
            "boot": _boot(row.boot),
            "evse_ids": b.engine.evses_of(cp_id),
            "last_updated": iso(updated),
        }, updated

    # EVSEs
    async def evses(self, request: web.Request) -> web.Response:
        values = single(
            request.query,
            (*PAGING, "status", "hub_status", "ocpp_status", "pending", "parked",
             "charge_point_id"),
        )  # fmt: skip
        window = page(values)
        status = choice(values, "status", OICP_VALUES)
        hub_status = choice(values, "hub_status", (*OICP_VALUES, "none"))
        ocpp_status = choice(values, "ocpp_status", OCPP_VALUES)
        pending = boolean(values, "pending")
        parked = boolean(values, "parked")
        cp_filter = values.get("charge_point_id")
        items = []
        for evse_id in self.ctx.engine.evse_ids():
            item, updated = self._evse(evse_id)
            if status is not None and item["status"] not in status:
                continue
            if hub_status is not None and (item["hub_status"] or "none") not in hub_status:
                continue
            if (
                ocpp_status is not None
                and not {c["ocpp_status"] for c in item["connectors"]} & ocpp_status
            ):
                continue
            if pending is not None and item["pending"] is not pending:
                continue
            if parked is not None and (item["parked"] is not None) is not parked:
                continue
            if cp_filter is not None and item["charge_point_id"] != cp_filter:
                continue
            if window.window(updated):
                items.append(item)
        return paged(request, window, items)

    async def evse(self, request: web.Request) -> web.Response:
        single(request.query, ())
        evse_id = request.match_info["evse_id"]
        if self.ctx.engine.charge_point_of(evse_id) is None:
            raise OpsRequestError(UNKNOWN_OBJECT, f"unknown EvseID {evse_id!r}", http_status=404)
        return envelope(self._evse(evse_id)[0])

    def _evse(self, evse_id: str) -> tuple[dict[str, Any], float | None]:
        """The API item and the time it last changed (for date_from / date_to)."""
        b = self.ctx
        cp_id = b.engine.charge_point_of(evse_id) or ""
        connectors = [
            {"evse_key": key, "connector_id": connector, "ocpp_status": status.value}
            for (key, connector), status in b.engine.connectors(evse_id).items()
        ]
        station = b.engine.station_status(cp_id)
        row: EvseRow | None = b.outbox.rows.get(evse_id)
        updated = _latest(*(() if row is None else (row.changed_at, row.hub_acked_at,
                                                     row.last_push_at)))  # fmt: skip
        last_push = None
        if row is not None and row.last_outcome is not None:
            last_push = {
                "outcome": row.last_outcome,
                "code": row.last_code,
                "info": row.last_info,
                "at": iso(row.last_push_at),
                "attempts": row.attempts,
            }
        parked = row.parked if row is not None else None
        return {
            "evse_id": evse_id,
            "charge_point_id": cp_id,
            "connectors": connectors,
            "station_status": station.value if station is not None else None,
            "status": b.engine.status(evse_id).value,
            "hub_status": row.hub_status if row is not None else None,
            "hub_acked_at": iso(row.hub_acked_at if row is not None else None),
            "pending": b.outbox.is_pending(evse_id),
            "pending_since": iso(row.pending_since if row is not None else None),
            "parked": parked,
            "last_push": last_push,
            "last_updated": iso(updated),
        }, updated

    # delivery summary
    async def delivery(self, request: web.Request) -> web.Response:
        single(request.query, ())
        return envelope(self.ctx.delivery())


# -- helpers ------------------------------------------------------------------------------------
def _latest(*stamps: float | None) -> float | None:
    known: Iterable[float] = (s for s in stamps if s is not None)
    return max(known, default=None)


def _boot(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def delivery_summary(
    engine: Any,
    outbox: Any,
    worker: Any,
    *,
    base_url: str,
    operator_id: str,
    last_full_load: float | None,
) -> dict[str, Any]:
    """The /api/v1/delivery answer: how far the hub is behind and why."""
    hub_counts: dict[str, int] = {}
    for evse_id in engine.evse_ids():
        row = outbox.rows.get(evse_id)
        key = (row.hub_status if row is not None else None) or "none"
        hub_counts[key] = hub_counts.get(key, 0) + 1
    return {
        "hub": base_url,
        "operator_id": operator_id,
        "pending": len(outbox),
        "oldest_pending_age_s": round(outbox.oldest_pending_age(), 3),
        "paused": worker is not None and worker.paused_reason is not None,
        "paused_reason": worker.paused_reason if worker is not None else None,
        "in_flight": bool(worker is not None and worker.in_flight),
        "full_load_pending": bool(worker is not None and worker.full_load.requested),
        "last_full_load": iso(last_full_load),
        "evses_by_hub_status": dict(sorted(hub_counts.items())),
    }
