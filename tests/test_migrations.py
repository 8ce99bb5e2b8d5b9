"""Versioned migrations of the state database: baseline, adoption of old databases, refusals."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from bridge.errors import StoreError
from bridge.store.migrate import BASELINE, HEAD, alembic_config, migrate
from bridge.store.sqlite import StateStore

# The schema exactly as the bridge created it before migrations existed (schema_version 1).
LEGACY_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS connector (
    charge_point_id TEXT NOT NULL, evse_key INTEGER NOT NULL, connector_id INTEGER NOT NULL,
    ocpp_status TEXT NOT NULL, error_code TEXT, reported_at TEXT, received_at REAL NOT NULL,
    PRIMARY KEY (charge_point_id, evse_key, connector_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS evse (
    evse_id TEXT PRIMARY KEY, charge_point_id TEXT NOT NULL, status TEXT NOT NULL,
    changed_at REAL, hub_status TEXT, hub_holds INTEGER NOT NULL DEFAULT 0, hub_acked_at REAL,
    pending_since REAL, attempts INTEGER NOT NULL DEFAULT 0, last_outcome TEXT,
    last_code TEXT, last_info TEXT, last_push_at REAL, parked_code TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS charge_point (
    charge_point_id TEXT PRIMARY KEY, protocol TEXT, connected INTEGER NOT NULL DEFAULT 0,
    offline INTEGER NOT NULL DEFAULT 0, last_seen REAL, disconnected_at REAL, boot TEXT
) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema_version', '1');
"""
LEGACY_TABLES = ("meta", "connector", "evse", "charge_point")


def legacy_db(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(LEGACY_SCHEMA)
    db.execute("INSERT INTO evse (evse_id, charge_point_id, status, hub_status, hub_holds) "
               "VALUES ('DE*ABC*E1*1', 'CP1', 'Occupied', 'Occupied', 1)")  # fmt: skip
    db.commit()
    db.close()


def columns(path: Path, table: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return [tuple(r) for r in db.execute(f"PRAGMA table_info({table})")]
    finally:
        db.close()


def without_rowid(path: Path, table: str) -> bool:
    db = sqlite3.connect(path)
    try:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    finally:
        db.close()
    return "WITHOUT ROWID" in str(sql).upper()


def test_head_is_the_newest_revision() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    assert script.get_heads() == [HEAD]
    assert [r.revision for r in script.walk_revisions()][-1] == BASELINE


def test_baseline_is_exactly_the_old_schema(tmp_path: Path) -> None:
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    legacy_db(old)
    from alembic import command
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{new}")
    with engine.begin() as connection:
        config = alembic_config(connection=connection)
        command.upgrade(config, BASELINE)
    engine.dispose()
    for table in LEGACY_TABLES:
        assert columns(new, table) == columns(old, table), table
        assert without_rowid(new, table)


def test_old_database_is_adopted_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    legacy_db(path)
    store = StateStore(path)
    snapshot = store.open()
    assert "adopted schema version 1" in (store.migration or "")
    assert [(r.evse_id, r.hub_status, r.hub_holds) for r in snapshot.evses] == [
        ("DE*ABC*E1*1", "Occupied", True)
    ]
    assert snapshot.meta["schema_version"] == "2"  # a bridge from before migrations refuses it
    assert snapshot.catalog == []
    store._db.close()  # type: ignore[union-attr]
    store._executor.shutdown()
    assert migrate(path) == "current"


def test_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    migrate(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE alembic_version SET version_num = '0099_future'")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"0099_future.*newer bridge.*knows up to"):
        StateStore(path).open()
    assert path.read_bytes() == before


def test_unknown_legacy_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    db = sqlite3.connect(path)
    db.executescript(LEGACY_SCHEMA.replace("'1'", "'7'"))
    db.close()
    with pytest.raises(StoreError, match="schema version 7"):
        migrate(path)


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    """Every revision can be undone (a failed release can be rolled back)."""
    from alembic import command
    from sqlalchemy import create_engine

    path = tmp_path / "bridge.db"
    migrate(path)
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection=connection), BASELINE)
    engine.dispose()
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert "catalog_station" not in tables and "evse" in tables
    assert migrate(path).startswith("upgraded from 0001_baseline")


def postgres_sql() -> str:
    from alembic import command

    config = alembic_config(url="postgresql://")
    out = io.StringIO()
    config.output_buffer = out
    with redirect_stdout(out):
        command.upgrade(config, "head", sql=True)
    return out.getvalue()


def test_migrations_render_for_postgresql() -> None:
    sql = postgres_sql()
    assert "CREATE TABLE catalog_station" in sql and "DOUBLE PRECISION" in sql
    assert "WITHOUT ROWID" not in sql and "INSERT OR" not in sql


@pytest.mark.skipif(shutil.which("psql") is None, reason="psql not installed")
def test_migrations_run_on_postgresql() -> None:
    """The same revisions build the schema on a real PostgreSQL (the next backend)."""
    base = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"]
    name = f"issue11_migrations_{os.getpid()}"
    probe = subprocess.run([*base, "-d", "test", "-c", "SELECT 1"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    subprocess.run([*base, "-d", "test", "-c", f"CREATE DATABASE {name}"], check=True)
    try:
        done = subprocess.run([*base, "-d", name], input=postgres_sql(), text=True,
                              capture_output=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        tables = subprocess.run(
            [*base, "-d", name, "-At", "-c", "SELECT tablename FROM pg_tables WHERE "
             "schemaname = 'public' ORDER BY 1"], capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert tables == sorted(["alembic_version", "catalog_location", "catalog_network",
                                 "catalog_station", "catalog_template", "charge_point",
                                 "connector", "evse", "evse_data", "lease", "meta",
                                 "network_assignment", "replica"])  # fmt: skip
    finally:
        subprocess.run([*base, "-d", "test", "-c", f"DROP DATABASE IF EXISTS {name}"])


def test_postgresql_is_migrated_online_once_and_can_go_back(postgres: str) -> None:
    """The start's own path on PostgreSQL: upgrade, nothing on a second start, downgrade to
    the baseline and up again (a failed release rolled back)."""
    from alembic import command
    from sqlalchemy import create_engine

    from bridge.store.migrate import migrate_url, revision_of, sqlalchemy_url

    assert migrate_url(postgres, "db") == f"upgraded from empty to {HEAD}"
    assert migrate_url(postgres, "db") == "current"
    engine = create_engine(sqlalchemy_url(postgres))
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection=connection), BASELINE)
    engine.dispose()
    assert revision_of(postgres, "db") == BASELINE
    assert migrate_url(postgres, "db") == f"upgraded from {BASELINE} to {HEAD}"
