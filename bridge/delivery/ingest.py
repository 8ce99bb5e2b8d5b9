"""Where charger events enter delivery: record durably, then let the push worker know.

The OCPP handlers call these methods and only answer the charger after they return, so a
confirmed StatusNotification is always on disk first. Nothing here talks to the hub.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import structlog

from bridge.delivery.outbox import Outbox
from bridge.status.engine import EvseChange, StatusEngine, StatusReport
from bridge.status.table import OcppStatus
from bridge.store.sqlite import ChargePointRow, ConnectorRow, StateStore

log = structlog.get_logger("bridge.ingest")


class Ingest:
    def __init__(
        self,
        engine: StatusEngine,
        outbox: Outbox,
        store: StateStore,
        *,
        offline_grace: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.outbox = outbox
        self.store = store
        self.offline_grace = offline_grace
        self.clock = clock
        self.charge_points: dict[str, ChargePointRow] = {}
        self._grace: dict[str, asyncio.TimerHandle] = {}
        self._connections: dict[str, int] = {}  # live connections per charger (replacement)
        # metrics hook: (charge point, protocol version, OCPP status)
        self.on_status: Callable[[str, str, OcppStatus], None] | None = None

    def restore(self, rows: list[ChargePointRow]) -> None:
        for row in rows:
            row.connected = False  # nobody is connected to a process that just started
            self.charge_points[row.charge_point_id] = row

    def start_grace_for_all(self) -> None:
        """After a start, chargers that were online get the grace to reconnect."""
        for cp_id, row in self.charge_points.items():
            if not row.offline:
                self._start_grace(cp_id)

    # -- status ----------------------------------------------------------------------------
    async def status(
        self,
        charge_point_id: str,
        evse_key: int,
        connector_id: int,
        status: OcppStatus,
        *,
        error_code: str | None = None,
        reported_at: str | None = None,
    ) -> None:
        """Record one connector status durably; returns when it is committed."""
        now = self.clock()
        evse_id, changes = self.engine.apply(
            StatusReport(charge_point_id, evse_key, connector_id, status)
        )
        self.store.put_connector(
            ConnectorRow(
                charge_point_id, evse_key, connector_id, status.value, error_code, reported_at, now
            )
        )
        self._apply(changes)
        # last_seen: set by seen() for every message (the session calls it first), kept in
        # memory; the row is written on connect, boot and disconnect.
        if self.on_status is not None:
            self.on_status(charge_point_id, self._row(charge_point_id).protocol or "?", status)
        log.info(
            "status.received",
            charge_point_id=charge_point_id,
            evse_key=evse_key,
            connector_id=connector_id,
            evse_id=evse_id,
            ocpp_status=status.value,
            error_code=error_code,
            oicp_status=self.engine.status(evse_id).value if evse_id else None,
            changed=[c.evse_id for c in changes],
        )
        if evse_id is None and evse_key != 0:
            log.warning(
                "status.unmapped",
                charge_point_id=charge_point_id,
                evse_key=evse_key,
                reason="no EvseID configured for this connector/EVSE number",
            )
        await self.store.commit()

    # -- presence --------------------------------------------------------------------------
    async def connected(self, charge_point_id: str, protocol: str) -> None:
        now = self.clock()
        self._connections[charge_point_id] = self._connections.get(charge_point_id, 0) + 1
        self._cancel_grace(charge_point_id)
        row = self._row(charge_point_id)
        row.protocol, row.connected, row.last_seen, row.disconnected_at = protocol, True, now, None
        if row.offline:
            row.offline = False
            changes = self.engine.set_offline(charge_point_id, False)
            self._apply(changes)
            log.info("charger.online", charge_point_id=charge_point_id, changed=len(changes))
        self.store.put_charge_point(row)
        await self.store.commit()

    async def disconnected(self, charge_point_id: str) -> None:
        left = self._connections.get(charge_point_id, 1) - 1
        if left > 0:  # a newer connection replaced this one: the charger is still here
            self._connections[charge_point_id] = left
            return
        self._connections.pop(charge_point_id, None)
        row = self._row(charge_point_id)
        row.connected, row.disconnected_at = False, self.clock()
        self.store.put_charge_point(row)
        self._start_grace(charge_point_id)
        await self.store.commit()

    async def boot(self, charge_point_id: str, info: dict[str, Any]) -> None:
        row = self._row(charge_point_id)
        row.boot = json.dumps(info, sort_keys=True)
        self._touch(charge_point_id, self.clock())
        log.info("charger.boot", charge_point_id=charge_point_id, **_short(info))
        await self.store.commit()

    def seen(self, charge_point_id: str) -> None:
        """Any message from the charger (kept in memory; persisted with the next write)."""
        row = self.charge_points.get(charge_point_id)
        if row is not None:
            row.last_seen = self.clock()

    def _touch(self, charge_point_id: str, now: float) -> None:
        row = self._row(charge_point_id)
        row.last_seen = now
        self.store.put_charge_point(row)

    def _row(self, charge_point_id: str) -> ChargePointRow:
        row = self.charge_points.get(charge_point_id)
        if row is None:
            row = self.charge_points[charge_point_id] = ChargePointRow(charge_point_id)
        return row

    def _start_grace(self, charge_point_id: str) -> None:
        self._cancel_grace(charge_point_id)
        loop = asyncio.get_running_loop()
        self._grace[charge_point_id] = loop.call_later(
            self.offline_grace, lambda: loop.create_task(self._went_offline(charge_point_id))
        )

    def _cancel_grace(self, charge_point_id: str) -> None:
        handle = self._grace.pop(charge_point_id, None)
        if handle is not None:
            handle.cancel()

    async def _went_offline(self, charge_point_id: str) -> None:
        self._grace.pop(charge_point_id, None)
        if self._connections.get(charge_point_id):
            return
        row = self._row(charge_point_id)
        row.offline = True
        self.store.put_charge_point(row)
        changes = self.engine.set_offline(charge_point_id, True)
        self._apply(changes)
        log.warning(
            "charger.offline",
            charge_point_id=charge_point_id,
            grace_s=self.offline_grace,
            evses=[c.evse_id for c in changes],
            oicp_status=self.engine.offline_status.value,
        )
        await self.store.commit()

    def _apply(self, changes: list[EvseChange]) -> None:
        if changes:
            self.outbox.apply(changes)

    def close(self) -> None:
        for handle in self._grace.values():
            handle.cancel()
        self._grace.clear()


def _short(info: dict[str, Any]) -> dict[str, Any]:
    keep = ("charge_point_vendor", "charge_point_model", "firmware_version", "vendor_name", "model")
    return {k: v for k, v in info.items() if k in keep}
