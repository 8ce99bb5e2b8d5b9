"""How long a charger's connection may stay silent, without a timer per message."""

from __future__ import annotations

import asyncio

__all__ = ["IdleWatch"]


class IdleWatch:
    """The idle limit of one connection's ``recv``, with one timer per limit, not per message.

    ``asyncio.timeout`` around every ``recv`` arms and cancels a timer per message (a visible
    share of a StatusNotification's CPU). Here the timer fires at most once per ``limit``: when
    the serving task has been waiting in ``recv`` since ``waiting_since`` for ``limit`` it is
    cancelled (as asyncio.timeout does; :meth:`expired` tells that cancellation from any
    other), otherwise the timer is set again for when that could be the case. Time spent
    handling a message (``waiting_since`` None) never counts as silence.
    """

    def __init__(self, limit: float) -> None:
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._limit = limit
        self._fired = False
        self.waiting_since: float | None = None
        self._handle = self.loop.call_at(self.loop.time() + limit, self._check)

    def _check(self) -> None:
        now = self.loop.time()
        since = self.waiting_since
        if since is not None and now - since >= self._limit:
            self._fired = True
            self._task.cancel()
            return
        self._handle = self.loop.call_at((now if since is None else since) + self._limit,
                                         self._check)  # fmt: skip

    def expired(self) -> bool:
        """Whether the CancelledError just caught is this watch's (and no other's)."""
        return self._fired and self._task.uncancel() <= self._cancelling

    def stop(self) -> None:
        self._handle.cancel()
