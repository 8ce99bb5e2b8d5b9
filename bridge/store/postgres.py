"""The PostgreSQL backend: one database shared by any number of bridge replicas.

It mirrors ``bridge.store.sqlite`` (same rows, same migrations, same staging and group commit
from ``bridge.store.base``); what differs is what several writers need:

* Who writes what. A replica writes the connector rows of the chargers it holds and their
  ``charge_point`` row (only while it holds the connection, or to claim it: the newest
  connection wins); only the push leader writes ``evse`` rows (the hub-side state) and the
  lease's in-flight marker, and only inside a transaction that finds its lease epoch still
  current (``SELECT ... FOR UPDATE`` on the lease row): a deposed leader's late writes are
  refused, and it steps down (:meth:`PostgresStore.check_fence`).
* Each followed row carries the writing transaction's id and replica (``txid``,
  ``written_by``), and every transaction ends with ``NOTIFY bridge_feed``: the other replicas
  wake up and read what changed (``bridge.store.pgcluster``).

Driver: psycopg 3. One driver for the runtime (async connections, pipelined ``executemany``,
LISTEN/NOTIFY) and for the migrations (SQLAlchemy's ``postgresql+psycopg`` dialect), libpq's
usual configuration (PGPASSWORD, .pgpass, sslmode) for free.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import psycopg
import psycopg.errors
import structlog

from bridge.errors import NotLeaderError, StoreError
from bridge.store.base import (
    CATALOG_TABLES,
    CLEAR,
    AssignmentRow,
    Batch,
    ConnectorRow,
    EvseDataRow,
    Row,
    Snapshot,
    StagedStore,
    catalog_columns,
    catalog_params,
    catalog_row,
    cp_row,
    data_row,
    evse_row,
)
from bridge.store.migrate import libpq_url, migrate_url

log = structlog.get_logger("bridge.store")

#: The NOTIFY channel every committed change is announced on (payload: the replica).
CHANNEL = "bridge_feed"
TXID = "pg_current_xact_id()::text::bigint"

CONNECTOR_COLUMNS = ("charge_point_id", "evse_key", "connector_id", "ocpp_status", "error_code",
                     "reported_at", "received_at")  # fmt: skip
EVSE_COLUMNS = ("evse_id", "charge_point_id", "status", "changed_at", "hub_status", "hub_holds",
                "hub_acked_at", "pending_since", "attempts", "last_outcome", "last_code",
                "last_info", "last_push_at", "parked_code")  # fmt: skip
DATA_COLUMNS = tuple(f.name for f in fields(EvseDataRow))
CP_COLUMNS = ("charge_point_id", "protocol", "connected", "offline", "last_seen",
              "disconnected_at", "boot", "replica")  # fmt: skip


def _upsert(table: str, columns: tuple[str, ...] | list[str], key: str, where: str = "") -> str:
    """INSERT ... ON CONFLICT DO UPDATE of the given columns, stamped with txid/written_by."""
    names = [*columns, "txid", "written_by"]
    values = [*("%s" for _ in columns), TXID, "%s"]
    updates = ", ".join(f"{n} = excluded.{n}" for n in names if n not in key.split(", "))
    return (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(values)}) "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}{where}")  # fmt: skip


CONNECTOR_SQL = _upsert("connector", CONNECTOR_COLUMNS, "charge_point_id, evse_key, connector_id")
EVSE_SQL = _upsert("evse", EVSE_COLUMNS, "evse_id")
DATA_SQL = _upsert("evse_data", DATA_COLUMNS, "evse_id")
# A replica overwrites a charge point's row while it holds the connection, once nobody holds
# it, or to claim it (a new connection: the newest wins, the older replica closes its own).
CP_SQL = _upsert(
    "charge_point", CP_COLUMNS, "charge_point_id",
    " WHERE charge_point.replica IS NOT DISTINCT FROM excluded.written_by"
    " OR charge_point.connected = 0 OR excluded.connected = 1",
)  # fmt: skip
CATALOG_SQL = {t: _upsert(t, catalog_columns(t), "id") for t in CATALOG_TABLES}
ASSIGNMENT_COLUMNS = ("network", "evse_id", "group_name", "acked_at")
ASSIGNMENT_SQL = _upsert("network_assignment", ASSIGNMENT_COLUMNS, "network, evse_id")
META_SQL = ("INSERT INTO meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value")  # fmt: skip
FENCE_SQL = "SELECT 1 FROM lease WHERE name = 'push' AND holder = %s AND epoch = %s FOR UPDATE"
IN_FLIGHT_SQL = "UPDATE lease SET in_flight = %s WHERE name = 'push'"
XMIN_SQL = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
#: Errors after which the whole transaction was rolled back and may simply be tried again.
_CONFLICTS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
_CONFLICT_TRIES = 3
_CONFLICT_PAUSE_S = 0.01  # before a second try (twice that before a third), ±50 %


def connect_kwargs(replica_id: str) -> dict[str, Any]:
    # The application name lets an operator (or a test) find a replica's sessions.
    return {"application_name": f"bridge:{replica_id}"[:63], "connect_timeout": 10}


class PostgresStore(StagedStore):
    """The bridge's PostgreSQL database, as seen by one replica."""

    shared = True

    def __init__(
        self, url: str, *, replica_id: str, where: str, group_commit_ms: float = 2.0
    ) -> None:
        super().__init__(group_commit_ms=group_commit_ms)
        self.url = libpq_url(url)
        self.replica_id = replica_id
        self._where = where
        self._opened = False
        self._conn: psycopg.AsyncConnection[Any] | None = None
        #: The push lease's epoch while this replica leads (set by bridge.cluster.lease);
        #: EVSE rows and the in-flight marker are written only under it.
        self.epoch: int | None = None
        #: Called (once per loss) when a fenced write found the lease taken by another.
        self.on_fence_refused: Callable[[], None] | None = None
        #: The feed's start: the oldest transaction that may not be in the snapshot read.
        self.feed_from = 0

    @property
    def where(self) -> str:
        return self._where

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> Snapshot:
        self.migration = migrate_url(self.url, self._where)
        try:
            with psycopg.connect(self.url, **connect_kwargs(self.replica_id)) as db:
                # One snapshot for everything, and the feed starts where it was taken.
                db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                self.feed_from = int(_one(db.execute(XMIN_SQL).fetchone()))
                snapshot = read_all(db)
                db.execute("COMMIT")
        except psycopg.Error as exc:
            raise StoreError(f"cannot open state database {self._where}: {_line(exc)}") from exc
        self._opened = True
        return snapshot

    def write_meta_now(self, key: str, value: str) -> None:
        try:
            with psycopg.connect(self.url, **connect_kwargs(self.replica_id)) as db:
                db.execute(META_SQL, (key, value))
        except psycopg.Error as exc:
            raise StoreError(f"state database write failed: {_line(exc)}") from exc

    @property
    def is_open(self) -> bool:
        return self._opened

    async def _close(self) -> None:
        self._opened = False
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _close_unwritten(self) -> None:
        self._opened = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.pgconn.finish()  # no event loop needed: drop the session

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        """The write connection, opened again after it was lost (a restart of the database,
        a terminated session)."""
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, **connect_kwargs(self.replica_id)
                )
            except psycopg.Error as exc:
                raise StoreError(
                    f"cannot reach state database {self._where}: {_line(exc)}"
                ) from exc
            self._conn = conn
        return conn

    # -- writes ----------------------------------------------------------------------------
    def check_fence(self) -> None:
        if self.epoch is None:
            raise NotLeaderError("this replica does not hold the push lease")

    async def _write(self, batch: Batch) -> None:
        """One transaction for the batch; tried again when the database aborted it only to
        break a deadlock or a serialization conflict (replicas and the leader's sweep update
        the same charge point rows in their own orders): nothing was written, and a charger
        waiting for its answer should not get an error for a conflict that a second try
        resolves."""
        for attempt in range(1, _CONFLICT_TRIES + 1):
            try:
                await self._write_once(batch)
                return
            except StoreError as exc:
                conflict = exc.__cause__
                if attempt == _CONFLICT_TRIES or not isinstance(conflict, _CONFLICTS):
                    raise
                log.info("store.write_retried", attempt=attempt, error=_line(conflict))
                # A moment for the transaction it collided with to finish, different for
                # each replica so that two colliding again in step is unlikely.
                await asyncio.sleep(random.uniform(0.5, 1.5) * _CONFLICT_PAUSE_S * attempt)

    async def _write_once(self, batch: Batch) -> None:
        conn = await self.connection()
        me = self.replica_id
        try:
            async with conn.transaction(), conn.cursor() as cur:
                if batch.connectors:
                    await cur.executemany(CONNECTOR_SQL, [(*c, me) for c in batch.connectors])
                if batch.charge_points:
                    await cur.executemany(CP_SQL, [
                        (c[0], c[1], int(c[2]), int(c[3]), *c[4:], me)
                        for c in batch.charge_points
                    ])  # fmt: skip
                if batch.meta:
                    await cur.executemany(META_SQL, batch.meta)
                for row in batch.catalog:
                    await cur.execute(CATALOG_SQL[row.table], (*catalog_params(row), me))
                if (
                    batch.evses
                    or batch.evse_data
                    or batch.in_flight is not None
                    or batch.assignments
                ):
                    await self._write_fenced(cur, batch)
                await cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, me))
        except psycopg.Error as exc:
            if conn.broken:
                self._conn = None
            raise StoreError(f"state database write failed: {_line(exc)}") from exc

    async def _write_fenced(self, cur: psycopg.AsyncCursor[Any], batch: Batch) -> None:
        """The leader's rows, only under its current lease (a follower has none to write:
        its EVSE rows are the leader's business and stay unwritten)."""
        epoch = self.epoch
        if epoch is None:
            return
        await cur.execute(FENCE_SQL, (self.replica_id, epoch))
        if await cur.fetchone() is None:
            self.epoch = None  # deposed: another replica took the lease
            if self.on_fence_refused is not None:
                self.on_fence_refused()
            return
        if batch.evses:
            await cur.executemany(EVSE_SQL, [
                (*e[:5], int(e[5]), *e[6:], self.replica_id) for e in batch.evses
            ])  # fmt: skip
        if batch.assignments:
            await cur.executemany(ASSIGNMENT_SQL, [(*a, self.replica_id)
                                                   for a in batch.assignments])  # fmt: skip
        if batch.evse_data:
            await cur.executemany(DATA_SQL, [(*d, self.replica_id) for d in batch.evse_data])
        if batch.in_flight is not None:
            await cur.execute(
                IN_FLIGHT_SQL, (None if batch.in_flight == CLEAR else batch.in_flight,)
            )


