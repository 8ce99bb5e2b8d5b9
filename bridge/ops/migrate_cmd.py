"""``oicp-bridge migrate``: bring the state database to this bridge's schema, or only check.

The bridge migrates at start by itself; the command is for deployments that migrate in a
separate step (a Kubernetes job before a rolling update, a check in CI). Exit status with
``--check``: 0 current, 1 behind (it would be migrated) or newer than this bridge (refused).
"""

from __future__ import annotations

import sqlite3
import sys
from typing import TextIO

from bridge import COMMAND
from bridge.config import Settings
from bridge.errors import EXIT_FAILED, EXIT_OK, StoreError
from bridge.store.migrate import HEAD, _known, current_revision, migrate, migrate_url, revision_of


def revision(settings: Settings) -> str | None:
    """The schema revision of the configured database (None: empty or not there)."""
    state = settings.state
    if state.postgres and state.url is not None:
        return revision_of(state.url, state.where)
    if not state.database.is_file():
        return None
    try:
        db = sqlite3.connect(f"file:{state.database}?mode=ro", uri=True)
        try:
            return current_revision(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read state database {state.database}: {exc}") from exc


def run(settings: Settings, *, check: bool, out: TextIO = sys.stdout) -> int:
    where = settings.state.where
    current = revision(settings)
    if check:
        if current == HEAD:
            print(f"{where}: current (schema revision {HEAD})", file=out)
            return EXIT_OK
        if current is not None and current not in _known():
            print(f"{where}: schema revision {current!r} is newer than this bridge "
                  f"({HEAD!r}): it would refuse to start", file=out)  # fmt: skip
            return EXIT_FAILED
        print(f"{where}: at {current or 'nothing (empty)'}, this bridge needs {HEAD}: "
              f"`{COMMAND} migrate` (or a start) upgrades it", file=out)  # fmt: skip
        return EXIT_FAILED
    state = settings.state
    if state.postgres and state.url is not None:
        done = migrate_url(state.url, where)
    else:
        state.database.parent.mkdir(parents=True, exist_ok=True)
        done = migrate(state.database)
    print(f"{where}: {done}", file=out)
    return EXIT_OK
