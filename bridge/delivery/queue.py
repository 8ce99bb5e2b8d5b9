"""The queue both outboxes keep (``bridge.delivery.outbox`` for statuses,
``bridge.delivery.data_outbox`` for EVSE data): per EVSE its row, and while the EVSE is pending,
where it waits for its turn.

A pending EVSE is in exactly one of three places:

* ``_pending``: ready to go, first-pending-first-pushed (an insertion-ordered set);
* ``_waiting``: on a backoff of its own until a monotonic time; ``_wake_ups`` is a heap over
  those times that may hold stale entries (an EVSE pushed, changed or moved since), checked
  against ``_waiting`` when they come up;
* ``_held``: waiting for the other service (a status for its EVSE's data to reach the hub, a
  data delete for the EVSE's status to leave it) until :meth:`PendingQueue.release`.

What makes an EVSE pending and what is taken from ``_pending`` next are each outbox's own rules.
The outboxes are subclasses that read these attributes directly: ``head()`` and ``next_batch()``
run for every push, and a layer in between would cost on each.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar


class QueuedRow(Protocol):
    evse_id: str
    pending_since: float | None  # wall-clock time it became pending (None: it is not)


R = TypeVar("R", bound=QueuedRow)


class PendingQueue(Generic[R]):
    #: The fields of a row a follower takes from what the leader wrote (:meth:`follow`).
    FOLLOWED: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        changed: asyncio.Event | None = None,
    ) -> None:
        self.clock = clock
        self.monotonic = monotonic
        self.rows: dict[str, R] = {}
        self._pending: dict[str, None] = {}  # insertion-ordered set of EvseIDs ready to go
        self._waiting: dict[str, float] = {}  # EvseID → monotonic time before which it waits
        self._wake_ups: list[tuple[float, str]] = []  # heap over _waiting (may hold stale ones)
        self._held: dict[str, None] = {}  # EvseIDs waiting for the other service
        #: Set whenever an EVSE becomes ready to go: the lane decides again.
        self.changed = changed or asyncio.Event()

    # -- loading -----------------------------------------------------------------------------
    def restore(self, rows: Iterable[R]) -> None:
        """Take the stored rows; the pending ones queue in the order they became pending."""
        ordered = sorted(rows, key=lambda r: (r.pending_since is None, r.pending_since or 0))
        for row in ordered:
            self.rows[row.evse_id] = row
            if row.pending_since is not None and self._resumes(row):
                self._pending[row.evse_id] = None
        if self._pending:
            self.changed.set()

    def _resumes(self, row: R) -> bool:
        """Whether a row stored as pending is queued again when it is restored."""
        return True

    def reload(self, rows: Iterable[R]) -> None:
        """Start again from ``rows`` (a replica that becomes the push leader: the database holds
        what the previous leader learnt of the hub)."""
        self.rows.clear()
        self._pending.clear()
        self._waiting.clear()
        self._wake_ups.clear()
        self._held.clear()
        self.restore(rows)

    def follow(self, row: R) -> None:
        """What the leader wrote of an EVSE's hub-side state (a follower's view, for reads)."""
        mine = self.rows.get(row.evse_id)
        if mine is None:
            self.rows[row.evse_id] = row
            return
        for name in self.FOLLOWED:
            setattr(mine, name, getattr(row, name))

    # -- queries -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._pending) + len(self._waiting) + len(self._held)

    def is_pending(self, evse_id: str) -> bool:
        return evse_id in self._pending or evse_id in self._waiting or evse_id in self._held

    def held(self) -> int:
        """EVSEs waiting for the other service."""
        return len(self._held)

    def oldest_pending_age(self) -> float:
        # Round robin moves EVSEs to the back, so the oldest is not always first: look at all.
        rows = self.rows
        since = [rows[e].pending_since for e in (*self._pending, *self._waiting, *self._held)]
        known = [s for s in since if s is not None]
        return max(0.0, self.clock() - min(known)) if known else 0.0

    def next_due(self) -> float | None:
        """Monotonic time when the first waiting EVSE may go again (None: none waits)."""
        while self._wake_ups:
            at, evse_id = self._wake_ups[0]
            if self._waiting.get(evse_id) == at:
                return at
            heapq.heappop(self._wake_ups)  # stale: pushed, changed or moved since
        return None

    # -- moving ------------------------------------------------------------------------------
    def release(self, evse_id: str) -> None:
        """What a held EVSE waited for happened (the hub holds its data, or no longer holds
        its status): it goes to the back of the queue."""
        if evse_id in self._held:
            del self._held[evse_id]
            self._pending[evse_id] = None
            self.changed.set()

    def move_back(self, evse_id: str, until: float | None = None) -> None:
        """Queue a pending EVSE again at the back (after the monotonic ``until`` if given)."""
        if not self.is_pending(evse_id):
            return
        self._pending.pop(evse_id, None)
        self._held.pop(evse_id, None)
        if until is None:
            self._waiting.pop(evse_id, None)
            self._pending[evse_id] = None
        else:
            self._waiting[evse_id] = until
            heapq.heappush(self._wake_ups, (until, evse_id))

    def _wake(self, now: float) -> None:
        """EVSEs whose own backoff is over by ``now`` are ready to go again."""
        while self._wake_ups and self._wake_ups[0][0] <= now:
            at, evse_id = heapq.heappop(self._wake_ups)
            if self._waiting.get(evse_id) == at:
                del self._waiting[evse_id]
                self._pending[evse_id] = None
