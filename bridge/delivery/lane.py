"""The one lane to the hub: what goes next is one decision.

Two services share it: EVSE status (one record per request) and EVSE data (batches of
records, ``bridge.delivery.data_outbox``). Each has its own exact rate limit. When both have
something to send they take turns, so a data push never delays a status by more than one
request's time, and statuses cannot starve the data either. An EVSE's status waits until the
hub holds its data (the status outbox's gate); a data delete waits until its status is gone.

:func:`next_step` looks at the lane's state alone: a hold (backoff after a hub-wide failure, the
settle time after an ambiguous outcome, a pause after a configuration error), the requested
fullLoad and its own backoff, a network whose group assignment is due, the outbox's next EVSE
and the rate limit. It answers *wait until ...*, *send the fullLoad*, *send this network's
assignment* or *send this EVSE's record*; the push worker carries it out. Every
hub service that shares the lane belongs here, as one more input of the same decision; so
does whether this replica may use the lane at all (the push lease of replicas: not the leader,
or a lease that would not outlive the request → wait).

The lane's parts are named here too, for the worker and whoever builds it: the rate limit
(``Limiter``), the lease (``Gate``), the client, the retry settings and the event each attempt
reports (``PushEvent``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from bridge.delivery.data_outbox import DataBatch, DataOutbox
from bridge.delivery.outbox import Outbox
from bridge.oicp.client import PushOutcome
from bridge.oicp.models import ActionType
from bridge.status.table import OicpStatus
from bridge.store.base import EvseRow


class Limiter(Protocol):
    """A rate limit the lane consults before each request (bridge.ratelimit.SlidingWindow)."""

    def free_at(self, now: float | None = None) -> float: ...

    def take(self) -> float: ...


class Unlimited:
    """No rate limit (EVSE data without one of its own)."""

    def free_at(self, now: float | None = None) -> float:
        return 0.0

    def take(self) -> float:
        return 0.0


class Gate(Protocol):
    """Whether this process may use the lane (``bridge.cluster.lease``)."""

    def lease_until(self) -> float:
        """Monotonic time until which this process holds the lane (-inf: it does not)."""
        ...

    async def reserve(self, seconds: float) -> bool:
        """Make the lease outlive a request of ``seconds`` from now; False: it cannot."""
        ...


class AlwaysLeader:
    """The one process of a SQLite database: the lane is always its own."""

    def lease_until(self) -> float:
        return math.inf

    async def reserve(self, seconds: float) -> bool:
        return True


class PushClient(Protocol):
    async def push_evse_status(
        self,
        action: ActionType,
        records: Sequence[tuple[str, OicpStatus]],
        *,
        timeout: float | None = None,
    ) -> PushOutcome: ...


class PushEvent(NamedTuple):
    """What the metrics hook is told about every attempt (a tuple: one is made per push, and
    a frozen dataclass costs several times as much to make)."""

    action: str
    outcome: str  # ok | retry | defer | flip | absent | pause | park | refused (a fullLoad)
    code: str | None
    duration_s: float


@dataclass(frozen=True)
class RetrySettings:
    initial: float = 1.0  # first backoff (s); doubles per consecutive failure
    cap: float = 300.0  # longest backoff (s)
    pause: float = 60.0  # retry interval while the hub reports a configuration error (s)
    max_flips: int = 2  # insert<->update switches per EVSE before it is parked
    max_attempts: int = 10  # per-EVSE refusals (retryable codes) before it is parked
    settle: float | None = None  # hold after an ambiguous outcome; None: that request's timeout
    push_timeout: float = 20.0  # whole-request timeout of a single push (oicp.request_timeout)
    full_load_timeout: float = 120.0  # whole-request timeout of a fullLoad
    data_full_load_timeout: float = 300.0  # whole-request timeout of a data fullLoad


@dataclass(frozen=True, slots=True)
class Wait:
    """Nothing to send before the monotonic ``until`` (None: until something changes)."""

    until: float | None


@dataclass(frozen=True, slots=True)
class SendFullLoad:
    pass


@dataclass(frozen=True, slots=True)
class SendRecord:
    row: EvseRow
    action: ActionType


@dataclass(frozen=True, slots=True)
class SendNetwork:
    """Send this network's group assignment (eRoamingEVSEAssignment)."""

    name: str


@dataclass(frozen=True, slots=True)
class SendData:
    batch: DataBatch


@dataclass(frozen=True, slots=True)
class SendDataFullLoad:
    pass


Step = Wait | SendFullLoad | SendRecord | SendNetwork | SendData | SendDataFullLoad


class NetworkQueue(Protocol):
    """Networks with an assignment to send (bridge.delivery.networks.NetworkPushes)."""

    def due(self, now: float) -> str | None: ...

    def next_due(self) -> float | None: ...


