"""``oicp-bridge status``: every EVSE from the state database, as a table or JSON.

Works without a running bridge: it reads the state database (safe while the bridge runs:
SQLite WAL readers never block the writer).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Collection, Sequence
from typing import IO, Any

from bridge.api.envelope import iso
from bridge.config import Settings
from bridge.delivery.data_outbox import data_state
from bridge.errors import EXIT_OK
from bridge.status.registry import Registry
from bridge.status.table import OICP_STATUSES
from bridge.store.base import CatalogRow, EvseDataRow
from bridge.store.sqlite import read_snapshot

__all__ = ["parse_oicp_statuses", "status"]

COLUMNS = ("EVSE ID", "CHARGE POINT", "OCPP", "OICP", "HUB", "PENDING", "LAST PUSH", "DATA")


def parse_oicp_statuses(text: str) -> frozenset[str]:
    """``Occupied,outofservice`` → the OICP statuses, as the status API's ``status`` filter
    takes them (comma-separated, any case); ValueError names a value that is not one."""
    by_lower = {s.value.lower(): s.value for s in OICP_STATUSES}
    chosen = set()
    for part in text.split(","):
        value = by_lower.get(part.strip().lower())
        if value is None:
            allowed = ", ".join(s.value for s in OICP_STATUSES)
            raise ValueError(f"{part.strip()!r} is not an OICP status; use one of {allowed}")
        chosen.add(value)
    return frozenset(chosen)


def status(
    settings: Settings,
    *,
    oicp_statuses: Collection[str] | None = None,
    pending_only: bool = False,
    as_json: bool = False,
    out: IO[str] = sys.stdout,
) -> int:
    """Print every EVSE from the state database (raises StoreError if there is none)."""
    state = settings.state
    if state.postgres and state.url is not None:
        from bridge.store.postgres import read_snapshot_url

        snapshot = read_snapshot_url(state.url, state.where)
    else:
        snapshot = read_snapshot(state.database)
    registry = Registry.from_settings(settings)
    _add_catalog(registry, snapshot.catalog)
    rows = {r.evse_id: r for r in snapshot.evses if not r.removed}
    data = {r.evse_id: r for r in snapshot.evse_data}
    owners = registry.configured_evse_ids()
    owners.update({evse_id: r.charge_point_id for evse_id, r in rows.items()})
    connectors: dict[str, list[str]] = {}
    for c in sorted(snapshot.connectors, key=lambda c: (c.evse_key, c.connector_id)):
        evse_id = registry.evse_id(c.charge_point_id, c.evse_key)
        if evse_id is not None:
            connectors.setdefault(evse_id, []).append(c.ocpp_status)
    now = time.time()
    items: list[dict[str, Any]] = []
    for evse_id in sorted(owners):
        row = rows.get(evse_id)
        now_status = row.status if row else "Unknown"
        if oicp_statuses is not None and now_status not in oicp_statuses:
            continue
        if pending_only and (row is None or row.pending_since is None):
            continue
        item = {
            "evse_id": evse_id,
            "charge_point_id": owners[evse_id],
            "ocpp_status": connectors.get(evse_id, []),
            "status": now_status,
            "hub_status": row.hub_status if row else None,
            "pending_since": iso(row.pending_since) if row else None,
            "pending_s": round(now - row.pending_since, 1) if row and row.pending_since else None,
            "last_outcome": row.last_outcome if row else None,
            "last_code": row.last_code if row else None,
            "parked": row.parked_code if row else None,
            # EVSE data at the hub (None: the EVSE has none, e.g. a station of the file).
            "data": data_state(data[evse_id]) if evse_id in data else None,
            "data_errors": _errors(data.get(evse_id)),
        }
        items.append(item)
    if as_json:
        print(json.dumps(items, indent=2), file=out)
        return EXIT_OK
    print(_table(items), file=out)
    pending = sum(1 for i in items if i["pending_since"] is not None)
    print(f"\n{len(items)} EVSEs, {pending} pending ({settings.state.where})", file=out)
    return EXIT_OK


def _errors(row: EvseDataRow | None) -> list[str]:
    if row is None or row.errors is None or not row.want:
        return []
    return [f"{e['field']}: {e['message']}" for e in json.loads(row.errors)]


def _add_catalog(registry: Registry, rows: Sequence[CatalogRow]) -> None:
    """The catalog's shared stations (e.g. created over the API) into the registry."""
    for row in rows:
        if row.table != "catalog_station":
            continue
        body = json.loads(row.body)
        if body.get("deployment_state") != "production" or body.get("status_source") == "api":
            continue
        registry.set_charger(row.id, {
            number: evse["evse_id"] for evse in body.get("evses", [])
            if evse.get("status") != "REMOVED" for number in evse["ocpp_ids"]
        })  # fmt: skip


def _table(items: list[dict[str, Any]]) -> str:
    cells = [COLUMNS]
    for i in items:
        last = " ".join(x for x in (i["last_outcome"], i["last_code"]) if x) or "-"
        if i["parked"]:
            last += f" (parked {i['parked']})"
        cells.append((
            i["evse_id"], i["charge_point_id"], ",".join(i["ocpp_status"]) or "-", i["status"],
            i["hub_status"] or "-", f"{i['pending_s']:.0f}s" if i["pending_s"] is not None
            else "-", last, i["data"] or "-",
        ))  # fmt: skip
    widths = [max(len(row[n]) for row in cells) for n in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )
