"""Durable state in SQLite (WAL) with group commit.

Writers ``put_*`` rows (keyed, so a second put of the same row before the commit replaces the
first) and then ``await commit()``: it returns once everything put so far is on disk. Commits
are batched over ``group_commit_ms`` so thousands of StatusNotifications a second cost a few
fsyncs, not thousands. All SQLite work runs on one dedicated thread.

The schema is brought up to date by versioned migrations (``bridge.store.migrate``) when the
database is opened. Everything a change stages (``put_*``, including catalog objects) before
its ``commit()`` is written in one transaction.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from typing import Any

from bridge.errors import StoreError
from bridge.store.migrate import migrate

# EvseRow.parked_code of an EVSE that is no longer shared: deleted at the hub while it may
# hold it (hub_holds), never inserted or updated again unless it is shared anew.
REMOVED = "removed"
CATALOG_TABLES = ("catalog_location", "catalog_station", "catalog_template")


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
class ChargePointRow:
    charge_point_id: str
    protocol: str | None = None
    connected: bool = False
    offline: bool = False
    last_seen: float | None = None
    disconnected_at: float | None = None
    boot: str | None = None  # JSON of the last BootNotification


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


@dataclass(slots=True)
class Snapshot:
    connectors: list[ConnectorRow]
    evses: list[EvseRow]
    charge_points: list[ChargePointRow]
    meta: dict[str, str]
    catalog: list[CatalogRow] = field(default_factory=list)


def _upsert_sql(table: str, cls: type[Any]) -> str:
    names = [f.name for f in fields(cls)]
    return (
        f"INSERT OR REPLACE INTO {table} ({', '.join(names)}) "
        f"VALUES ({', '.join('?' for _ in names)})"
    )


_CATALOG_EXTRA = {"catalog_station": ("location_id", "password_hash")}


def _catalog_upsert_sql(table: str) -> str:
    """INSERT ... ON CONFLICT DO UPDATE: the same statement works on SQLite and PostgreSQL."""
    names = ["id", *_CATALOG_EXTRA.get(table, ()), "body", "source", "version", "last_updated"]
    updates = ", ".join(f"{n} = excluded.{n}" for n in names[1:])
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}"
    )


_CATALOG_SQL = {table: _catalog_upsert_sql(table) for table in CATALOG_TABLES}
_CONNECTOR_SQL = _upsert_sql("connector", ConnectorRow)
_EVSE_SQL = _upsert_sql("evse", EvseRow)
_CP_SQL = _upsert_sql("charge_point", ChargePointRow)

Row = tuple[Any, ...]


def _snapshot(cls: type[Any]) -> Any:
    """A flat tuple of a row's fields in column order: an immutable copy, cheap to take."""
    return attrgetter(*(f.name for f in fields(cls)))


_connector_tuple = _snapshot(ConnectorRow)
_evse_tuple = _snapshot(EvseRow)
_cp_tuple = _snapshot(ChargePointRow)


