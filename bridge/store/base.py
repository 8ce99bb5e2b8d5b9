"""What both state backends share: the rows, and staging with group commit.

Writers ``put_*`` rows (keyed, so a second put of the same row before the commit replaces the
first) and then ``await commit()``: it returns once everything put so far is durable. Commits
are batched so thousands of StatusNotifications a second cost a few hundred fsyncs: while one
batch is written the next gathers, and once batches are large (``group_commit_rows``) each also
waits ``group_commit_ms`` for more writers. A quiet bridge commits at once, so a charger's
answer does not wait for a window it does not need. Everything staged before a commit is
written in one transaction (a catalog change and its outbox rows, a status report and the EVSE
change it caused).

A backend (``bridge.store.sqlite``, ``bridge.store.postgres``) only says how one batch is
written (:meth:`StagedStore._write`) and how the state is read at start.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

from bridge.errors import StoreError

# EvseRow.parked_code of an EVSE that is no longer shared: deleted at the hub while it may
# hold it (hub_holds), never inserted or updated again unless it is shared anew.
REMOVED = "removed"
CATALOG_TABLES = ("catalog_location", "catalog_station", "catalog_template", "catalog_network")
CATALOG_EXTRA = {"catalog_station": ("location_id", "password_hash")}


@dataclass(slots=True)
class ConnectorRow:
    charge_point_id: str
    evse_key: int
    connector_id: int
    ocpp_status: str
    error_code: str | None
    reported_at: str | None
    received_at: float


@dataclass(slots=True)
class EvseRow:
    """Delivery state of one EVSE. ``pending_since`` is set while the hub lacks ``status``.

    ``parked_code``: the hub's code that set the EVSE aside, or REMOVED for an EVSE no longer
    configured (removed from the hub by a fullLoad, never pushed again).
    """

    evse_id: str
    charge_point_id: str
    status: str
    changed_at: float | None = None
    hub_status: str | None = None
    hub_holds: bool = False
    hub_acked_at: float | None = None
    pending_since: float | None = None
    attempts: int = 0
    last_outcome: str | None = None
    last_code: str | None = None
    last_info: str | None = None
    last_push_at: float | None = None
    parked_code: str | None = None

    @property
    def removed(self) -> bool:
        return self.parked_code == REMOVED

    @property
    def parked(self) -> str | None:
        """The code it is parked for; None if not parked (a removed EVSE is not parked)."""
        return None if self.parked_code == REMOVED else self.parked_code


@dataclass(slots=True)
class EvseDataRow:
    """Delivery state of one EVSE's data record (eRoamingPushEvseData); see
    ``bridge.delivery.data_outbox``. ``errors``: JSON list of the current build's field errors
    (then ``record`` is the last record that passed, or None)."""

    evse_id: str
    charge_point_id: str
    record: str | None = None
    digest: str | None = None
    want: bool = False
    hub_digest: str | None = None
    hub_holds: bool = False
    acknowledged: bool = False
    pending_since: float | None = None
    attempts: int = 0
    last_outcome: str | None = None
    last_code: str | None = None
    last_info: str | None = None
    last_push_at: float | None = None
    parked_code: str | None = None
    errors: str | None = None


@dataclass(slots=True)
class ChargePointRow:
    charge_point_id: str
    protocol: str | None = None
    connected: bool = False
    offline: bool = False
    last_seen: float | None = None
    disconnected_at: float | None = None
    boot: str | None = None  # JSON of the last BootNotification
    #: The replica whose connection this is (PostgreSQL; None on SQLite, the one process).
    replica: str | None = None


@dataclass(frozen=True, slots=True)
class CatalogRow:
    """One catalog object as stored: key, the object as JSON, provenance, version, time.

    ``extra`` are the table's own columns between ``id`` and ``body`` (catalog_station:
    location_id, password_hash).
    """

    table: str
    id: str
    body: str
    source: str
    version: int
    last_updated: str
    extra: tuple[str | None, ...] = ()


@dataclass(frozen=True, slots=True)
class AssignmentRow:
    """What the hub acknowledged for one EVSE of a network: the group it is in, and when."""

    network: str
    evse_id: str
    group_name: str
    acked_at: float | None = None


@dataclass(slots=True)
class Snapshot:
    connectors: list[ConnectorRow]
    evses: list[EvseRow]
    charge_points: list[ChargePointRow]
    meta: dict[str, str]
    catalog: list[CatalogRow] = field(default_factory=list)
    evse_data: list[EvseDataRow] = field(default_factory=list)
    assignments: list[AssignmentRow] = field(default_factory=list)


Row = tuple[Any, ...]


def _snapshot(cls: type[Any]) -> Any:
    """A flat tuple of a row's fields in column order: an immutable copy, cheap to take."""
    return attrgetter(*(f.name for f in fields(cls)))


