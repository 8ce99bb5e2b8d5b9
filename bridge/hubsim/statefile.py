"""The hub simulator's state in a file, so that it survives a restart as the bridge's does.

The bridge remembers which EVSEs the hub holds and what it acknowledged; a simulator that starts
empty answers the bridge's next ``update`` per EVSE with 022. With a state file the simulator
loads the status and data records it held (and its EVSE networks) and writes them back shortly
after every change (atomically: a new file renamed over the old one) and when it stops.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.errors import ConfigError

__all__ = ["Records", "StateFile"]

#: operator → EvseID → EvseStatus (status) or EvseDataRecord (data)
Records = dict[str, dict[str, Any]]
_VERSION = 1


class StateFile:
    """Where one simulator keeps its records; ``setting`` names it in error messages."""

    def __init__(self, path: Path, *, setting: str = "hub_sim.state_file") -> None:
        self.path = Path(path)
        self.setting = setting
        self._written: str | None = None
        #: EVSE networks as loaded (bridge.hubsim.networks; absent in older files: none).
        self.networks: Records = {}

    def load(self) -> tuple[Records, Records]:
        """(status, data) records from the file; empty if it does not exist yet."""
        if not self.path.exists():
            return {}, {}
        try:
            content = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(content, dict) or content.get("version") != _VERSION:
                raise ValueError(f"not a version {_VERSION} hub simulator state file")
            status, data = content["status"], content["data"]
            networks = content.get("networks", {})
            for records in (status, data, networks):
                if not isinstance(records, dict) or not all(
                    isinstance(per_op, dict) for per_op in records.values()
                ):
                    raise ValueError("'status' and 'data' must map operators to records")
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                self.setting,
                f"cannot read {self.path}: {exc}; delete the file to start the simulator empty",
            ) from None
        self.networks = networks
        self._written = self._dump(status, data, networks)
        return status, data

    def save(self, status: Records, data: Records, networks: Records | None = None) -> bool:
        """Write the records if they changed since the last load or save; True if written."""
        text = self._dump(status, data, networks)
        if text == self._written:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".new")
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, self.path)
        self._written = text
        return True

    async def keep(
        self, records: Callable[[], tuple[Records, Records, Records]], interval: float = 0.2
    ) -> None:
        """Save ``records()`` every ``interval`` seconds when they changed, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.save(*records())

    @staticmethod
    def _dump(status: Records, data: Records, networks: Records | None = None) -> str:
        content = {"version": _VERSION, "status": status, "data": data}
        if networks:  # only when there are some: files without networks stay as they were
            content["networks"] = networks
        return json.dumps(content, sort_keys=True)