def read_all(db: psycopg.Connection[Any]) -> Snapshot:
    """Every row of the state (the caller chooses the transaction)."""
    return Snapshot(
        connectors=[ConnectorRow(*r) for r in db.execute(
            f"SELECT {', '.join(CONNECTOR_COLUMNS)} FROM connector")],
        evses=[evse_row(r) for r in db.execute(f"SELECT {', '.join(EVSE_COLUMNS)} FROM evse")],
        charge_points=[cp_row(r) for r in db.execute(
            f"SELECT {', '.join(CP_COLUMNS)} FROM charge_point")],
        meta={k: v for k, v in db.execute("SELECT key, value FROM meta")},
        catalog=[catalog_row(t, r) for t in CATALOG_TABLES for r in db.execute(
            f"SELECT {', '.join(catalog_columns(t))} FROM {t} ORDER BY id")],
        assignments=[AssignmentRow(*r) for r in db.execute(
            f"SELECT {', '.join(ASSIGNMENT_COLUMNS)} FROM network_assignment")],
        evse_data=[data_row(r) for r in db.execute(
            f"SELECT {', '.join(DATA_COLUMNS)} FROM evse_data")],
    )  # fmt: skip


def _one(row: Row | None) -> Any:
    if row is None:
        raise StoreError("the database answered no row")
    return row[0]


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_snapshot_url(url: str, where: str) -> Snapshot:
    """Read the state without writing (``oicp-bridge status``); the schema must be current."""
    from bridge.store.migrate import HEAD, revision_of

    revision = revision_of(url, where)
    if revision != HEAD:
        raise StoreError(
            f"state database {where} is at schema revision {revision!r}, not {HEAD!r}: start "
            "the bridge (or `oicp-bridge migrate`) first"
        )
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=10) as db:
            db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return read_all(db)
    except psycopg.Error as exc:
        raise StoreError(f"cannot read state database {where}: {_line(exc)}") from exc


async def wait_closed(conn: psycopg.AsyncConnection[Any] | None) -> None:
    if conn is not None and not conn.closed:
        await asyncio.shield(conn.close())