class StateStore:
    """The bridge's SQLite database. Use from one event loop."""

    def __init__(
        self, path: Path, *, group_commit_ms: float = 2.0, synchronous: str = "FULL"
    ) -> None:
        self.path = path
        self.group_commit_s = group_commit_ms / 1000
        self._synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        # Staged rows as tuples (snapshots taken at put time), keyed so a later put replaces.
        self._connectors: dict[tuple[str, int, int], Row] = {}
        self._evses: dict[str, Row] = {}
        self._cps: dict[str, Row] = {}
        self._meta: dict[str, str] = {}
        self._catalog: dict[tuple[str, str], CatalogRow] = {}
        self._batch: asyncio.Future[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._write_lock = threading.Lock()
        self.migration: str | None = None  # what opening did to the schema (for the log)

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> Snapshot:
        """Open (creating if needed) and read everything; blocking, call at start-up."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.migration = migrate(self.path)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("PRAGMA busy_timeout=5000")
            self._db = db
            return Snapshot(
                connectors=[ConnectorRow(*r) for r in db.execute("SELECT * FROM connector")],
                evses=[_evse(r) for r in db.execute("SELECT * FROM evse")],
                charge_points=[_cp(r) for r in db.execute("SELECT * FROM charge_point")],
                meta=dict(db.execute("SELECT key, value FROM meta").fetchall()),
                catalog=_catalog_rows(db),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {self.path}: {exc}") from exc

    def write_meta_now(self, key: str, value: str) -> None:
        """Write one meta value durably at once (blocking; at start-up, before any traffic)."""
        if self._db is None:
            raise StoreError("state database is not open")
        try:
            with self._write_lock:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        except sqlite3.Error as exc:
            raise StoreError(f"state database write failed: {exc}") from exc

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def close(self) -> None:
        """Commit what is outstanding and close."""
        if self._db is None:
            return
        await self.commit()
        if self._flusher is not None:
            await self._flusher
        db, self._db = self._db, None
        await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=True)

    def close_unwritten(self) -> None:
        """Close without writing what is staged: for read-only use next to a running bridge
        (its process is the one writer). Blocking."""
        db, self._db = self._db, None
        if db is not None:
            db.close()
        self._executor.shutdown(wait=False)

    # -- writes ----------------------------------------------------------------------------
    def put_connector(self, row: ConnectorRow) -> None:
        self._connectors[(row.charge_point_id, row.evse_key, row.connector_id)] = _connector_tuple(
            row
        )

    def put_evse(self, row: EvseRow) -> None:
        # Rows are mutable objects owned by the outbox; the tuple is a snapshot, so a later
        # in-memory change cannot slip into a batch that is being written.
        self._evses[row.evse_id] = _evse_tuple(row)

    def put_charge_point(self, row: ChargePointRow) -> None:
        self._cps[row.charge_point_id] = _cp_tuple(row)

    def put_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def put_catalog(self, row: CatalogRow) -> None:
        """Stage a catalog object; it is written in the same transaction as what is staged
        with it (e.g. the outbox rows of the same change)."""
        self._catalog[(row.table, row.id)] = row

    async def commit(self) -> None:
        """Return when every row put so far is durable (raises StoreError if it cannot be)."""
        await asyncio.shield(self._next_batch())

    def commit_soon(self) -> None:
        """Have everything put so far written with the next batch, without waiting for it."""
        if self._db is not None:
            self._next_batch()

    def _next_batch(self) -> asyncio.Future[None]:
        if self._db is None:
            raise StoreError("state database is not open")
        if self._batch is None:
            self._batch = asyncio.get_running_loop().create_future()
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush_loop(), name="store-flush")
        return self._batch

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._batch is not None:
            if self.group_commit_s:
                await asyncio.sleep(self.group_commit_s)  # let more writers join this batch
            batch, self._batch = self._batch, None
            rows = (
                list(self._connectors.values()),
                list(self._evses.values()),
                list(self._cps.values()),
                list(self._meta.items()),
                list(self._catalog.values()),
            )
            self._connectors, self._evses, self._cps, self._meta = {}, {}, {}, {}
            self._catalog = {}
            try:
                await loop.run_in_executor(self._executor, self._write, *rows)
            except (sqlite3.Error, StoreError) as exc:
                self._requeue(*rows)  # nothing accepted is dropped: the next commit retries
                batch.set_exception(StoreError(f"state database write failed: {exc}"))
                batch.exception()  # retrieved here; waiters re-raise it
            else:
                batch.set_result(None)

    def _requeue(
        self,
        connectors: list[Row],
        evses: list[Row],
        cps: list[Row],
        meta: list[tuple[str, str]],
        catalog: list[CatalogRow],
    ) -> None:
        for c in connectors:
            self._connectors.setdefault((c[0], c[1], c[2]), c)
        for e in evses:
            self._evses.setdefault(e[0], e)
        for cp in cps:
            self._cps.setdefault(cp[0], cp)
        for key, value in meta:
            self._meta.setdefault(key, value)
        for row in catalog:
            self._catalog.setdefault((row.table, row.id), row)

    def _write(
        self,
        connectors: list[Row],
        evses: list[Row],
        cps: list[Row],
        meta: list[tuple[str, str]],
        catalog: list[CatalogRow],
    ) -> None:
        db = self._db
        if db is None:
            raise StoreError("state database is closed")
        with self._write_lock:
            db.execute("BEGIN")
            try:
                if connectors:
                    db.executemany(_CONNECTOR_SQL, connectors)
                if evses:
                    db.executemany(_EVSE_SQL, evses)
                if cps:
                    db.executemany(_CP_SQL, cps)
                if meta:
                    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta)
                for row in catalog:
                    db.execute(
                        _CATALOG_SQL[row.table],
                        (row.id, *row.extra, row.body, row.source, row.version, row.last_updated),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise


def _catalog_rows(db: sqlite3.Connection) -> list[CatalogRow]:
    rows = []
    for table in CATALOG_TABLES:
        extra = _CATALOG_EXTRA.get(table, ())
        columns = ", ".join(("id", *extra, "body", "source", "version", "last_updated"))
        for r in db.execute(f"SELECT {columns} FROM {table} ORDER BY id"):
            n = len(extra)
            rows.append(CatalogRow(table, r[0], r[1 + n], r[2 + n], int(r[3 + n]), r[4 + n],
                                   tuple(r[1 : 1 + n])))  # fmt: skip
    return rows


def _evse(r: tuple[Any, ...]) -> EvseRow:
    row = EvseRow(*r)
    row.hub_holds = bool(row.hub_holds)
    return row


def _cp(r: tuple[Any, ...]) -> ChargePointRow:
    row = ChargePointRow(*r)
    row.connected = bool(row.connected)
    row.offline = bool(row.offline)
    return row


def read_snapshot(path: Path) -> Snapshot:
    """Read the state database without the writer (for ``oicp-bridge status``)."""
    if not path.is_file():
        raise StoreError(
            f"state database {path} does not exist: the bridge has not run with this "
            "state.database yet (a relative path is taken from the working directory)"
        )
    store = StateStore(path)
    try:
        return store.open()
    finally:
        if store._db is not None:
            store._db.close()
        store._executor.shutdown(wait=False)
