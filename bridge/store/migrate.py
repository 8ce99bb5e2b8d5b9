"""Bring the state database to the schema this bridge needs, with versioned migrations.

The revisions live in ``bridge/store/migrations/versions`` (alembic; SQLAlchemy is used for
migrations only, the runtime keeps its own sqlite3 access):

* ``0001_baseline``: the tables the bridge created before migrations existed;
* ``0002_catalog``: the charge-station catalog.

A database made before migrations existed (``meta.schema_version = 1``, no ``alembic_version``
table) is stamped at the baseline and upgraded. A database whose revision this bridge does not
know was migrated by a newer bridge: it is refused, never touched.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from bridge.errors import StoreError

#: The newest revision this bridge knows (a test keeps it equal to the scripts' head).
HEAD = "0002_catalog"
BASELINE = "0001_baseline"
LEGACY_SCHEMA_VERSION = "1"  # meta.schema_version of databases made before migrations

__all__ = ["BASELINE", "HEAD", "alembic_config", "current_revision", "migrate"]


def current_revision(db: sqlite3.Connection) -> str | None:
    """The alembic revision stored in the database (None: no alembic table yet)."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "alembic_version" not in tables:
        return None
    row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


def _legacy_version(db: sqlite3.Connection) -> str | None:
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables:
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else str(row[0])


def alembic_config(**attributes: Any) -> Any:
    """An alembic Config for the bridge's revisions (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes.update(attributes)
    return config


def migrate(path: Path) -> str:
    """Upgrade the database at ``path`` (created if missing) to HEAD; returns what it did.

    Raises StoreError for a database of a newer bridge or of an unknown schema.
    """
    db = sqlite3.connect(path)
    try:
        current = current_revision(db)
        legacy = _legacy_version(db)
    finally:
        db.close()
    if current == HEAD:
        return "current"  # the common start: no alembic import at all
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines are ours to tell
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    known = {rev.revision for rev in script.walk_revisions()}
    if current is not None and current not in known:
        raise StoreError(
            f"state database {path} is at schema revision {current!r}, made by a newer bridge; "
            f"this bridge knows up to {HEAD!r}. Run the newer bridge, or restore a backup made "
            "for this version"
        )
    if current is None and legacy is not None and legacy != LEGACY_SCHEMA_VERSION:
        raise StoreError(
            f"state database {path} has schema version {legacy} without migration history; "
            f"this bridge can only adopt version {LEGACY_SCHEMA_VERSION}"
        )
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    engine = _engine(path)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            if current is None and legacy is not None:
                command.stamp(config, BASELINE)  # made before migrations: it is the baseline
            command.upgrade(config, "head")
    except (CommandError, SQLAlchemyError) as exc:
        raise StoreError(f"cannot migrate state database {path}: {exc}") from exc
    finally:
        engine.dispose()
    if current is None and legacy is not None:
        return f"adopted schema version {legacy} as {BASELINE}, upgraded to {HEAD}"
    return f"upgraded from {current or 'empty'} to {HEAD}"


def _engine(path: Path) -> Any:
    """A SQLAlchemy engine whose transactions really cover DDL on SQLite.

    pysqlite would commit before each CREATE TABLE by itself; with its own transaction handling
    off and an explicit BEGIN, a migration that fails half-way leaves nothing behind.
    """
    from sqlalchemy import create_engine, event

    engine = create_engine(f"sqlite:///{path}")

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine
