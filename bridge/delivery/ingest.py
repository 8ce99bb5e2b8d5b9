"""Where charger events enter delivery: record durably, then let the push worker know.

The OCPP handlers call these methods and only answer the charger after they return, so a
confirmed StatusNotification is always on disk first. Nothing here talks to the hub.

Reports are ordered by the time the charger says they were made (``timestamp``; a report
without one counts as made when it arrived, and a timestamp in the future counts as "now"), per
connector: a report older than the one held for its connector is confirmed to the charger but
changes nothing (``status.stale``). Chargers replay queued messages after a reconnect, and a
2.0.1 NotifyEvent may describe an older moment than the StatusNotification before it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import structlog

from bridge.delivery.outbox import Outbox
from bridge.hotlog import HotLogger
from bridge.status.aggregate import STATION_DOWN
from bridge.status.engine import STATION, EvseChange, StatusEngine, StatusReport
from bridge.status.table import OcppStatus
from bridge.store.base import ChargePointRow, ConnectorRow, StagedStore

log = structlog.get_logger("bridge.ingest")
hot_log = HotLogger("bridge.ingest")  # status.received: a line per StatusNotification

Slot = tuple[str, int, int]  # (charge point, evse_key, connector_id)
_UNMAPPED_LOGGED_MAX = 10_000
#: The charge point columns another replica's write tells this one.
PRESENCE = (
    "protocol",
    "connected",
    "offline",
    "last_seen",
    "disconnected_at",
    "boot",
    "replica",
)  # (charger, number) pairs remembered for "logged once"


class Ingest:
    def __init__(
        self,
        engine: StatusEngine,
        outbox: Outbox,
        store: StagedStore,
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
        self._reported: dict[Slot, float] = {}  # when the report held for each connector was made
        self._unmapped_logged: set[tuple[str, int]] = set()
        self._background: set[asyncio.Task[None]] = set()
        # metrics hook: (charge point, protocol version, OCPP status)
        self.on_status: Callable[[str, str, OcppStatus], None] | None = None
        #: This replica's name when replicas share the database (None: the one process).
        self.replica_id: str | None = None
        #: Whether this process decides that a charger went offline (the grace timers): the
        #: one process, or the push leader of replicas (one decider, no flapping).
        self.decides_offline = True
        #: Called with (charge point, replica) when another replica claims a charger that has a
        #: connection here; the database decides which claim is newer (see remote_presence).
        self.on_taken: Callable[[str, str], None] | None = None

    def restore(self, rows: list[ChargePointRow], connectors: Iterable[ConnectorRow] = ()) -> None:
        for row in rows:
            if self.replica_id is None or row.replica == self.replica_id:
                # Nobody is connected to a process that just started. (Replicas: a charger
                # held by another stays connected; a dead one's are swept by the leader.)
                row.connected = False
            self.charge_points[row.charge_point_id] = row
        for c in connectors:
            self._reported[(c.charge_point_id, c.evse_key, c.connector_id)] = report_time(
                c.reported_at, c.received_at
            )

    def start_grace_for_all(self) -> None:
        """After a start, chargers that were online get the grace to reconnect."""
        for cp_id, row in self.charge_points.items():
            if not row.offline:
                self._start_grace(cp_id)

    def take_offline_decisions(self) -> None:
        """This replica became the one that decides (the push leader): every charger that no
        replica holds gets what is left of its grace, counted from its disconnection."""
        self.decides_offline = True
        now = self.clock()
        for cp_id, row in self.charge_points.items():
            if row.connected or row.offline or self._connections.get(cp_id):
                continue
            gone = now - row.disconnected_at if row.disconnected_at is not None else 0.0
            self._start_grace(cp_id, max(0.0, self.offline_grace - gone))

    def leave_offline_decisions(self) -> None:
        """Another replica decides from now on."""
        self.decides_offline = False
        self.close()

    # -- what other replicas wrote -------------------------------------------------------------
    def remote_status(self, c: ConnectorRow) -> None:
        """A connector status another replica stored: the engine follows (and so the outbox)."""
        slot = (c.charge_point_id, c.evse_key, c.connector_id)
        at = report_time(c.reported_at, c.received_at)
        held = self._reported.get(slot)
        if held is not None and at < held:
            return
        self._reported[slot] = at
        status = OcppStatus(c.ocpp_status)
        changes = self.engine.apply(StatusReport(*slot, status))[1]
        self._changed(changes)

    def remote_presence(self, row: ChargePointRow) -> None:
        """A charger's presence as another replica wrote it."""
        cp_id = row.charge_point_id
        if self._connections.get(cp_id):
            # Connected here. A claim by another replica may be newer, or older than ours and
            # read before ours was committed: the caller asks the database, which holds the
            # newest claim, and closes this connection only if it lost (taken_by).
            if row.connected and row.replica != self.replica_id and self.on_taken is not None:
                self.on_taken(cp_id, row.replica or "?")
            return
        mine = self._row(cp_id)
        for name in PRESENCE:
            setattr(mine, name, getattr(row, name))
        self._changed(self.engine.set_offline(cp_id, row.offline))
        if self.decides_offline:
            if row.connected or row.offline:
                self._cancel_grace(cp_id)
            elif cp_id not in self._grace and not self._connections.get(cp_id):
                gone = self.clock() - (row.disconnected_at or self.clock())
                self._start_grace(cp_id, max(0.0, self.offline_grace - gone))

    def taken_by(self, charge_point_id: str, replica: str) -> None:
        """The database confirms: another replica holds this charger's newest connection (the
        one here is being closed, and its end must not be written over the other's)."""
        row = self._row(charge_point_id)
        row.connected, row.replica = True, replica
        self._cancel_grace(charge_point_id)

    def swept(self, charge_point_id: str, disconnected_at: float) -> None:
        """The leader found this charger's replica dead: disconnected as of then."""
        row = self._row(charge_point_id)
        row.connected, row.disconnected_at = False, disconnected_at
        if self.decides_offline and not row.offline:
            gone = self.clock() - disconnected_at
            self._start_grace(charge_point_id, max(0.0, self.offline_grace - gone))

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
        at = now if reported_at is None else report_time(reported_at, now)
        slot = (charge_point_id, evse_key, connector_id)
        held = self._reported.get(slot)
        if held is not None and at < held:
            log.info("status.stale", charge_point_id=charge_point_id, evse_key=evse_key,
                     connector_id=connector_id, ocpp_status=status.value,
                     reported_at=reported_at, newer_held_at=_iso(held))  # fmt: skip
            return  # confirmed, changes nothing
        evse_id = None
        if evse_key != STATION:
            evse_id = self.engine.registry.evse_id(charge_point_id, evse_key)
            if evse_id is None:
                self._unmapped(charge_point_id, evse_key)
                # Answered; nothing stored, nothing pushed. The engine keeps it in memory (a
                # bounded number) in case the catalog maps this connector later.
                self.engine.apply(StatusReport(charge_point_id, evse_key, connector_id, status))
                return
        changes: list[EvseChange] = []
        if connector_id != 0 and status not in STATION_DOWN and self._lifts(charge_point_id):
            # 2.0.1: a station (or EVSE) back in service reports its connectors, not always
            # itself; an operative connector reported after the outage ends it.
            for key, conn in self.engine.down(charge_point_id, evse_id, evse_key):
                if self._reported.get((charge_point_id, key, conn), at) <= at:
                    changes += self._lift((charge_point_id, key, conn), reported_at, at, now)
        evse_id, more = self.engine.apply(
            StatusReport(charge_point_id, evse_key, connector_id, status)
        )
        self._reported[slot] = at
        row = ConnectorRow(
            charge_point_id, evse_key, connector_id, status.value, error_code, reported_at, now
        )
        self.store.put_connector(row)
        if changes:
            changes += more
        else:
            changes = more
        if changes:
            self.outbox.apply(changes)
        # last_seen: set by seen() for every message (the session calls it first), kept in
        # memory; the row is written on connect, boot and disconnect.
        if self.on_status is not None:
            self.on_status(charge_point_id, self._row(charge_point_id).protocol or "?", status)
        hot_log.info(
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
        await self.store.commit()

    def _lift(self, slot: Slot, reported_at: str | None, at: float, now: float) -> list[EvseChange]:
        """End a station or EVSE outage: it is Available as of the connector report."""
        cp_id, key, conn = slot
        changes = self.engine.apply(StatusReport(cp_id, key, conn, OcppStatus.AVAILABLE))[1]
        self._reported[slot] = at
        self.store.put_connector(ConnectorRow(cp_id, key, conn, OcppStatus.AVAILABLE.value,
                                              None, reported_at, now))  # fmt: skip
        return changes

    def _lifts(self, charge_point_id: str) -> bool:
        row = self.charge_points.get(charge_point_id)
        return row is not None and row.protocol == "2.0.1"

    def _unmapped(self, charge_point_id: str, evse_key: int) -> None:
        key = (charge_point_id, evse_key)
        if key in self._unmapped_logged or len(self._unmapped_logged) >= _UNMAPPED_LOGGED_MAX:
            return
        self._unmapped_logged.add(key)
        log.warning("status.unmapped", charge_point_id=charge_point_id, evse_key=evse_key,
                    reason="no EvseID for this connector/EVSE number: answered, not stored "
                    "(logged once)")  # fmt: skip

    # -- presence --------------------------------------------------------------------------
    def connect(self, charge_point_id: str, protocol: str) -> None:
        """A connection opened (in memory; :meth:`connected` also commits)."""
        now = self.clock()
        self._connections[charge_point_id] = self._connections.get(charge_point_id, 0) + 1
        self._cancel_grace(charge_point_id)
        row = self._row(charge_point_id)
        row.protocol, row.connected, row.last_seen, row.disconnected_at = protocol, True, now, None
        row.replica = self.replica_id
        if row.offline:
            row.offline = False
            changes = self.engine.set_offline(charge_point_id, False)
            self._changed(changes)
            log.info("charger.online", charge_point_id=charge_point_id, changed=len(changes))
        self.store.put_charge_point(row)

    def disconnect(self, charge_point_id: str) -> None:
        """A connection closed (in memory; :meth:`disconnected` also commits)."""
        left = self._connections.get(charge_point_id, 1) - 1
        if left > 0:  # a newer connection replaced this one: the charger is still here
            self._connections[charge_point_id] = left
            return
        self._connections.pop(charge_point_id, None)
        row = self._row(charge_point_id)
        if row.replica != self.replica_id:
            return  # another replica holds the charger now (it connected there since)
        row.connected, row.disconnected_at = False, self.clock()
        self.store.put_charge_point(row)
        self._start_grace(charge_point_id)

    async def connected(self, charge_point_id: str, protocol: str) -> None:
        """Count the connection first: whatever fails after, :meth:`disconnected` (which the
        server always calls) undoes it."""
        self.connect(charge_point_id, protocol)
        await self.store.commit()

    async def disconnected(self, charge_point_id: str) -> None:
        self.disconnect(charge_point_id)
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

    def _start_grace(self, charge_point_id: str, delay: float | None = None) -> None:
        self._cancel_grace(charge_point_id)
        if not self.decides_offline:
            return
        loop = asyncio.get_running_loop()
        mine: list[asyncio.TimerHandle] = []
        handle = loop.call_later(
            self.offline_grace if delay is None else delay,
            lambda: self._grace_over(charge_point_id, mine[0]),
        )
        mine.append(handle)
        self._grace[charge_point_id] = handle

    def _cancel_grace(self, charge_point_id: str) -> None:
        handle = self._grace.pop(charge_point_id, None)
        if handle is not None:
            handle.cancel()

    def _grace_over(self, charge_point_id: str, handle: asyncio.TimerHandle) -> None:
        """The grace timer fired: mark the charger offline now, in this same callback, so that
        no reconnect (and new grace) can slip in between; only the commit runs later."""
        if self._grace.get(charge_point_id) is not handle:
            return  # a newer grace (or a connection) has taken over
        del self._grace[charge_point_id]
        if self._connections.get(charge_point_id):
            return
        row = self._row(charge_point_id)
        if row.connected:
            return  # held by another replica
        row.offline = True
        self.store.put_charge_point(row)
        changes = self.engine.set_offline(charge_point_id, True)
        self._changed(changes)
        log.warning(
            "charger.offline",
            charge_point_id=charge_point_id,
            grace_s=self.offline_grace,
            evses=[c.evse_id for c in changes],
            oicp_status=self.engine.offline_status.value,
        )
        task = asyncio.get_running_loop().create_task(self._commit_logged())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _commit_logged(self) -> None:
        try:
            await self.store.commit()
        except Exception:  # kept staged: the next commit writes it
            log.exception("state.commit_failed", what="charger offline")

    def _changed(self, changes: list[EvseChange]) -> None:
        if changes:
            self.outbox.apply(changes)

    def close(self) -> None:
        for handle in self._grace.values():
            handle.cancel()
        self._grace.clear()


def report_time(reported_at: str | None, now: float) -> float:
    """When a report was made, as Unix time: its timestamp, but never later than ``now``
    (a charger clock running ahead must not freeze its later reports); ``now`` without one."""
    if reported_at is None:
        return now
    parsed = _parse(reported_at)
    return now if parsed is None else min(parsed, now)


_last_parsed: tuple[str, float | None] = ("", None)


def _parse(text: str) -> float | None:
    global _last_parsed  # noqa: PLW0603  (chargers of one fleet send the same second in bursts)
    if text == _last_parsed[0]:
        return _last_parsed[1]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        value = None
    else:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = when.timestamp()
    _last_parsed = (text, value)
    return value


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _short(info: dict[str, Any]) -> dict[str, Any]:
    keep = ("charge_point_vendor", "charge_point_model", "firmware_version", "vendor_name", "model")
    return {k: v for k, v in info.items() if k in keep}
