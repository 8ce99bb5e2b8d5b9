"""Files of one bridge process beside its state database: the lock that keeps a second
process off the same SQLite file, and the address of the management API for the CLI."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from bridge.errors import DatabaseLockedError


class DatabaseLock:
    """One bridge per state database: two would push in parallel, which OICP forbids."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".lock")
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DatabaseLockedError(
                f"another bridge process is using {self.path.with_suffix('')}; "
                "two bridges on one database would push in parallel: stop the other one first"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now (a bridge runs on this database)."""
        if not self.path.exists() or self._file is not None:
            return False
        with self.path.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
        return False

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def api_url_file(database: Path) -> Path:
    """Where the running bridge writes its management API's URL (read by CLI commands)."""
    return database.with_name(database.name + ".api")
