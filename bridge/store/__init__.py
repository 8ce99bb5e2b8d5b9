"""Durable state: one interface (``bridge.store.base.StagedStore``), two backends.

* SQLite (``bridge.store.sqlite``): one file, one bridge process; the default.
* PostgreSQL (``bridge.store.postgres``): one database shared by several replicas, with the
  push lease, the replicas' heartbeats and the change feed of ``bridge.store.pgcluster``.

Both run the same versioned migrations (``bridge.store.migrate``) when opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge.config import StateSettings
    from bridge.store.base import StagedStore


def make_store(state: StateSettings, *, replica_id: str) -> StagedStore:
    """The backend ``state`` asks for (not opened yet)."""
    store: StagedStore
    if state.postgres and state.url is not None:
        from bridge.store.postgres import PostgresStore

        store = PostgresStore(state.url, replica_id=replica_id, where=state.where,
                              group_commit_ms=state.group_commit_ms)  # fmt: skip
    else:
        from bridge.store.sqlite import SqliteStore

        store = SqliteStore(
            state.database, group_commit_ms=state.group_commit_ms, synchronous=state.synchronous
        )
    store.group_commit_rows = state.group_commit_rows
    return store
