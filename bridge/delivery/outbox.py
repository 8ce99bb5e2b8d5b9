"""The durable outbox: per EVSE, the status we want the hub to have and what the hub has.

What the hub has is modelled honestly. ``hub_status`` is the status the hub holds as far as we
know: ``None`` when we do not know it (never acknowledged, or a request whose outcome is unknown
since: a timeout, a connection lost after sending). ``hub_holds`` says whether the hub may hold
the record (it decides insert vs update, and whether a removed EVSE needs a delete).

An EVSE is *pending* while the hub may be wrong about it: a configured EVSE whose status differs
from ``hub_status`` (so also whenever that is unknown), or an EVSE no longer configured that the
hub may still hold (it gets a delete). Pending is per EVSE, not per change, so the queue is
bounded by the number of EVSEs: a second change before the push went out replaces the first
(coalescing), and a change back to what the hub is known to have cancels the push.

Order is first-pending-first-pushed; an EVSE whose push was refused for now goes to the back
(and may wait for a per-EVSE backoff), so one EVSE cannot hold up the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from bridge.delivery.queue import PendingQueue
from bridge.status.engine import EvseChange
from bridge.status.table import OicpStatus
from bridge.store.base import REMOVED, EvseRow, StagedStore

#: EvseID → (charge point, current status) of every EVSE the bridge knows (configured or
#: learned from a template): what the engine computes.
Current = Mapping[str, tuple[str, OicpStatus]]


class Outbox(PendingQueue[EvseRow]):
    """The status outbox; its queue (``bridge.delivery.queue``) holds an EVSE's status back
    (``_held``) while ``gate`` says no, until :meth:`release`."""

    FOLLOWED = ("hub_status", "hub_holds", "hub_acked_at", "pending_since", "attempts",
                "last_outcome", "last_code", "last_info", "last_push_at",
                "parked_code")  # fmt: skip

    def __init__(
        self,
        store: StagedStore,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock=clock, monotonic=monotonic)
        self.store = store
        #: Whether an EVSE's status may go to the hub now (EVSE data: only once the hub holds
        #: the EVSE's data; ``DataOutbox.status_may_go``). None: always. Deletes always may.
        self.gate: Callable[[str], bool] | None = None

    # -- changes -----------------------------------------------------------------------------
    def reconcile(self, current: Current) -> list[str]:
        """At start: bring every row in line with what the bridge computes now.

        The configuration (EvseIDs, status overrides, offline status) may have changed since
        the rows were written, so statuses are recomputed from the stored connector statuses
        and every difference is queued; EVSEs no longer configured are marked removed (and get
        a delete if the hub may hold them). Returns the EvseIDs whose row changed.
        """
        now = self.clock()
        touched = []
        for evse_id, (cp_id, status) in current.items():
            row = self.rows.get(evse_id)
            if row is None:
                if status is OicpStatus.UNKNOWN:
                    continue  # nothing reported yet: nothing to tell the hub
                row = self.rows[evse_id] = EvseRow(evse_id, cp_id, status.value)
            elif row.status == status.value and not row.removed and row.charge_point_id == cp_id:
                self.refresh(row, now)
                continue
            if row.status != status.value or row.removed:
                row.status, row.changed_at = status.value, now
                row.parked_code = None  # a new status (or a new life) deserves a new try
            row.charge_point_id = cp_id
            self.refresh(row, now)
            touched.append(evse_id)
        for evse_id, row in self.rows.items():
            if evse_id not in current:
                if not row.removed:
                    row.parked_code = REMOVED
                    touched.append(evse_id)
                self.refresh(row, now)
        return touched

    def apply(self, changes: Iterable[EvseChange]) -> None:
        """Take the engine's status changes; marks EVSEs pending and stages their rows."""
        now = self.clock()
        for change in changes:
            row = self.rows.get(change.evse_id)
            if row is None:
                row = self.rows[change.evse_id] = EvseRow(
                    change.evse_id, change.charge_point_id, change.new.value
                )
            row.status = change.new.value
            row.changed_at = now
            row.parked_code = None  # a new status deserves a new try...
            if self._waiting.pop(change.evse_id, None) is not None:
                row.attempts = 0  # ...now, not after the backoff the old one earned
                self._pending[change.evse_id] = None
            self.refresh(row, now)

    def refresh(self, row: EvseRow, now: float | None = None) -> None:
        """Recompute whether ``row`` needs a push, and stage it for the next commit."""
        evse_id = row.evse_id
        queued = evse_id in self._pending or evse_id in self._waiting or evse_id in self._held
        if _needs_push(row):
            if not queued:
                row.pending_since = now if now is not None else self.clock()
                row.attempts = 0
                self._pending[evse_id] = None
                self.changed.set()
        elif queued:
            row.pending_since = None
            self._pending.pop(evse_id, None)
            self._waiting.pop(evse_id, None)
            self._held.pop(evse_id, None)
        self.store.put_evse(row)

    def withdraw(self, evse_id: str) -> None:
        """This EVSE leaves the hub (deprecated or stock station, REMOVED EVSE, new EvseID).

        Durable with the change that caused it (staged here, committed with it): it is marked
        removed, so the lane deletes it if the hub may hold it and never inserts or updates it
        again, unless it is shared anew (a new status brings it back). Without a row the hub
        never had it: nothing to do.
        """
        row = self.rows.get(evse_id)
        if row is None or row.removed:
            return
        row.parked_code = REMOVED
        self.refresh(row)

    # -- queries ---------------------------------------------------------------------------
    def head(self, now: float | None = None) -> EvseRow | None:
        """The EVSE whose push is next: the one pending longest that is not waiting."""
        if self._wake_ups:
            self._wake(self.monotonic() if now is None else now)
        gate = self.gate
        if gate is None:
            for evse_id in self._pending:
                return self.rows[evse_id]
            return None
        held: list[str] = []
        found = None
        for evse_id in self._pending:
            row = self.rows[evse_id]
            if row.removed or gate(evse_id):
                found = row
                break
            held.append(evse_id)  # set aside until release(): each is looked at once
        for evse_id in held:
            del self._pending[evse_id]
            self._held[evse_id] = None
        return found

    # -- outcomes --------------------------------------------------------------------------
    def acknowledged(self, evse_id: str, sent: OicpStatus, code: str) -> EvseRow:
        """The hub accepted ``sent`` (insert or update) for this EVSE."""
        now = self.clock()
        row = self.rows[evse_id]
        row.hub_status = sent.value
        row.hub_holds = True
        row.hub_acked_at = now
        row.last_outcome, row.last_code, row.last_info = "ok", code, None
        row.last_push_at = now
        row.attempts = 0
        self.refresh(row, now)
        return row

    def deleted(self, evse_id: str, code: str | None) -> EvseRow:
        """The hub does not hold this (removed) EVSE any more."""
        now = self.clock()
        row = self.rows[evse_id]
        row.hub_status, row.hub_holds = None, False
        row.last_outcome, row.last_code, row.last_info = "deleted", code, None
        row.last_push_at = now
        row.attempts = 0
        self.refresh(row, now)
        return row

    def ambiguous(self, evse_id: str) -> None:
        """A request for this EVSE may or may not have been (or be) applied by the hub.

        Whatever was acknowledged before, the hub's status is unknown now: the current status
        is pushed again. The hub may hold the record (an insert may have landed), so the next
        push is an update (a 022 answer switches it back to insert).
        """
        row = self.rows[evse_id]
        row.hub_status = None
        row.hub_holds = True
        self.refresh(row)

    def failed(self, evse_id: str, outcome: str, code: str | None, info: str | None) -> EvseRow:
        row = self.rows[evse_id]
        row.last_outcome, row.last_code, row.last_info = outcome, code, info
        row.last_push_at = self.clock()
        self.store.put_evse(row)
        return row

    def defer(self, evse_id: str) -> int:
        """This EVSE's push was refused for now: one more attempt counted, and it goes to the
        back of the queue. Returns its attempts so far."""
        row = self.rows[evse_id]
        row.attempts += 1
        self.store.put_evse(row)
        self.move_back(evse_id)
        return row.attempts

    def set_hub_holds(self, evse_id: str, holds: bool) -> None:
        row = self.rows[evse_id]
        row.hub_holds = holds
        if not holds:
            row.hub_status = None
        self.refresh(row)

    def park(self, evse_id: str, code: str | None) -> None:
        """Set this EVSE aside until its status changes or a fullLoad succeeds.

        A removed EVSE whose delete is refused is given up on: the next fullLoad drops it.
        """
        row = self.rows[evse_id]
        if row.removed:
            row.hub_holds = False
        else:
            row.parked_code = code or "unknown"
        self.refresh(row)

    # -- fullLoad ----------------------------------------------------------------------------
    def full_load_done(self, sent: Current, current: Current) -> None:
        """A fullLoad replaced the hub's set with ``sent``; ``current`` is what the bridge
        computes now (it may have changed while the fullLoad was in flight)."""
        now = self.clock()
        for evse_id, row in self.rows.items():
            if evse_id not in sent:
                row.hub_holds, row.hub_status = False, None  # the fullLoad dropped it
                if evse_id not in current:
                    row.parked_code = REMOVED  # gone from the configuration: stays gone
                self.refresh(row, now)
        for evse_id, (cp_id, status) in sent.items():
            cp_now, status_now = current.get(evse_id, (cp_id, status))
            row = self.rows.get(evse_id) or EvseRow(evse_id, cp_now, status_now.value)
            self.rows[evse_id] = row
            row.hub_status = status.value
            row.hub_holds = True
            row.hub_acked_at = now
            if evse_id in current:
                if row.status != status_now.value:
                    row.status, row.changed_at = status_now.value, now
                row.charge_point_id = cp_now
                row.parked_code = None
            else:  # removed from the configuration while the fullLoad was in flight
                row.parked_code = REMOVED
            row.last_outcome, row.last_code, row.last_info = "fullload", "000", None
            self.refresh(row, now)

    def full_load_ambiguous(self, sent: Current) -> None:
        """A fullLoad's outcome is unknown: per EVSE the hub has either what it had before or
        what the fullLoad carried; only where both are the same status is it known."""
        for evse_id, (cp_id, status) in sent.items():
            found = self.rows.get(evse_id)
            if found is not None and found.hub_status == status.value and found.hub_holds:
                continue  # before and after the same: known
            row = found or EvseRow(evse_id, cp_id, status.value)
            self.rows[evse_id] = row
            row.hub_status = None
            row.hub_holds = True
            self.refresh(row)


def _needs_push(row: EvseRow) -> bool:
    if row.parked_code is None:
        return row.status != row.hub_status
    if row.parked_code == REMOVED:
        return row.hub_holds  # may still be at the hub: delete it
    return False  # parked
