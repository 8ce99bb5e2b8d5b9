"""Bring the state database to the schema this bridge needs, with versioned migrations.

The revisions live in ``bridge/store/migrations/versions`` (alembic; SQLAlchemy is used for
migrations only, the runtime keeps its own sqlite3 access):

* ``0001_baseline``: the tables the bridge created before migrations existed;
* ``0002_catalog``: the charge-station catalog;
* ``0004_replicas``: the push lease, the replicas and the change feed (PostgreSQL replicas).
* ``0005_networks``: EVSE networks and groups, and what the hub acknowledged of them.
* ``0006_evse_data``: EVSE data at the hub (eRoamingPushEvseData), one row per EVSE.

Both backends run the same revisions: SQLite through :func:`migrate` (a file path), PostgreSQL
through :func:`migrate_url` (SQLAlchemy's ``postgresql+psycopg`` dialect, the runtime's
driver). On PostgreSQL the upgrade holds an advisory lock, so replicas starting together
migrate once.

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
HEAD = "0006_evse_data"
BASELINE = "0001_baseline"
LEGACY_SCHEMA_VERSION = "1"  # meta.schema_version of databases made before migrations

__all__ = [
    "BASELINE",
    "HEAD",
    "alembic_config",
    "current_revision",
    "migrate",
    "migrate_url",
    "revision_of",
]


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


#: Key of the advisory lock held while a PostgreSQL database is migrated.
MIGRATION_LOCK = 0x0B81D6E0


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL of a state URL (PostgreSQL through psycopg 3)."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    raise StoreError(f"not a PostgreSQL URL: {url}")


def libpq_url(url: str) -> str:
    """The URL psycopg connects to (without SQLAlchemy's driver suffix)."""
    return "postgresql://" + sqlalchemy_url(url).removeprefix("postgresql+psycopg://")


def _known() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def revision_of(url: str, where: str) -> str | None:
    """The revision of the PostgreSQL database at ``url`` (None: not migrated yet)."""
    import psycopg

    try:
        with psycopg.connect(libpq_url(url), connect_timeout=10) as db:
            exists = db.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                return None
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except psycopg.Error as exc:
        raise StoreError(f"cannot read state database {where}: {_first_line(exc)}") from exc
    return None if row is None else str(row[0])


def migrate_url(url: str, where: str) -> str:
    """Upgrade the PostgreSQL database at ``url`` to HEAD; returns what it did.

    Refuses (StoreError) a database of a newer bridge. ``where`` names it in messages.
    """
    current = revision_of(url, where)
    if current == HEAD:
        return "current"
    _refuse_newer(current, where)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from alembic import command
    from alembic.util import CommandError
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as connection:
            # Replicas starting together: one migrates, the others wait and find it done.
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
            config = alembic_config(connection=connection)
            found = connection.execute(
                text("SELECT version_num FROM alembic_version")
            ).scalar() if _has_version_table(connection) else None  # fmt: skip
            _refuse_newer(found, where)
            command.upgrade(config, "head")
    except (CommandError, SQLAlchemyError) as exc:
        raise StoreError(f"cannot migrate state database {where}: {_first_line(exc)}") from exc
    finally:
        engine.dispose()
    return f"upgraded from {current or 'empty'} to {HEAD}"


def _has_version_table(connection: Any) -> bool:
    from sqlalchemy import text

    return bool(connection.execute(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
                .scalar())  # fmt: skip


def _refuse_newer(current: str | None, where: str) -> None:
    if current is not None and current != HEAD and current not in _known():
        raise StoreError(
            f"state database {where} is at schema revision {current!r}, made by a newer "
            f"bridge; this bridge knows up to {HEAD!r}. Run the newer bridge, or restore a "
            "backup made for this version"
        )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
