"""The read-only status API on the ops port, in the OCPI style.

Every answer is an envelope ``{"data", "status_code", "status_message", "timestamp"}``.
``status_code`` 1000 is success, 2xxx a problem with the request, 3xxx a problem of the bridge.
As in OCPI, a request that reaches an existing resource is answered with HTTP 200 even when its
parameters are refused (``status_code`` 2001 says why); an unknown object is HTTP 404 with 2003.

Lists take ``offset``, ``limit``, ``date_from`` (inclusive) and ``date_to`` (exclusive, both on
``last_updated``) plus their own filters, and return ``X-Total-Count``, ``X-Limit`` and, when
there is more, a ``Link: <…>; rel="next"`` header.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from multidict import MultiMapping

from bridge.errors import OpsRequestError
from bridge.ocpp.rpc import PROTOCOLS
from bridge.status.table import OICP_STATUSES, OcppStatus
from bridge.store.sqlite import ChargePointRow, EvseRow

if TYPE_CHECKING:
    from bridge.app import Bridge

__all__ = [
    "API_PREFIX",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "add_routes",
    "api_middleware",
    "envelope",
]

log = structlog.get_logger("bridge.ops")

API_PREFIX = "/api/v1"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # larger limits are lowered to this; X-Limit tells the client

# OCPI status codes used here.
SUCCESS = 1000
CLIENT_ERROR = 2000
INVALID_PARAMETERS = 2001
UNKNOWN_OBJECT = 2003
SERVER_ERROR = 3000

PAGING = ("offset", "limit", "date_from", "date_to")
OICP_VALUES = tuple(s.value for s in OICP_STATUSES)
OCPP_VALUES = tuple(s.value for s in OcppStatus)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- envelope -----------------------------------------------------------------------------------
def envelope(
    data: Any,
    status_code: int = SUCCESS,
    status_message: str = "Success",
    *,
    http_status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = {
        "data": data,
        "status_code": status_code,
        "status_message": status_message,
        "timestamp": iso(time.time()),
    }
    return web.json_response(body, status=http_status, headers=headers)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error under the API prefix with an envelope, never a bare HTTP page."""
    if not request.path.startswith(API_PREFIX):
        return await handler(request)
    try:
        return await handler(request)
    except OpsRequestError as exc:
        return envelope(None, exc.status_code, exc.message, http_status=exc.http_status)
    except web.HTTPNotFound:
        return envelope(None, CLIENT_ERROR, f"no such endpoint: {request.path}", http_status=404)
    except web.HTTPMethodNotAllowed as exc:
        return envelope(
            None, CLIENT_ERROR,
            f"{request.method} not allowed; the status API is read-only "
            f"({', '.join(sorted(exc.allowed_methods))})",
            http_status=405,
        )  # fmt: skip
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("ops.api_error", path=request.path, error=str(exc))
        return envelope(
            None, SERVER_ERROR, f"internal error: {type(exc).__name__}", http_status=500
        )


def add_routes(app: web.Application, bridge: Bridge) -> None:
    api = StatusApi(bridge)
    app.router.add_get(f"{API_PREFIX}/charge-points", api.charge_points)
    app.router.add_get(f"{API_PREFIX}/charge-points/{{charge_point_id}}", api.charge_point)
    app.router.add_get(f"{API_PREFIX}/evses", api.evses)
    app.router.add_get(f"{API_PREFIX}/evses/{{evse_id}}", api.evse)
    app.router.add_get(f"{API_PREFIX}/delivery", api.delivery)


# -- query parameters ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Page:
    offset: int
    limit: int
    date_from: float | None
    date_to: float | None

    def window(self, last_updated: float | None) -> bool:
        """Whether an object with this ``last_updated`` falls inside date_from/date_to."""
        if self.date_from is None and self.date_to is None:
            return True
        if last_updated is None:
            return False
        if self.date_from is not None and last_updated < self.date_from:
            return False
        return not (self.date_to is not None and last_updated >= self.date_to)


def _bad(message: str) -> OpsRequestError:
    return OpsRequestError(INVALID_PARAMETERS, message)


def _single(query: MultiMapping[str], allowed: Sequence[str]) -> dict[str, str]:
    """The query as a plain dict; unknown or repeated parameters are refused by name."""
    unknown = sorted({k for k in query if k not in allowed})
    if unknown:
        raise _bad(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed)}"
        )
    values: dict[str, str] = {}
    for key in query:
        got = query.getall(key)
        if len(got) > 1:
            raise _bad(f"{key}: given {len(got)} times; give it once")
        values[key] = got[0]
    return values


def _int(values: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = values.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name}: {raw!r} is not an integer") from None
    if value < minimum:
        raise _bad(f"{name}: must be at least {minimum}, got {value}")
    return value


def _datetime(values: Mapping[str, str], name: str) -> float | None:
    raw = values.get(name)
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw.strip().replace(" ", "+"))
    except ValueError:
        raise _bad(
            f"{name}: {raw!r} is not an RFC 3339 date-time (e.g. 2026-01-31T12:00:00Z)"
        ) from None
    if when.tzinfo is None:  # OCPI date-times are UTC
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _page(values: Mapping[str, str]) -> Page:
    page = Page(
        offset=_int(values, "offset", 0, 0),
        limit=min(_int(values, "limit", DEFAULT_LIMIT, 0), MAX_LIMIT),
        date_from=_datetime(values, "date_from"),
        date_to=_datetime(values, "date_to"),
    )
    if page.date_from is not None and page.date_to is not None and page.date_from >= page.date_to:
        raise _bad("date_from must be earlier than date_to")
    return page


def _bool(values: Mapping[str, str], name: str) -> bool | None:
    raw = values.get(name)
    if raw is None:
        return None
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _bad(f"{name}: {raw!r} is not a boolean; use true or false")


def _choice(values: Mapping[str, str], name: str, allowed: Sequence[str]) -> set[str] | None:
    """A comma-separated subset of ``allowed`` (matched case-insensitively)."""
    raw = values.get(name)
    if raw is None:
        return None
    by_lower = {a.lower(): a for a in allowed}
    chosen: set[str] = set()
    for part in raw.split(","):
        item = by_lower.get(part.strip().lower())
        if item is None:
            raise _bad(f"{name}: {part.strip()!r} is not one of {', '.join(allowed)}")
        chosen.add(item)
    return chosen


def _paged(request: web.Request, page: Page, items: Sequence[dict[str, Any]]) -> web.Response:
    total = len(items)
    chunk = list(items[page.offset : page.offset + page.limit])
    headers = {"X-Total-Count": str(total), "X-Limit": str(page.limit)}
    following = page.offset + len(chunk)
    if page.limit > 0 and following < total:
        url = request.url.update_query(offset=str(following), limit=str(page.limit))
        headers["Link"] = f'<{url}>; rel="next"'
    return envelope(chunk, headers=headers)


# -- the resources ------------------------------------------------------------------------------
class StatusApi:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    # charge points
    async def charge_points(self, request: web.Request) -> web.Response:
        values = _single(request.query, (*PAGING, "connected", "offline", "protocol"))
        page = _page(values)
        connected = _bool(values, "connected")
        offline = _bool(values, "offline")
        protocols = _choice(values, "protocol", PROTOCOLS)
        items = []
        for cp_id in self._charge_point_ids():
            item, updated = self._charge_point(cp_id)
            if connected is not None and item["connected"] is not connected:
                continue
            if offline is not None and item["offline"] is not offline:
                continue
            if protocols is not None and item["protocol"] not in protocols:
                continue
            if page.window(updated):
                items.append(item)
        return _paged(request, page, items)

    async def charge_point(self, request: web.Request) -> web.Response:
        _single(request.query, ())
        cp_id = request.match_info["charge_point_id"]
        if (
            cp_id not in self.bridge.settings.chargers
            and cp_id not in self.bridge.ingest.charge_points
        ):
            raise OpsRequestError(
                UNKNOWN_OBJECT, f"unknown charge point {cp_id!r}", http_status=404
            )
        return envelope(self._charge_point(cp_id)[0])

    def _charge_point_ids(self) -> list[str]:
        return sorted(set(self.bridge.settings.chargers) | set(self.bridge.ingest.charge_points))

    def _charge_point(self, cp_id: str) -> tuple[dict[str, Any], float | None]:
        """The API item and the time it last changed (for date_from / date_to)."""
        b = self.bridge
        row = b.ingest.charge_points.get(cp_id) or ChargePointRow(cp_id)
        updated = _latest(row.last_seen, row.disconnected_at)
        return {
            "charge_point_id": cp_id,
            "configured": cp_id in b.settings.chargers,
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
        values = _single(
            request.query,
            (*PAGING, "status", "hub_status", "ocpp_status", "pending", "parked",
             "charge_point_id"),
        )  # fmt: skip
        page = _page(values)
        status = _choice(values, "status", OICP_VALUES)
        hub_status = _choice(values, "hub_status", (*OICP_VALUES, "none"))
        ocpp_status = _choice(values, "ocpp_status", OCPP_VALUES)
        pending = _bool(values, "pending")
        parked = _bool(values, "parked")
        cp_filter = values.get("charge_point_id")
        items = []
        for evse_id in self.bridge.engine.evse_ids():
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
            if page.window(updated):
                items.append(item)
        return _paged(request, page, items)

    async def evse(self, request: web.Request) -> web.Response:
        _single(request.query, ())
        evse_id = request.match_info["evse_id"]
        if self.bridge.engine.charge_point_of(evse_id) is None:
            raise OpsRequestError(UNKNOWN_OBJECT, f"unknown EvseID {evse_id!r}", http_status=404)
        return envelope(self._evse(evse_id)[0])

    def _evse(self, evse_id: str) -> tuple[dict[str, Any], float | None]:
        """The API item and the time it last changed (for date_from / date_to)."""
        b = self.bridge
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
        _single(request.query, ())
        b = self.bridge
        worker = b.worker
        hub_counts: dict[str, int] = {}
        for evse_id in b.engine.evse_ids():
            row = b.outbox.rows.get(evse_id)
            key = (row.hub_status if row is not None else None) or "none"
            hub_counts[key] = hub_counts.get(key, 0) + 1
        return envelope(
            {
                "hub": b.settings.oicp.base_url,
                "operator_id": b.settings.oicp.operator_id,
                "pending": len(b.outbox),
                "oldest_pending_age_s": round(b.outbox.oldest_pending_age(), 3),
                "paused": worker is not None and worker.paused_reason is not None,
                "paused_reason": worker.paused_reason if worker is not None else None,
                "in_flight": bool(worker is not None and worker.in_flight),
                "full_load_pending": bool(worker is not None and worker.full_load.requested),
                "last_full_load": iso(b.last_full_load),
                "evses_by_hub_status": dict(sorted(hub_counts.items())),
            }
        )


# -- helpers ------------------------------------------------------------------------------------
def iso(epoch: float | None) -> str | None:
    """RFC 3339 UTC with a ``Z``, as OCPI writes date-times."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
