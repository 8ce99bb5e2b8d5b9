"""The durable outbox of EVSE data (eRoamingPushEvseData): per EVSE, the record we want the
hub to hold and what the hub holds.

The same honest model as the status outbox (``bridge.delivery.outbox``), per EVSE rather than
per change: ``digest`` is the fingerprint of the record built from the catalog now,
``hub_digest`` the one the hub acknowledged (None: unknown or none), ``hub_holds`` whether the
hub may hold a record (insert vs update, and whether a withdrawn EVSE needs a delete), and
``acknowledged`` whether the hub confirmed holding one. An EVSE is pending while the hub may be
wrong: a wanted, valid record whose digest differs from the hub's, or a withdrawn EVSE the hub
may hold. A record that fails the schema is never pushed: its row carries the field errors.

Order between the two services (the lane enforces it through this class and the status
outbox's gate): an EVSE's status goes to the hub only once the hub acknowledged its data
(:meth:`DataOutbox.status_may_go`); a data delete waits until the hub no longer holds the
EVSE's status (``status_at_hub``).

Records are batched (:meth:`next_batch`): up to ``limit`` pending EVSEs of the same action in
one request; an EVSE whose batch was refused without the hub saying which record was at fault
goes alone from then on (``solo``), so one bad record never holds up the others.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from bridge.delivery.queue import PendingQueue
from bridge.oicp.evse_schema import FieldError
from bridge.oicp.models import ActionType
from bridge.oicp.records import Built
from bridge.store.base import EvseDataRow, StagedStore

#: How far past the head the next batch looks for records of the same action.
_SCAN = 2000


@dataclass(frozen=True, slots=True)
class DataBatch:
    """Records that go to the hub in one eRoamingPushEvseData request."""

    action: ActionType
    rows: tuple[EvseDataRow, ...]
    digests: tuple[str | None, ...]  # each record's digest when the batch was taken


class DataOutbox(PendingQueue[EvseDataRow]):
    """The EVSE data outbox; its queue (``bridge.delivery.queue``) holds a data delete back
    (``_held``) while the hub may still hold the EVSE's status, until :meth:`release`."""

    #: Not the record: a follower builds it from its own copy of the catalog.
    FOLLOWED = ("hub_digest", "hub_holds", "acknowledged", "pending_since", "attempts",
                "last_outcome", "last_code", "last_info", "last_push_at",
                "parked_code")  # fmt: skip

    def __init__(
        self,
        store: StagedStore,
        *,
        changed: asyncio.Event | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # ``changed`` is shared with the status outbox: the lane wakes up for either.
        super().__init__(clock=clock, monotonic=monotonic, changed=changed)
        self.store = store
        self.solo: set[str] = set()
        #: Whether the hub may still hold this EVSE's *status* (its data delete waits).
        self.status_at_hub: Callable[[str], bool] = lambda evse_id: False
        #: Called when an EVSE's data becomes acknowledged (its held status may go now).
        self.on_ready: Callable[[str], None] | None = None

    # -- loading -----------------------------------------------------------------------------
    def _resumes(self, row: EvseDataRow) -> bool:
        return _needs_push(row)

    def reload(self, rows: Iterable[EvseDataRow]) -> None:
        self.solo.clear()
        super().reload(rows)

    # -- what the catalog says -----------------------------------------------------------------
    def set_built(self, charge_point_id: str, built: Built, *, want: bool) -> bool:
        """Take the record built from the catalog now; ``want``: the EVSE is shared with the
        hub. Returns whether its field errors changed (for the log)."""
        row = self.rows.get(built.evse_id)
        if row is None:
            row = self.rows[built.evse_id] = EvseDataRow(built.evse_id, charge_point_id)
        before = row.errors
        row.charge_point_id = charge_point_id
        if built.ok:
            if row.digest != built.digest or not row.want:
                row.parked_code = None  # a new record (or a new life) deserves a new try
            row.record = json.dumps(built.record, separators=(",", ":"), ensure_ascii=False)
            row.digest = built.digest
            row.errors = None
        else:
            row.errors = json.dumps([{"field": e.field, "message": e.message}
                                     for e in built.errors])  # fmt: skip
        if want and not row.want:
            row.parked_code = None
        row.want = want
        self.refresh(row)
        return row.errors != before

    def withdraw(self, evse_id: str) -> None:
        """This EVSE leaves the hub: delete its data once its status is gone."""
        row = self.rows.get(evse_id)
        if row is None or not row.want:
            return
        row.want = False
        row.parked_code = None
        self.refresh(row)

    def refresh(self, row: EvseDataRow, now: float | None = None) -> None:
        evse_id = row.evse_id
        queued = evse_id in self._pending or evse_id in self._waiting or evse_id in self._held
        if _needs_push(row):
            if not queued:
                row.pending_since = now if now is not None else self.clock()
                row.attempts = 0
                self._pending[evse_id] = None
                self.changed.set()
        elif queued or row.pending_since is not None:
            row.pending_since = None
            self._pending.pop(evse_id, None)
            self._waiting.pop(evse_id, None)
            self._held.pop(evse_id, None)
        self.store.put_evse_data(row)

    # -- queries -------------------------------------------------------------------------------
    def hub_acknowledged(self, evse_id: str) -> bool:
        """Whether the hub has confirmed that it holds this EVSE's data record (an insert,
        update or fullLoad acknowledged, no delete or refusal since). EVSE networks may only
        assign such EVSEs."""
        row = self.rows.get(evse_id)
        return row is not None and row.acknowledged and row.hub_holds

    def manages(self, evse_id: str) -> bool:
        return evse_id in self.rows

    def status_may_go(self, evse_id: str) -> bool:
        """An EVSE's status goes to the hub only once the hub holds its current, valid data
        (the hub would not know the EVSE otherwise). EVSEs without a data row (no plugs known:
        the configuration file's stations) are not held."""
        row = self.rows.get(evse_id)
        if row is None:
            return True
        return row.acknowledged and row.hub_holds and row.errors is None

    def errors(self, evse_id: str) -> list[FieldError]:
        row = self.rows.get(evse_id)
        if row is None or row.errors is None:
            return []
        return [FieldError(e["field"], e["message"]) for e in json.loads(row.errors)]

    def describe(self, evse_id: str) -> dict[str, object] | None:
        """What the API shows of an EVSE's data at the hub (None: it has no data row)."""
        row = self.rows.get(evse_id)
        if row is None:
            return None
        return {
            "state": data_state(row),
            "errors": [str(e) for e in self.errors(evse_id)] if row.want else [],
            "hub_acknowledged": self.hub_acknowledged(evse_id),
            "last_code": row.last_code,
            "last_info": row.last_info,
        }

    def invalid(self) -> int:
        """Shared EVSEs whose record fails the schema (not pushed, status held)."""
        return sum(1 for r in self.rows.values() if r.want and r.errors is not None)

    def next_batch(self, limit: int, now: float | None = None) -> DataBatch | None:
        """The records that go next: the longest-pending EVSE's action, and up to ``limit``
        pending EVSEs with the same action (an EVSE marked ``solo`` goes alone)."""
        self._wake(self.monotonic() if now is None else now)
        held: list[str] = []
        action: ActionType | None = None
        taken: list[EvseDataRow] = []
        for scanned, evse_id in enumerate(self._pending):
            if scanned >= limit + _SCAN or len(taken) >= limit:
                break
            row = self.rows[evse_id]
            row_action = action_for(row)
            if row_action is ActionType.DELETE and self.status_at_hub(evse_id):
                held.append(evse_id)  # its status leaves the hub first
                continue
            if action is None:
                action = row_action
                taken.append(row)
                if evse_id in self.solo:
                    break
            elif row_action is action and evse_id not in self.solo:
                taken.append(row)
        for evse_id in held:
            del self._pending[evse_id]
            self._held[evse_id] = None
        if action is None:
            return None
        return DataBatch(action, tuple(taken), tuple(r.digest for r in taken))

    def recheck_held(self) -> None:
        """Release every held delete whose status the hub no longer holds (after a status
        fullLoad)."""
        for evse_id in [e for e in self._held if not self.status_at_hub(e)]:
            self.release(evse_id)

    # -- outcomes ------------------------------------------------------------------------------
    def sending(self, batch: DataBatch) -> None:
        """Before the request goes out (staged, and made durable by the caller): the hub may
        apply it, so what it holds of these records is unknown until the answer comes."""
        for row in batch.rows:
            row.hub_digest = None
            row.hub_holds = True
            self.store.put_evse_data(row)

    def acknowledged(self, batch: DataBatch, code: str) -> list[str]:
        """The hub accepted the batch; returns the EVSEs whose data it holds now."""
        now = self.clock()
        ready = []
        for row, sent in zip(batch.rows, batch.digests, strict=True):
            if batch.action is ActionType.DELETE:
                row.hub_digest, row.hub_holds, row.acknowledged = None, False, False
                row.last_outcome = "deleted"
            else:
                row.hub_digest, row.hub_holds, row.acknowledged = sent, True, True
                row.last_outcome = "ok"
                ready.append(row.evse_id)
            row.last_code, row.last_info, row.last_push_at, row.attempts = code, None, now, 0
            self.solo.discard(row.evse_id)
            self.refresh(row, now)
        if self.on_ready is not None:
            for evse_id in ready:
                self.on_ready(evse_id)
        return ready

    def absent(self, row: EvseDataRow, code: str | None) -> None:
        """A delete answered 022: the hub does not hold the record, as we wanted."""
        row.hub_digest, row.hub_holds, row.acknowledged = None, False, False
        row.last_outcome, row.last_code, row.last_info = "deleted", code, None
        row.last_push_at, row.attempts = self.clock(), 0
        self.solo.discard(row.evse_id)
        self.refresh(row)

    def failed(self, row: EvseDataRow, outcome: str, code: str | None, info: str | None) -> None:
        row.last_outcome, row.last_code, row.last_info = outcome, code, info
        row.last_push_at = self.clock()
        self.store.put_evse_data(row)

    def defer(self, row: EvseDataRow, until: float | None = None) -> int:
        row.attempts += 1
        self.store.put_evse_data(row)
        self.move_back(row.evse_id, until)
        return row.attempts

    def set_hub_holds(self, row: EvseDataRow, holds: bool) -> None:
        """A 022: the hub's view differs (insert of an existing / update of a missing one)."""
        row.hub_holds = holds
        row.hub_digest = None
        if not holds:
            row.acknowledged = False
        self.refresh(row)
        self.move_back(row.evse_id)

    def park(self, row: EvseDataRow, code: str | None, info: str | None = None) -> None:
        """Set this record aside until it changes (or a fullLoad succeeds). A withdrawn EVSE
        whose delete is refused is given up on: the next fullLoad drops it."""
        if not row.want:
            row.hub_holds = False
            row.acknowledged = False
        else:
            row.parked_code = code or "unknown"
        if info is not None:
            row.last_info = info
        self.solo.discard(row.evse_id)
        self.refresh(row)

    # -- fullLoad --------------------------------------------------------------------------------
    def full_load_set(self) -> dict[str, tuple[str, str]]:
        """EvseID → (record JSON, digest) of every record a data fullLoad carries: each wanted
        EVSE's current valid record (one with field errors is left out: the hub drops it)."""
        return {
            r.evse_id: (r.record, r.digest)
            for r in self.rows.values()
            if r.want and r.errors is None and r.record is not None and r.digest is not None
        }

    def full_load_sending(self, sent: Mapping[str, tuple[str, str]]) -> None:
        """Before a fullLoad goes out: every record's hub state is unknown until it answers."""
        for row in self.rows.values():
            row.hub_digest = None
            if row.evse_id in sent:
                row.hub_holds = True
            self.refresh(row)

    def full_load_done(self, sent: Mapping[str, tuple[str, str]], code: str) -> list[str]:
        """The hub replaced its whole set with ``sent``; returns the EVSEs it holds now."""
        now = self.clock()
        for row in self.rows.values():
            entry = sent.get(row.evse_id)
            if entry is None:
                row.hub_digest, row.hub_holds, row.acknowledged = None, False, False
            else:
                row.hub_digest, row.hub_holds, row.acknowledged = entry[1], True, True
                row.parked_code = None
                row.last_outcome, row.last_code, row.last_info = "fullload", code, None
                row.last_push_at = now
            self.solo.discard(row.evse_id)
            self.refresh(row, now)
        ready = list(sent)
        if self.on_ready is not None:
            for evse_id in ready:
                self.on_ready(evse_id)
        return ready


class DataAcknowledged:
    """For EVSE networks (``bridge.delivery.networks.HubKnows``): the hub knows an EVSE once
    it acknowledged the EVSE's data (:meth:`DataOutbox.hub_acknowledged`); an EVSE without
    data (a station of the configuration file) once it acknowledged its status (``others``)."""

    def __init__(self, data: DataOutbox, others: Callable[[str], bool]) -> None:
        self.data = data
        self.others = others

    def knows(self, evse_id: str) -> bool:
        if self.data.manages(evse_id):
            return self.data.hub_acknowledged(evse_id)
        return self.others(evse_id)


def data_state(row: EvseDataRow) -> str:
    """One word for an EVSE's data at the hub: invalid, parked, deleting, withdrawn,
    acknowledged or pending."""
    if row.want and row.errors is not None:
        return "invalid"
    if row.parked_code is not None:
        return "parked"
    if not row.want:
        return "deleting" if row.hub_holds else "withdrawn"
    if row.acknowledged and row.hub_digest == row.digest:
        return "acknowledged"
    return "pending"


def action_for(row: EvseDataRow) -> ActionType:
    if not row.want:
        return ActionType.DELETE
    return ActionType.UPDATE if row.hub_holds else ActionType.INSERT


def _needs_push(row: EvseDataRow) -> bool:
    if row.parked_code is not None:
        return False
    if not row.want:
        return row.hub_holds
    if row.errors is not None or row.record is None:
        return False
    return row.digest != row.hub_digest
