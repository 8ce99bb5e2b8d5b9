"""The durable outbox: per EVSE, the status we want the hub to have and what it has.

An EVSE is *pending* while its current OICP status differs from the last status the hub
acknowledged. Pending is per EVSE, not per change, so the queue is bounded by the number of
EVSEs: a second change before the push went out replaces the first (coalescing), and a change
back to what the hub already has cancels the push. Order is first-pending-first-pushed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from bridge.status.engine import EvseChange
from bridge.status.table import OicpStatus
from bridge.store.sqlite import REMOVED, WITHDRAWN, EvseRow, StateStore


class Outbox:
    def __init__(self, store: StateStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.rows: dict[str, EvseRow] = {}
        self._pending: dict[str, None] = {}  # insertion-ordered set of EvseIDs
        self.changed = asyncio.Event()
        #: Set when an EVSE must leave the hub (withdraw); the bridge answers with a fullLoad.
        self.leaving = asyncio.Event()

    # -- loading and changes ---------------------------------------------------------------
    def restore(self, rows: Iterable[EvseRow]) -> None:
        ordered = sorted(rows, key=lambda r: (r.pending_since is None, r.pending_since or 0))
        for row in ordered:
            self.rows[row.evse_id] = row
            if row.pending_since is not None:
                self._pending[row.evse_id] = None
        if self._pending:
            self.changed.set()
        if any(row.withdrawn for row in self.rows.values()):
            self.leaving.set()  # a withdrawal from before a restart is still owed

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
            row.parked_code = None  # a new status deserves a new try
            self.refresh(row, now)

    def refresh(self, row: EvseRow, now: float | None = None) -> None:
        """Recompute whether ``row`` needs a push, and stage it for the next commit."""
        needed = row.parked_code is None and row.status != row.hub_status
        if needed and row.evse_id not in self._pending:
            row.pending_since = now if now is not None else self.clock()
            row.attempts = 0
            self._pending[row.evse_id] = None
            self.changed.set()
        elif not needed and row.evse_id in self._pending:
            row.pending_since = None
            del self._pending[row.evse_id]
        self.store.put_evse(row)

    def withdraw(self, evse_id: str) -> None:
        """This EVSE leaves the hub (deprecated or stock station, REMOVED EVSE, new EvseID).

        Durable with the change that caused it (staged here, committed with it); it is never
        pushed again unless it is shared anew, and the next fullLoad leaves it out (then it is
        REMOVED). Without a row the hub never had it: nothing to do.
        """
        row = self.rows.get(evse_id)
        if row is None or row.removed or row.withdrawn:
            return
        row.parked_code = WITHDRAWN
        self.refresh(row)
        self.leaving.set()

    def withdrawals(self) -> list[str]:
        """EVSEs that must leave the hub and may still be there."""
        return sorted(e for e, row in self.rows.items() if row.withdrawn)

    # -- queries ---------------------------------------------------------------------------
    def head(self) -> EvseRow | None:
        """The EVSE whose push is next (the one pending longest)."""
        for evse_id in self._pending:
            return self.rows[evse_id]
        return None

    def __len__(self) -> int:
        return len(self._pending)

    def is_pending(self, evse_id: str) -> bool:
        return evse_id in self._pending

    def oldest_pending_age(self) -> float:
        row = self.head()
        if row is None or row.pending_since is None:
            return 0.0
        return max(0.0, self.clock() - row.pending_since)

    # -- outcomes --------------------------------------------------------------------------
    def acknowledged(self, evse_id: str, sent: OicpStatus, outcome: str, code: str) -> EvseRow:
        """The hub accepted ``sent`` for this EVSE."""
        now = self.clock()
        row = self.rows[evse_id]
        row.hub_status = sent.value
        row.hub_holds = True
        row.hub_acked_at = now
        row.last_outcome, row.last_code, row.last_info = outcome, code, None
        row.last_push_at = now
        row.attempts = 0
        self.refresh(row, now)
        return row

    def failed(self, evse_id: str, outcome: str, code: str | None, info: str | None) -> EvseRow:
        row = self.rows[evse_id]
        row.attempts += 1
        row.last_outcome, row.last_code, row.last_info = outcome, code, info
        row.last_push_at = self.clock()
        self.store.put_evse(row)
        return row

    def set_hub_holds(self, evse_id: str, holds: bool) -> None:
        row = self.rows[evse_id]
        row.hub_holds = holds
        if not holds:
            row.hub_status = None
        self.refresh(row)

    def park(self, evse_id: str, code: str | None) -> None:
        """Set this EVSE aside until its status changes or a fullLoad succeeds."""
        row = self.rows[evse_id]
        row.parked_code = code or "unknown"
        self.refresh(row)

    def full_load_done(self, sent: dict[str, tuple[str, OicpStatus]]) -> None:
        """A fullLoad replaced the hub's set with ``sent`` (EvseID → (charge point, status))."""
        now = self.clock()
        for evse_id, (cp_id, status) in sent.items():
            row = self.rows.get(evse_id)
            if row is None:
                row = self.rows[evse_id] = EvseRow(evse_id, cp_id, status.value)
            row.hub_status = status.value
            row.hub_holds = True
            row.hub_acked_at = now
            row.parked_code = None
            row.last_outcome, row.last_code, row.last_info = "fullload", "000", None
            self.refresh(row, now)
        for evse_id, row in self.rows.items():
            if row.parked_code is None and row.pending_since is not None and evse_id not in sent:
                continue  # shared after the fullLoad was built: its own push follows
            if evse_id not in sent and not row.removed:
                # No longer configured: the fullLoad removed it from the hub; never push it.
                row.hub_holds = False
                row.hub_status = None
                row.parked_code = REMOVED
                self.refresh(row, now)
