"""The SQLite backend (WAL): one file, one bridge process.

All SQLite work runs on one dedicated thread. The schema is brought up to date by versioned
migrations (``bridge.store.migrate``) when the database is opened. Staging and group commit:
``bridge.store.base``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

from bridge.errors import StoreError
from bridge.store.base import (
    CATALOG_TABLES,
    REMOVED,
    AssignmentRow,
    Batch,
    CatalogRow,
    ChargePointRow,
    ConnectorRow,
    EvseDataRow,
    EvseRow,
    Snapshot,
    StagedStore,
    catalog_columns,
    catalog_params,
    catalog_row,
    cp_row,
    data_row,
    evse_row,
)
from bridge.store.migrate import migrate

__all__ = [
    "CATALOG_TABLES",
    "REMOVED",
    "CatalogRow",
    "ChargePointRow",
    "ConnectorRow",
    "EvseRow",
    "Snapshot",
    "SqliteStore",
    "StateStore",
    "read_snapshot",
]


def _upsert_sql(table: str, cls: type[Any]) -> str:
    names = [f.name for f in fields(cls)]
    return (
        f"INSERT OR REPLACE INTO {table} ({', '.join(names)}) "
        f"VALUES ({', '.join('?' for _ in names)})"
    )


def _catalog_upsert_sql(table: str) -> str:
    """INSERT ... ON CONFLICT DO UPDATE (the PostgreSQL backend's statement is the same)."""
    names = catalog_columns(table)
    updates = ", ".join(f"{n} = excluded.{n}" for n in names[1:])
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)}) "
        f"ON CONFLICT (id) DO UPDATE SET {updates}"
    )


_CATALOG_SQL = {table: _catalog_upsert_sql(table) for table in CATALOG_TABLES}
_CONNECTOR_SQL = _upsert_sql("connector", ConnectorRow)
_EVSE_SQL = _upsert_sql("evse", EvseRow)
_CP_SQL = _upsert_sql("charge_point", ChargePointRow)
ASSIGNMENT_COLUMNS = "network, evse_id, group_name, acked_at"
_ASSIGNMENT_SQL = (f"INSERT OR REPLACE INTO network_assignment ({ASSIGNMENT_COLUMNS}) "
                   "VALUES (?, ?, ?, ?)")  # fmt: skip
_DATA_SQL = _upsert_sql("evse_data", EvseDataRow)
_COLUMNS = {
    "connector": ", ".join(f.name for f in fields(ConnectorRow)),
    "evse": ", ".join(f.name for f in fields(EvseRow)),
    "charge_point": ", ".join(f.name for f in fields(ChargePointRow)),
    "evse_data": ", ".join(f.name for f in fields(EvseDataRow)),
}


class SqliteStore(StagedStore):
    """The bridge's SQLite database."""

    def __init__(
        self, path: Path, *, group_commit_ms: float = 2.0, synchronous: str = "FULL"
    ) -> None:
        super().__init__(group_commit_ms=group_commit_ms)
        self.path = path
        self._synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        self._write_lock = threading.Lock()

    @property
    def where(self) -> str:
        return str(self.path)

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> Snapshot:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.migration = migrate(self.path)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute("PRAGMA busy_timeout=5000")
            self._db = db
            c = _COLUMNS
            return Snapshot(
                connectors=[ConnectorRow(*r) for r in db.execute(
                    f"SELECT {c['connector']} FROM connector")],
                evses=[evse_row(r) for r in db.execute(f"SELECT {c['evse']} FROM evse")],
                charge_points=[cp_row(r) for r in db.execute(
                    f"SELECT {c['charge_point']} FROM charge_point")],
                meta=dict(db.execute("SELECT key, value FROM meta").fetchall()),
                catalog=_catalog_rows(db),
                assignments=[AssignmentRow(*r) for r in db.execute(
                    f"SELECT {ASSIGNMENT_COLUMNS} FROM network_assignment")],
                evse_data=[data_row(r) for r in db.execute(
                    f"SELECT {c['evse_data']} FROM evse_data")],
            )  # fmt: skip
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open state database {self.path}: {exc}") from exc

    def write_meta_now(self, key: str, value: str) -> None:
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

    async def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        self._executor.shutdown(wait=True)

    def _close_unwritten(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
        self._executor.shutdown(wait=False)

    # -- writes ----------------------------------------------------------------------------
    async def _write(self, batch: Batch) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._write_sync, batch)
        except sqlite3.Error as exc:
            raise StoreError(f"state database write failed: {exc}") from exc

    def _write_sync(self, batch: Batch) -> None:
        db = self._db
        if db is None:
            raise StoreError("state database is closed")
        with self._write_lock:
            db.execute("BEGIN")
            try:
                if batch.connectors:
                    db.executemany(_CONNECTOR_SQL, batch.connectors)
                if batch.evses:
                    db.executemany(_EVSE_SQL, batch.evses)
                if batch.charge_points:
                    db.executemany(_CP_SQL, batch.charge_points)
                if batch.meta:
                    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", batch.meta)
                for row in batch.catalog:
                    db.execute(_CATALOG_SQL[row.table], catalog_params(row))
                if batch.assignments:
                    db.executemany(_ASSIGNMENT_SQL, batch.assignments)
                if batch.evse_data:
                    db.executemany(_DATA_SQL, batch.evse_data)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise


#: The name the rest of the bridge used before there were two backends.
StateStore = SqliteStore


def _catalog_rows(db: sqlite3.Connection) -> list[CatalogRow]:
    rows = []
    for table in CATALOG_TABLES:
        columns = ", ".join(catalog_columns(table))
        for r in db.execute(f"SELECT {columns} FROM {table} ORDER BY id"):
            rows.append(catalog_row(table, r))
    return rows


def read_snapshot(path: Path) -> Snapshot:
    """Read the state database without the writer (for ``oicp-bridge status``)."""
    if not path.is_file():
        raise StoreError(
            f"state database {path} does not exist: the bridge has not run with this "
            "state.database yet (a relative path is taken from the working directory)"
        )
    store = SqliteStore(path)
    try:
        return store.open()
    finally:
        store.close_unwritten()