connector_tuple = _snapshot(ConnectorRow)
evse_tuple = _snapshot(EvseRow)
cp_tuple = _snapshot(ChargePointRow)
data_tuple = _snapshot(EvseDataRow)
#: EvseDataRow fields stored as 0/1 integers (one schema for SQLite and PostgreSQL).
DATA_FLAGS = ("want", "hub_holds", "acknowledged")
_DATA_FLAG_INDEX = tuple(i for i, f in enumerate(fields(EvseDataRow)) if f.name in DATA_FLAGS)


def data_row(r: Row) -> EvseDataRow:
    row = EvseDataRow(*r)
    row.want, row.hub_holds, row.acknowledged = (bool(row.want), bool(row.hub_holds),
                                                 bool(row.acknowledged))  # fmt: skip
    return row


def data_params(r: Row) -> Row:
    """A staged data row with its flags as 0/1."""
    return tuple(int(v) if i in _DATA_FLAG_INDEX else v for i, v in enumerate(r))


def evse_row(r: Row) -> EvseRow:
    row = EvseRow(*r)
    row.hub_holds = bool(row.hub_holds)
    return row


def cp_row(r: Row) -> ChargePointRow:
    row = ChargePointRow(*r)
    row.connected = bool(row.connected)
    row.offline = bool(row.offline)
    return row


def catalog_columns(table: str) -> list[str]:
    return ["id", *CATALOG_EXTRA.get(table, ()), "body", "source", "version", "last_updated"]


def catalog_row(table: str, r: Row) -> CatalogRow:
    n = len(CATALOG_EXTRA.get(table, ()))
    return CatalogRow(table, r[0], r[1 + n], r[2 + n], int(r[3 + n]), r[4 + n],
                      tuple(r[1 : 1 + n]))  # fmt: skip


def catalog_params(row: CatalogRow) -> Row:
    return (row.id, *row.extra, row.body, row.source, row.version, row.last_updated)


#: Staged value of the in-flight marker meaning "clear it" (the request got its answer).
CLEAR = ""


@dataclass(slots=True)
class Batch:
    """Everything staged for one transaction."""

    connectors: list[Row]
    evses: list[Row]
    charge_points: list[Row]
    meta: list[tuple[str, str]]
    catalog: list[CatalogRow]
    #: EVSE data rows (the leader's, fenced like ``evses``).
    evse_data: list[Row]
    #: The hub request in flight as the leader records it (PostgreSQL: EvseID or "fullLoad";
    #: CLEAR once answered; None: unchanged).
    in_flight: str | None = None
    #: Network assignments the hub acknowledged (AssignmentRow fields; the leader's, fenced).
    assignments: list[Row] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return (len(self.connectors) + len(self.evses) + len(self.charge_points)
                + len(self.meta) + len(self.catalog))  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.connectors or self.evses or self.charge_points or self.meta
                    or self.catalog or self.evse_data or self.in_flight is not None
                    or self.assignments)  # fmt: skip


