"""A logger for the lines of the hot path: one per StatusNotification, one per push.

``HotLogger(name).info(event, **fields)`` writes the same line as
``structlog.get_logger(name).info(event, **fields)``. With the bridge's JSON format it skips the
lazy proxy's lookup, the method wrapper and a second copy of the keywords on every call, which
on a busy push lane were half of the line's CPU (bench/RESULTS.md); with any other set-up it is
structlog's logger. The logger is looked up again after each ``bridge.ops.logging.setup_logging``
(which calls :func:`reconfigured`).
"""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["HotLogger", "reconfigured"]


class _Setups:
    count = 0


def reconfigured() -> None:
    """Logging was set up anew: hot loggers look their logger up again."""
    _Setups.count += 1


class HotLogger:
    """``info`` only; the other levels are rare and go through structlog's logger."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._setup = -1
        self._bound: Any = None
        self._fields: Any = None  # the logger's info(event, fields) taking a dict, if it has one

    def info(self, event: str, **fields: Any) -> None:
        if self._setup != _Setups.count:
            self._bound = structlog.get_logger(self.name).bind()
            self._fields = getattr(self._bound, "info_fields", None)
            self._setup = _Setups.count
        if self._fields is not None:
            self._fields(event, fields)
        else:
            self._bound.info(event, **fields)