class FullLoadRequests:
    """Who is waiting for a fullLoad, and when the next attempt may go."""

    def __init__(self) -> None:
        self.waiters: list[asyncio.Future[int]] = []
        self.not_before = 0.0  # monotonic
        self.failures = 0  # consecutive failed attempts (retryable)
        self.refusals = 0  # consecutive refusals (the hub does not take this body)

    def request(self) -> asyncio.Future[int]:
        """One more waiter; its future gives the record count, or the hub's refusal."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieved)  # a caller that does not wait must not leak a warning
        self.waiters.append(fut)
        return fut

    @property
    def requested(self) -> bool:
        if any(f.done() for f in self.waiters):  # answered or given up by their callers
            self.waiters = [f for f in self.waiters if not f.done()]
        return bool(self.waiters)

    def resolve(self, batch: list[asyncio.Future[int]], records: int) -> None:
        for fut in batch:
            if not fut.done():
                fut.set_result(records)
        self.waiters = [f for f in self.waiters if f not in batch]
        self.failures = self.refusals = 0

    def fail(self, batch: list[asyncio.Future[int]], exc: BaseException) -> None:
        for fut in batch:
            if not fut.done():
                fut.set_exception(exc)
        self.waiters = [f for f in self.waiters if f not in batch]


@dataclass(slots=True)
class DataLane:
    """The EVSE data service's inputs to the decision."""

    outbox: DataOutbox
    limiter: Limiter
    full_load: FullLoadRequests
    batch_size: int = 100
    turn: bool = False  # both services have something: data's turn (set after a status push)


def next_step(
    *,
    hold_until: float,
    full_load: FullLoadRequests,
    outbox: Outbox,
    limiter: Limiter,
    now: float,
    lease_until: float = math.inf,
    request_timeout: float = 0.0,
    networks: NetworkQueue | None = None,
    data: DataLane | None = None,
) -> Step:
    """What the lane does next at monotonic ``now``. Changes nothing, except that the outbox
    moves EVSEs whose own backoff is over back into the queue.

    ``lease_until``: until when this replica may use the lane by its own clock (inf: the one
    process of a SQLite database; -inf: not the leader). A request goes out only while the
    lease outlives its timeout (``request_timeout``; a fullLoad's longer lease is the worker's
    to reserve); otherwise the lane waits until the lease is renewed or taken (that wakes it).
    """
    if lease_until - now <= request_timeout:
        return Wait(None)
    if now < hold_until:
        return Wait(hold_until)
    requested = full_load.requested
    full_due = requested and now >= full_load.not_before
    if data is None:
        # Network assignments are rare (a change of the catalog): they go before the records,
        # which can never keep them waiting for long, and never before a due fullLoad.
        network = None if full_due or networks is None else networks.due(now)
        row = None if full_due or network is not None else outbox.head(now)
        if not full_due and network is None and row is None:
            return Wait(_earliest(
                full_load.not_before if requested else None, outbox.next_due(),
                networks.next_due() if networks is not None else None,
            ))  # fmt: skip
        free = limiter.free_at(now)
        if free > now:
            return Wait(free)
        if network is not None:
            return SendNetwork(network)
        if full_due or row is None:
            return SendFullLoad()
        return SendRecord(row, action_for(row))
    return _with_data(full_due=full_due, requested=requested, full_load=full_load, outbox=outbox,
                      limiter=limiter, now=now, data=data, networks=networks)  # fmt: skip


def _with_data(
    *,
    full_due: bool,
    requested: bool,
    full_load: FullLoadRequests,
    outbox: Outbox,
    limiter: Limiter,
    now: float,
    data: DataLane,
    networks: NetworkQueue | None,
) -> Step:
    """The decision with the data service in the lane: fullLoads first (status, then data),
    network assignments, then status and data records, taking turns when both wait."""
    if full_due:
        free = limiter.free_at(now)
        return Wait(free) if free > now else SendFullLoad()
    data_requested = data.full_load.requested
    if data_requested and now >= data.full_load.not_before:
        free = data.limiter.free_at(now)
        return Wait(free) if free > now else SendDataFullLoad()
    network = networks.due(now) if networks is not None else None
    if network is not None:  # rare, and before the records (as without data)
        free = limiter.free_at(now)
        return Wait(free) if free > now else SendNetwork(network)
    row = outbox.head(now)
    # While a data fullLoad waits (its backoff after a failure) it will carry every record:
    # single data pushes meanwhile would only repeat what it sends.
    batch = None if data_requested else data.outbox.next_batch(data.batch_size, now)
    status_free = limiter.free_at(now) if row is not None else math.inf
    data_free = data.limiter.free_at(now) if batch is not None else math.inf
    order: list[Step | None] = [SendRecord(row, action_for(row)) if row is not None else None,
                                SendData(batch) if batch is not None else None]  # fmt: skip
    frees = [status_free, data_free]
    if data.turn:
        order.reverse()
        frees.reverse()
    for step, free in zip(order, frees, strict=True):
        if step is not None and free <= now:
            return step
    if row is None and batch is None:
        return Wait(_earliest(
            full_load.not_before if requested else None, outbox.next_due(),
            data.full_load.not_before if data_requested else None, data.outbox.next_due(),
            networks.next_due() if networks is not None else None,
        ))  # fmt: skip
    return Wait(min(status_free, data_free))


def action_for(row: EvseRow) -> ActionType:
    """Delete what is no longer configured; update what the hub may hold; insert the rest."""
    if row.removed:
        return ActionType.DELETE
    return ActionType.UPDATE if row.hub_holds else ActionType.INSERT


def _earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _retrieved(fut: asyncio.Future[int]) -> None:
    if not fut.cancelled():
        fut.exception()