class StagedStore(ABC):
    """Staging and group commit; the backend writes batches. Use from one event loop."""

    #: Whether several processes may share this database (then EVSE rows are fenced).
    shared = False

    def __init__(self, *, group_commit_ms: float = 2.0) -> None:
        self.group_commit_s = group_commit_ms / 1000
        #: The wait applies after a batch of at least this many rows (0: always).
        self.group_commit_rows = 0
        self._last_rows = 0  # rows of the batch written last
        self._awaited = False  # someone awaits the next batch (commit), not only commit_soon
        self._hurry = asyncio.Event()  # set by commit(): a batch nobody awaited goes now
        # Staged rows as tuples (snapshots taken at put time), keyed so a later put replaces.
        self._connectors: dict[tuple[str, int, int], Row] = {}
        self._evses: dict[str, Row] = {}
        self._cps: dict[str, Row] = {}
        self._meta: dict[str, str] = {}
        self._catalog: dict[tuple[str, str], CatalogRow] = {}
        self._data: dict[str, Row] = {}
        self._in_flight: str | None = None
        self._assignments: dict[tuple[str, str], Row] = {}
        # The next batch is due when this is not None: the futures of those who await it (one
        # each, so a cancelled waiter cancels only its own; cheaper than asyncio.shield).
        self._batch: list[asyncio.Future[None]] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._later: asyncio.TimerHandle | None = None  # commit_within's timer, while armed
        self.migration: str | None = None  # what opening did to the schema (for the log)

    # -- lifecycle (backend) ---------------------------------------------------------------
    @abstractmethod
    def open(self) -> Snapshot:
        """Open (creating and migrating if needed) and read everything; blocking, at start."""

    @property
    @abstractmethod
    def is_open(self) -> bool: ...

    @property
    @abstractmethod
    def where(self) -> str:
        """The database, for logs and messages (no password)."""

    @abstractmethod
    def write_meta_now(self, key: str, value: str) -> None:
        """Write one meta value durably at once (blocking; at start-up, before any traffic)."""

    @abstractmethod
    async def _write(self, batch: Batch) -> None:
        """Write one batch in one transaction (raise StoreError if it cannot be)."""

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    def _close_unwritten(self) -> None: ...

    def close_unwritten(self) -> None:
        """Close without writing what is staged (read-only use next to a running bridge)."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        self._close_unwritten()

    async def close(self) -> None:
        """Commit what is outstanding and close."""
        if not self.is_open:
            return
        if self._later is not None:
            self._later.cancel()
            self._later = None
        await self.commit()
        if self._flusher is not None:
            await self._flusher
        await self._close()

    # -- writes ----------------------------------------------------------------------------
    def put_connector(self, row: ConnectorRow) -> None:
        self._connectors[(row.charge_point_id, row.evse_key, row.connector_id)] = connector_tuple(
            row
        )

    def put_evse(self, row: EvseRow) -> None:
        # Rows are mutable objects owned by the outbox; the tuple is a snapshot, so a later
        # in-memory change cannot slip into a batch that is being written.
        self._evses[row.evse_id] = evse_tuple(row)

    def put_evse_data(self, row: EvseDataRow) -> None:
        self._data[row.evse_id] = data_tuple(row)

    def put_charge_point(self, row: ChargePointRow) -> None:
        self._cps[row.charge_point_id] = cp_tuple(row)

    def put_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def put_catalog(self, row: CatalogRow) -> None:
        """Stage a catalog object; it is written in the same transaction as what is staged
        with it (e.g. the outbox rows of the same change)."""
        self._catalog[(row.table, row.id)] = row

    def put_assignment(self, row: AssignmentRow) -> None:
        """Stage what the hub acknowledged for one EVSE of a network (the leader's row)."""
        self._assignments[(row.network, row.evse_id)] = (
            row.network,
            row.evse_id,
            row.group_name,
            row.acked_at,
        )

    def put_in_flight(self, target: str | None) -> None:
        """Record the hub request now in flight (None: none). Only a shared database keeps
        it: the next leader must know which EVSE's hub status is unknown."""
        if self.shared:
            self._in_flight = CLEAR if target is None else target

    async def sending(self, target: str) -> None:
        """Make everything staged durable together with "a request for ``target`` is in
        flight", before that request goes out; fenced on a shared database (raises
        :class:`bridge.errors.NotLeaderError` if this replica is no longer the leader).

        On a database of one process there is nothing to tell a successor: no write."""
        if self.shared:
            self.put_in_flight(target)
            await self.commit()
            self.check_fence()

    def check_fence(self) -> None:  # noqa: B027  (a no-op unless the database is shared)
        """Raise NotLeaderError if the last fenced write was refused (shared database)."""

    async def commit(self) -> None:
        """Return when every row put so far is durable (raises StoreError if it cannot be)."""
        waiter = asyncio.get_running_loop().create_future()
        self._next_batch().append(waiter)
        self._awaited = True
        self._hurry.set()
        await waiter

    def commit_soon(self) -> None:
        """Have everything put so far written with the next batch, without waiting for it."""
        if self.is_open:
            self._next_batch()

    def commit_within(self, seconds: float) -> None:
        """Have everything put so far written within ``seconds``: with whatever commit comes
        first (a charger's answer, another write) or on its own then; never waited for.

        For writes that a crash may lose at no cost but a repeat: the push lane's
        acknowledgments (an identical re-push after a restart). A busy lane then shares one
        commit per ``seconds`` instead of paying one per group-commit window, a tenth of the
        CPU of a push at thousands a second (bench/RESULTS.md)."""
        if not self.is_open:
            return
        loop = asyncio.get_running_loop()
        later = self._later
        if later is not None:
            if later.when() <= loop.time() + seconds:
                return  # the armed window ends first
            later.cancel()
        self._later = loop.call_later(seconds, self._commit_later)

    def _commit_later(self) -> None:
        self._later = None
        if self.is_open and self._staged():
            self.commit_soon()

    def _staged(self) -> bool:
        return bool(self._connectors or self._evses or self._cps or self._meta
                    or self._catalog or self._data or self._in_flight is not None
                    or self._assignments)  # fmt: skip

    def _next_batch(self) -> list[asyncio.Future[None]]:
        if not self.is_open:
            raise StoreError("state database is not open")
        if self._batch is None:
            self._batch = []
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_loop(), name="store-flush")
        return self._batch

    def _take(self) -> Batch:
        batch = Batch(
            list(self._connectors.values()), list(self._evses.values()),
            list(self._cps.values()), list(self._meta.items()), list(self._catalog.values()),
            [data_params(r) for r in self._data.values()], self._in_flight,
            list(self._assignments.values()),
        )  # fmt: skip
        self._connectors, self._evses, self._cps, self._meta = {}, {}, {}, {}
        self._catalog, self._data, self._in_flight, self._assignments = {}, {}, None, {}
        return batch

    async def _flush_loop(self) -> None:
        while self._batch is not None:
            if self.group_commit_s:
                await self._gather()
            waiters, self._batch = self._batch, None
            self._awaited = False
            batch = self._take()
            self._last_rows = batch.rows
            try:
                await self._write(batch)
            except StoreError as exc:
                self._requeue(batch)  # nothing accepted is dropped: the next commit retries
                for waiter in waiters:
                    if not waiter.done():  # done: cancelled, the waiter went away
                        waiter.set_exception(exc)
            else:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    async def _gather(self) -> None:
        """Let more writes join the next batch, as long as that costs nobody time in vain.

        Busy (the last batch had ``group_commit_rows`` rows or more): wait ``group_commit_s``.
        Otherwise a batch someone awaits (a charger's answer) goes at once, and one nobody
        awaits (``commit_soon``: the push lane's acknowledgments) waits the window or until
        someone awaits it; so at thousands of pushes a second the acknowledgments share
        commits instead of costing one each.
        """
        if self._last_rows >= self.group_commit_rows:
            await asyncio.sleep(self.group_commit_s)
            return
        if self._awaited:
            return
        self._hurry.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.group_commit_s):
                await self._hurry.wait()

    def _requeue(self, batch: Batch) -> None:
        for c in batch.connectors:
            self._connectors.setdefault((c[0], c[1], c[2]), c)
        for e in batch.evses:
            self._evses.setdefault(e[0], e)
        if self._in_flight is None:
            self._in_flight = batch.in_flight
        for cp in batch.charge_points:
            self._cps.setdefault(cp[0], cp)
        for key, value in batch.meta:
            self._meta.setdefault(key, value)
        for row in batch.catalog:
            self._catalog.setdefault((row.table, row.id), row)
        for d in batch.evse_data:
            self._data.setdefault(d[0], d)
        for a in batch.assignments:
            self._assignments.setdefault((a[0], a[1]), a)
