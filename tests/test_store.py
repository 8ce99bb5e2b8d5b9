"""The state store on both backends: the same interface, the same guarantees.

Every test here runs on SQLite and on PostgreSQL (the ``backend`` fixture); tests of what only
a shared database has (fencing, presence ownership, the change feed) follow at the end.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
from typing import Any

import psycopg
import pytest

from bridge.config import Settings
from bridge.errors import NotLeaderError, StoreError
from bridge.ops import migrate_cmd
from bridge.store import make_store
from bridge.store.base import CatalogRow, ChargePointRow, ConnectorRow, EvseRow, StagedStore
from bridge.store.migrate import HEAD
from bridge.store.pgcluster import Cluster
from bridge.store.postgres import PostgresStore
from bridge.store.sqlite import SqliteStore
from tests.conftest import Events


def store_for(state: dict[str, Any], replica: str = "r1", **extra: Any) -> StagedStore:
    return make_store(Settings(state={**state, **extra}).state, replica_id=replica)


def rows() -> tuple[ConnectorRow, EvseRow, ChargePointRow, CatalogRow]:
    return (
        ConnectorRow("CP1", 1, 1, "Charging", "NoError", "2026-01-01T00:00:00Z", 1.5),
        EvseRow("DE*ABC*E1*1", "CP1", "Occupied", 2.0, "Available", True, 1.0, 2.0, 1,
                "ok", "000", None, 1.0, None),
        ChargePointRow("CP1", "1.6", True, False, 3.0, None, '{"a": 1}'),
        CatalogRow("catalog_location", "LOC1", '{"id": "LOC1"}', "api", 3, "2026-01-01"),
    )  # fmt: skip


async def lead(store: StagedStore) -> None:
    """Make ``store`` the holder of the push lease (shared databases only)."""
    if isinstance(store, PostgresStore):
        cluster = Cluster(store.url, replica_id=store.replica_id, where=store.where)
        grant = await cluster.acquire(60)
        await cluster.close()
        assert grant is not None
        store.epoch = grant.epoch


async def test_every_row_survives_a_reopen(backend: dict[str, Any]) -> None:
    store = store_for(backend)
    snapshot = store.open()
    assert snapshot.evses == [] and store.is_open
    await lead(store)
    connector, evse, cp, catalog = rows()
    store.put_connector(connector)
    store.put_evse(evse)
    store.put_charge_point(cp)
    store.put_meta("k", "v")
    store.put_catalog(catalog)
    await store.commit()
    await store.close()
    again = store_for(backend)
    back = again.open()
    assert back.connectors == [connector]
    assert back.evses == [evse]
    assert [r.charge_point_id for r in back.charge_points] == ["CP1"]
    assert back.charge_points[0].boot == '{"a": 1}' and back.charge_points[0].connected
    assert back.meta["k"] == "v"
    assert back.catalog == [catalog]
    again.close_unwritten()


async def test_a_later_put_replaces_and_concurrent_commits_share_batches(
    backend: dict[str, Any],
) -> None:
    store = store_for(backend, group_commit_ms=5)
    store.open()

    async def report(n: int) -> None:
        store.put_connector(ConnectorRow("CP1", n % 10, 1, f"S{n}", None, None, float(n)))
        await store.commit()

    await asyncio.gather(*(report(n) for n in range(300)))
    await store.close()
    again = store_for(backend)
    found = {(c.evse_key, c.ocpp_status) for c in again.open().connectors}
    again.close_unwritten()
    assert found == {(k, f"S{290 + k}") for k in range(10)}  # the last put of each key


def written_connectors(backend: dict[str, Any]) -> set[tuple[int, str]]:
    """What another process would read from the database now."""
    reader = store_for(backend)
    found = {(c.evse_key, c.ocpp_status) for c in reader.open().connectors}
    reader.close_unwritten()
    return found


async def test_writes_committed_within_a_window_share_a_commit_or_go_on_their_own(
    backend: dict[str, Any],
) -> None:
    """commit_within (the push lane's acknowledgments): written by the first commit that comes
    sooner, else when the window ends; once per window, whatever is put in it; and on close."""
    store = store_for(backend)
    store.open()
    writes = 0
    write = store._write

    async def counted(batch: Any) -> None:
        nonlocal writes
        writes += 1
        await write(batch)

    store._write = counted  # type: ignore[method-assign]
    store.put_connector(ConnectorRow("CP1", 1, 1, "A", None, None, 1.0))
    store.commit_within(0.3)
    store.put_connector(ConnectorRow("CP1", 2, 1, "B", None, None, 1.0))
    store.commit_within(0.3)  # the window is already running
    await asyncio.sleep(0.1)
    assert writes == 0 and written_connectors(backend) == set()
    await asyncio.sleep(0.4)
    assert writes == 1 and written_connectors(backend) == {(1, "A"), (2, "B")}

    store.put_connector(ConnectorRow("CP1", 3, 1, "C", None, None, 1.0))
    store.commit_within(0.3)
    store.put_connector(ConnectorRow("CP1", 4, 1, "D", None, None, 1.0))
    await store.commit()  # a charger's answer: it takes the waiting row along
    assert writes == 2 and (3, "C") in written_connectors(backend)
    await asyncio.sleep(0.4)  # the window ends with nothing left: no empty commit
    assert writes == 2

    store.put_connector(ConnectorRow("CP1", 5, 1, "E", None, None, 1.0))
    store.commit_within(30)
    store.commit_within(0.1)  # a shorter window: it ends first
    await asyncio.sleep(0.4)
    assert writes == 3 and (5, "E") in written_connectors(backend)

    store.put_connector(ConnectorRow("CP1", 6, 1, "F", None, None, 1.0))
    store.commit_within(30)
    await store.close()  # a stop writes it
    assert (6, "F") in written_connectors(backend)


async def test_a_failed_write_keeps_everything_for_the_next(backend: dict[str, Any]) -> None:
    """The database fails a commit (its session cut / locked by another writer): the commit
    raises, nothing staged is dropped, and the next commit writes it."""
    store = store_for(backend)
    store.open()
    connector = rows()[0]
    store.put_meta("warm", "1")
    await store.commit()  # the write connection exists now
    blocker = None
    if isinstance(store, PostgresStore):
        with psycopg.connect(store.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "application_name = 'bridge:r1'")  # fmt: skip
    else:
        assert isinstance(store, SqliteStore) and store._db is not None
        store._db.execute("PRAGMA busy_timeout=100")
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the file
    store.put_connector(connector)
    with pytest.raises(StoreError, match="write failed"):
        await store.commit()
    if blocker is not None:
        blocker.execute("ROLLBACK")
        blocker.close()
    await store.commit()  # the retry writes what the failed one held
    await store.close()
    again = store_for(backend)
    assert again.open().connectors == [connector]
    again.close_unwritten()


async def test_migrate_check_and_a_newer_database_is_refused(backend: dict[str, Any]) -> None:
    settings = Settings(state=backend)
    out = io.StringIO()
    assert migrate_cmd.run(settings, check=True, out=out) == 1
    assert "this bridge needs" in out.getvalue()
    assert migrate_cmd.run(settings, check=False, out=io.StringIO()) == 0
    out = io.StringIO()
    assert migrate_cmd.run(settings, check=True, out=out) == 0
    assert f"current (schema revision {HEAD})" in out.getvalue()
    _set_revision(settings, "0099_future")
    out = io.StringIO()
    assert migrate_cmd.run(settings, check=True, out=out) == 1
    assert "newer than this bridge" in out.getvalue()
    with pytest.raises(StoreError, match=r"0099_future.*newer bridge"):
        store_for(backend).open()


def _set_revision(settings: Settings, revision: str) -> None:
    sql = f"UPDATE alembic_version SET version_num = '{revision}'"
    if settings.state.postgres:
        assert settings.state.url is not None
        with psycopg.connect(settings.state.url, autocommit=True) as db:
            db.execute(sql.encode())
    else:
        with sqlite3.connect(settings.state.database) as db:
            db.execute(sql)


# -- only a shared database ------------------------------------------------------------------
async def test_evse_rows_are_written_only_under_the_current_lease(postgres: str) -> None:
    leader = store_for({"url": postgres}, "a")
    follower = store_for({"url": postgres}, "b")
    leader.open()
    follower.open()
    evse = rows()[1]
    follower.put_evse(evse)  # a follower's EVSE rows are the leader's business
    await follower.commit()
    with pytest.raises(NotLeaderError):
        await follower.sending(evse.evse_id)
    await lead(leader)
    assert isinstance(leader, PostgresStore) and isinstance(follower, PostgresStore)
    refused: list[bool] = []
    leader.on_fence_refused = lambda: refused.append(True)
    await leader.sending(evse.evse_id)
    leader.put_evse(evse)
    await leader.commit()
    # Another replica takes the lease (it expired, say): the old leader's writes are refused.
    with psycopg.connect(postgres, autocommit=True) as db:
        db.execute("UPDATE lease SET expires_at = 0")
    taken = await Cluster(follower.url, replica_id="b", where="db").acquire(60)
    assert taken is not None and taken.in_flight == evse.evse_id and taken.previous == "a"
    late = EvseRow(evse.evse_id, "CP1", "Available", hub_status="Available")
    leader.put_evse(late)
    leader.put_connector(rows()[0])  # the charger's report is kept all the same
    await leader.commit()
    assert refused == [True] and leader.epoch is None
    with pytest.raises(NotLeaderError):
        await leader.sending(evse.evse_id)
    with psycopg.connect(postgres) as db:
        assert db.execute("SELECT status, written_by FROM evse").fetchall() == [("Occupied", "a")]
        assert db.execute("SELECT count(*) FROM connector").fetchone() == (1,)
    await leader.close()
    await follower.close()


async def test_the_newest_connection_owns_a_charger_row(postgres: str) -> None:
    a, b = store_for({"url": postgres}, "a"), store_for({"url": postgres}, "b")
    a.open()
    b.open()
    a.put_charge_point(ChargePointRow("CP1", "1.6", True, replica="a"))
    await a.commit()
    b.put_charge_point(ChargePointRow("CP1", "1.6", True, replica="b"))  # newer: it wins
    await b.commit()
    a.put_charge_point(ChargePointRow("CP1", "1.6", False, disconnected_at=5.0, replica="b"))
    await a.commit()  # a closes its older connection: that must not disconnect b's
    with psycopg.connect(postgres) as db:
        assert db.execute("SELECT connected, replica FROM charge_point").fetchone() == (1, "b")
    b.put_charge_point(ChargePointRow("CP1", "1.6", False, disconnected_at=6.0, replica="b"))
    await b.commit()
    a.put_charge_point(ChargePointRow("CP1", "1.6", False, True, replica="b"))  # offline
    await a.commit()  # nobody holds it: the leader's offline decision is written
    with psycopg.connect(postgres) as db:
        assert db.execute("SELECT connected, offline FROM charge_point").fetchone() == (0, 1)
    await a.close()
    await b.close()


async def test_the_feed_misses_no_transaction_that_commits_late(postgres: str) -> None:
    writer = store_for({"url": postgres}, "w")
    writer.open()
    reader = store_for({"url": postgres}, "r")
    reader.open()
    assert isinstance(reader, PostgresStore)
    cluster = Cluster(reader.url, replica_id="r", where="db")
    watermark = reader.feed_from
    # A transaction that took its id early and commits after a later one was read.
    late = await psycopg.AsyncConnection.connect(postgres)
    await late.execute(
        "INSERT INTO connector (charge_point_id, evse_key, connector_id, ocpp_status, "
        "received_at, txid, written_by) VALUES ('CP9', 1, 1, 'Faulted', 1, "
        "pg_current_xact_id()::text::bigint, 'w')"
    )
    row = await (await late.execute("SELECT pg_current_xact_id()::text::bigint")).fetchone()
    assert row is not None
    late_txid = int(row[0])
    writer.put_connector(rows()[0])
    await writer.commit()
    found, watermark = await cluster.changes(watermark)
    assert [c.charge_point_id for c in found.connectors] == ["CP1"]
    await late.commit()
    await late.close()
    found, watermark = await cluster.changes(watermark)
    assert "CP9" in [c.charge_point_id for c in found.connectors]
    # Transaction ids are the server's, not the database's: any transaction still open on the
    # server (another test run's) keeps the watermark back, and the feed reads rows again until
    # it passes (at least once, by design). Once it is past the late transaction, never again.
    for _ in range(300):
        if watermark > late_txid:
            break
        found, watermark = await cluster.changes(watermark)
        await asyncio.sleep(0.1)
    found, watermark = await cluster.changes(watermark)
    assert watermark > late_txid
    assert not found.connectors  # read once the transaction is behind the watermark
    await cluster.close()
    await writer.close()
    await reader.close()


async def test_a_write_the_database_aborts_to_break_a_deadlock_is_tried_again(
    postgres: str, events: Events
) -> None:
    """The leader's sweep and a replica's writes update the same charge point rows in their
    own orders; the database then aborts one transaction. The store's batch is tried again:
    the charger waiting for its answer gets it, nothing is lost."""
    store = store_for({"url": postgres})
    assert isinstance(store, PostgresStore)
    store.open()
    for cp_id in ("CP1", "CP2"):
        store.put_charge_point(ChargePointRow(cp_id, "1.6", True, False, 1.0))
    await store.commit()
    other = await psycopg.AsyncConnection.connect(store.url)
    await other.execute("SET deadlock_timeout = '60s'")  # the store's session detects it
    await other.execute("UPDATE charge_point SET boot = 'x' WHERE charge_point_id = 'CP2'")
    for cp_id in ("CP1", "CP2"):  # CP1 first: locked, then the store waits for CP2
        store.put_charge_point(ChargePointRow(cp_id, "1.6", True, False, 2.0))
    write = asyncio.create_task(store.commit())
    await asyncio.sleep(0.3)
    await other.execute("UPDATE charge_point SET boot = 'x' WHERE charge_point_id = 'CP1'")
    await other.commit()  # reached once the store's first try was rolled back
    await write
    (retried,) = events.named("store.write_retried")
    assert retried["attempt"] == 1 and "deadlock" in retried["error"]
    cur = await other.execute("SELECT charge_point_id, last_seen FROM charge_point ORDER BY 1")
    assert await cur.fetchall() == [("CP1", 2.0), ("CP2", 2.0)]
    await other.close()
    await store.close()
