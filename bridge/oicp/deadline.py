"""Time limits of awaits that share one event-loop timer.

``asyncio.timeout()`` arms a timer on entry and disarms it on exit; on uvloop that is a libuv
timer start and stop, a few microseconds, paid by every status push although a push almost
never times out. Here a limit is an entry in a dict; one timer is armed for the earliest
limit and only re-armed when it fires or when a limit earlier than it is added (the pushes all
use the same timeout, so each new limit lies after the armed one).

The outcome is the one of ``asyncio.timeout()``: when the limit passes, the task is
cancelled and the await raises TimeoutError; a cancellation from elsewhere stays a
cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

__all__ = ["Deadlines", "Limit"]

#: A limit due within this much of the timer's firing counts as passed (the loop's timers
#: fire up to its clock resolution early).
_EARLY = 0.001


class Limit:
    """One await's time limit (:meth:`Deadlines.start`)."""

    __slots__ = ("cancelling", "expired", "task", "when")

    def __init__(self, task: asyncio.Task[object], when: float) -> None:
        self.task = task
        self.when = when
        self.cancelling = task.cancelling()
        self.expired = False


class Deadlines:
    """Limits of the awaits of one event loop, on one timer."""

    def __init__(self) -> None:
        self._limits: set[Limit] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def start(self, seconds: float) -> Limit:
        """Limit the current task's await to ``seconds`` from now; pair with :meth:`stop`."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop (tests): forget the old one's
            if self._timer is not None:
                with contextlib.suppress(RuntimeError):  # that loop may be closed
                    self._timer.cancel()
            self._loop, self._limits, self._timer, self._timer_at = loop, set(), None, math.inf
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a time limit needs a task")
        limit = Limit(task, loop.time() + seconds)
        self._limits.add(limit)
        if limit.when < self._timer_at:
            self._arm(loop, limit.when)
        return limit

    def stop(self, limit: Limit) -> None:
        """The await is over (call in ``finally``); the timer stays armed for the others, or
        fires and finds none."""
        self._limits.discard(limit)
        if limit.expired:  # it passed, but the await ended without that cancellation
            limit.expired = False
            limit.task.uncancel()

    def timed_out(self, limit: Limit) -> bool:
        """In ``except CancelledError``: whether this is the limit's own cancellation (then
        raise TimeoutError) rather than one from elsewhere (then re-raise), as
        ``asyncio.timeout()`` decides it."""
        if not limit.expired:
            return False
        limit.expired = False
        return limit.task.uncancel() <= limit.cancelling

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._timer_at = when

    def _fire(self) -> None:
        self._timer, self._timer_at = None, math.inf
        loop = self._loop
        if loop is None:
            return
        now = loop.time() + _EARLY
        earliest = math.inf
        for limit in list(self._limits):
            if limit.when <= now:
                self._limits.discard(limit)
                limit.expired = True
                limit.task.cancel()
            elif limit.when < earliest:
                earliest = limit.when
        if earliest < math.inf:
            self._arm(loop, earliest)
