"""What replicas on one PostgreSQL database tell each other: the push lease, heartbeats, and
the change feed.

Times of the lease and the heartbeats are the database's clock (``clock_timestamp()``), so
that replicas on machines with different clocks agree on when a lease expired. This module
only runs statements; the rules are ``bridge.cluster``'s.

The feed: every row other replicas follow carries the id of the transaction that wrote it
(``txid``). A reader keeps a watermark, the oldest transaction that was still running when it
last read; it reads the rows of every transaction from there on, in one snapshot, and moves
the watermark to that snapshot's oldest running transaction. A transaction that commits
late is thereby read late, never missed; rows read twice are applied twice, which changes
nothing. So a lost NOTIFY costs nothing but the wait until the next read.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bridge.errors import StoreError
from bridge.store.base import (
    CATALOG_TABLES,
    AssignmentRow,
    CatalogRow,
    ChargePointRow,
    ConnectorRow,
    EvseDataRow,
    EvseRow,
    catalog_columns,
    catalog_row,
    cp_row,
    data_row,
    evse_row,
)
from bridge.store.postgres import (
    ASSIGNMENT_COLUMNS,
    CHANNEL,
    CONNECTOR_COLUMNS,
    CP_COLUMNS,
    DATA_COLUMNS,
    EVSE_COLUMNS,
    TXID,
    XMIN_SQL,
    connect_kwargs,
)

NOW = "extract(epoch from clock_timestamp())"


@dataclass(frozen=True, slots=True)
class Grant:
    """A lease just taken: its epoch, and what the previous holder had in flight."""

    epoch: int
    in_flight: str | None
    previous: str | None


@dataclass(slots=True)
class Changes:
    """What other replicas wrote since the last read."""

    connectors: list[ConnectorRow] = field(default_factory=list)
    charge_points: list[ChargePointRow] = field(default_factory=list)
    evses: list[EvseRow] = field(default_factory=list)
    catalog: list[CatalogRow] = field(default_factory=list)
    assignments: list[AssignmentRow] = field(default_factory=list)
    evse_data: list[EvseDataRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.connectors or self.charge_points or self.evses or self.catalog
                    or self.assignments or self.evse_data)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    replica_id: str
    host: str | None
    pid: int | None
    role: str | None
    heartbeat_age: float
    ops_url: str | None


class Cluster:
    """One replica's control connection (lease, heartbeat, feed) and its LISTEN connection."""

    def __init__(self, url: str, *, replica_id: str, where: str) -> None:
        self.url = url
        self.replica_id = replica_id
        self.where = where
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()  # one statement sequence at a time on the connection
        self._listen_task: asyncio.Task[None] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, **connect_kwargs(self.replica_id)
            )
            self._conn = conn
        return conn

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Any]) -> Any:
        async with self._lock:
            try:
                conn = await self._connection()
                return await work(conn)
            except psycopg.Error as exc:
                if self._conn is not None and (self._conn.broken or self._conn.closed):
                    self._conn = None
                raise StoreError(f"state database {self.where}: {_line(exc)}") from exc

    async def close(self) -> None:
        if self._listen_task is not None:
            self._listen_task.cancel()
            await asyncio.gather(self._listen_task, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            await conn.close()

    # -- the push lease --------------------------------------------------------------------
    async def acquire(self, ttl: float) -> Grant | None:
        """Take the lease if nobody holds it or it expired by the database's clock."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> Grant | None:
            async with conn.transaction():
                cur = await conn.execute(
                    f"SELECT holder, in_flight, epoch, expires_at < {NOW} FROM lease "
                    "WHERE name = 'push' FOR UPDATE"
                )
                row = await cur.fetchone()
                if row is None:
                    raise StoreError("the lease row is missing (a migration did not run)")
                holder, in_flight, _epoch, expired = row
                if holder is not None and not expired:
                    return None
                cur = await conn.execute(
                    f"UPDATE lease SET holder = %s, epoch = epoch + 1, acquired_at = {NOW}, "
                    f"expires_at = {NOW} + %s WHERE name = 'push' RETURNING epoch",
                    (self.replica_id, ttl),
                )
                new = await cur.fetchone()
                assert new is not None
                return Grant(int(new[0]), in_flight, holder)

        result: Grant | None = await self._run(work)
        return result

    async def renew(self, epoch: int, ttl: float) -> bool:
        """Extend the lease to ``ttl`` from now (database clock); False: it is not ours."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(
                f"UPDATE lease SET expires_at = {NOW} + %s WHERE name = 'push' "
                "AND holder = %s AND epoch = %s RETURNING 1",
                (ttl, self.replica_id, epoch),
            )
            return await cur.fetchone() is not None

        result: bool = await self._run(work)
        return result

    async def release(self, epoch: int) -> None:
        """Give the lease up at once (a clean stop); the in-flight marker stays for the next."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "UPDATE lease SET holder = NULL, expires_at = NULL WHERE name = 'push' "
                "AND holder = %s AND epoch = %s",
                (self.replica_id, epoch),
            )

        await self._run(work)

    async def holder(self) -> tuple[str | None, int, float | None]:
        """(holder, epoch, seconds until it expires) as the database sees it now."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[str | None, int, float | None]:
            cur = await conn.execute(
                f"SELECT holder, epoch, expires_at - {NOW} FROM lease WHERE name = 'push'"
            )
            row = await cur.fetchone()
            return (None, 0, None) if row is None else (row[0], int(row[1]), row[2])

        result: tuple[str | None, int, float | None] = await self._run(work)
        return result

    async def leader(self) -> tuple[str | None, str | None]:
        """The lease holder while its lease runs (by the database's clock), and its API URL."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[str | None, str | None]:
            cur = await conn.execute(
                "SELECT l.holder, r.ops_url FROM lease l LEFT JOIN replica r ON "
                f"r.replica_id = l.holder WHERE l.name = 'push' AND l.expires_at > {NOW}"
            )
            row = await cur.fetchone()
            return (None, None) if row is None else (row[0], row[1])

        result: tuple[str | None, str | None] = await self._run(work)
        return result

    # -- replicas --------------------------------------------------------------------------
    async def heartbeat(self, role: str, ops_url: str | None) -> None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO replica (replica_id, host, pid, started_at, heartbeat_at, role, "
                f"ops_url) VALUES (%s, %s, %s, {NOW}, {NOW}, %s, %s) ON CONFLICT (replica_id) "
                "DO UPDATE SET heartbeat_at = excluded.heartbeat_at, role = excluded.role, "
                "ops_url = excluded.ops_url",
                (self.replica_id, socket.gethostname(), os.getpid(), role, ops_url),
            )

        await self._run(work)

    async def leave(self) -> None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("DELETE FROM replica WHERE replica_id = %s", (self.replica_id,))

        await self._run(work)

    async def replicas(self) -> list[ReplicaInfo]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[ReplicaInfo]:
            cur = await conn.execute(
                f"SELECT replica_id, host, pid, role, {NOW} - heartbeat_at, ops_url "
                "FROM replica ORDER BY replica_id"
            )
            return [ReplicaInfo(*r) for r in await cur.fetchall()]

        result: list[ReplicaInfo] = await self._run(work)
        return result

    async def holder_of(self, charge_point_id: str) -> tuple[str | None, bool]:
        """(the replica whose claim is the newest, whether it is connected) as committed."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[str | None, bool]:
            cur = await conn.execute(
                "SELECT replica, connected FROM charge_point WHERE charge_point_id = %s",
                (charge_point_id,),
            )
            row = await cur.fetchone()
            return (None, False) if row is None else (row[0], bool(row[1]))

        result: tuple[str | None, bool] = await self._run(work)
        return result

    async def release_chargers(self) -> list[str]:
        """At start: the chargers this replica's name still holds in the database (a killed
        process of the same name) are disconnected as of now."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            cur = await conn.execute(
                f"UPDATE charge_point SET connected = 0, disconnected_at = {NOW}, "
                f"txid = {TXID}, written_by = %s WHERE replica = %s AND connected = 1 "
                "RETURNING charge_point_id",
                (self.replica_id, self.replica_id),
            )
            found = [str(r[0]) for r in await cur.fetchall()]
            if found:
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.replica_id))
            return found

        result: list[str] = await self._run(work)
        return result

    async def sweep(self, timeout: float) -> list[str]:
        """Chargers held by a replica whose heartbeat is older than ``timeout`` (or that is
        gone): disconnected as of its last heartbeat. Returns their charge point IDs."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            cur = await conn.execute(
                "UPDATE charge_point cp SET connected = 0, disconnected_at = COALESCE("
                "(SELECT r.heartbeat_at FROM replica r WHERE r.replica_id = cp.replica), "
                f"{NOW}), txid = {TXID}, written_by = %s WHERE cp.connected = 1 AND NOT EXISTS "
                "(SELECT 1 FROM replica r WHERE r.replica_id = cp.replica AND r.heartbeat_at >= "
                f"{NOW} - %s) RETURNING cp.charge_point_id",
                (self.replica_id, timeout),
            )
            found = [str(r[0]) for r in await cur.fetchall()]
            if found:
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self.replica_id))
            return found

        result: list[str] = await self._run(work)
        return result

    # -- the feed ----------------------------------------------------------------------------
    async def changes(self, since: int) -> tuple[Changes, int]:
        """What other replicas wrote in transactions from ``since`` on; the next watermark."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[Changes, int]:
            found = Changes()
            me = self.replica_id
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur = await conn.execute(XMIN_SQL)
                row = await cur.fetchone()
                watermark = int(row[0]) if row else since
                where = "WHERE txid >= %s AND written_by IS DISTINCT FROM %s"
                cur = await conn.execute(
                    f"SELECT {', '.join(CONNECTOR_COLUMNS)} FROM connector {where}", (since, me)
                )
                found.connectors = [ConnectorRow(*r) for r in await cur.fetchall()]
                cur = await conn.execute(
                    f"SELECT {', '.join(CP_COLUMNS)} FROM charge_point {where}", (since, me)
                )
                found.charge_points = [cp_row(r) for r in await cur.fetchall()]
                cur = await conn.execute(
                    f"SELECT {', '.join(EVSE_COLUMNS)} FROM evse {where}", (since, me)
                )
                found.evses = [evse_row(r) for r in await cur.fetchall()]
                cur = await conn.execute(
                    f"SELECT {', '.join(DATA_COLUMNS)} FROM evse_data {where}", (since, me)
                )
                found.evse_data = [data_row(r) for r in await cur.fetchall()]
                for table in CATALOG_TABLES:
                    cur = await conn.execute(
                        f"SELECT {', '.join(catalog_columns(table))} FROM {table} {where}",
                        (since, me),
                    )
                    found.catalog += [catalog_row(table, r) for r in await cur.fetchall()]
                cur = await conn.execute(
                    f"SELECT {', '.join(ASSIGNMENT_COLUMNS)} FROM network_assignment {where}",
                    (since, me),
                )
                found.assignments = [AssignmentRow(*r) for r in await cur.fetchall()]
            return found, watermark

        result: tuple[Changes, int] = await self._run(work)
        return result

    async def evses(self) -> list[EvseRow]:
        """Every EVSE row as committed now (a new leader starts from these)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[EvseRow]:
            cur = await conn.execute(f"SELECT {', '.join(EVSE_COLUMNS)} FROM evse")
            return [evse_row(r) for r in await cur.fetchall()]

        result: list[EvseRow] = await self._run(work)
        return result

    async def assignments(self) -> list[AssignmentRow]:
        """What the hub acknowledged of the EVSE networks, as committed now (a new leader)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[AssignmentRow]:
            cur = await conn.execute(
                f"SELECT {', '.join(ASSIGNMENT_COLUMNS)} FROM network_assignment"
            )
            return [AssignmentRow(*r) for r in await cur.fetchall()]

        result: list[AssignmentRow] = await self._run(work)
        return result

    async def evse_data(self) -> list[EvseDataRow]:
        """Every EVSE data row as committed now (a new leader starts from these)."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[EvseDataRow]:
            cur = await conn.execute(f"SELECT {', '.join(DATA_COLUMNS)} FROM evse_data")
            return [data_row(r) for r in await cur.fetchall()]

        result: list[EvseDataRow] = await self._run(work)
        return result

    def listen(self, wake: asyncio.Event, on_error: Callable[[BaseException], None]) -> None:
        """Set ``wake`` on every NOTIFY of the feed (reconnecting as needed)."""
        self._listen_task = asyncio.create_task(self._listen(wake, on_error), name="feed-listen")

    async def _listen(self, wake: asyncio.Event, on_error: Callable[[BaseException], None]) -> None:
        delay = 0.2
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, **connect_kwargs(self.replica_id)
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    wake.set()  # anything missed while not listening: read now
                    delay = 0.2
                    async for note in conn.notifies():
                        if note.payload != self.replica_id:
                            wake.set()
            except psycopg.Error as exc:
                on_error(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
