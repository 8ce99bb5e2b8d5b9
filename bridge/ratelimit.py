"""Rate limits.

* :class:`SlidingWindow`: at most ``limit`` events in any ``window`` seconds, exactly.
* :class:`TokenBucket`: ``rate`` events per second on average with a ``burst``; for each charger
  connection's message budget, where short bursts are fine.
* :class:`PacedWindow`: both: never more than ``limit`` in any window, and spread out at the
  average rate (with a small burst) rather than all at the start of a window. For the hub's
  per-minute limits (Hubject's AUP counts calls per minute: PushEvseStatus 2000, PushEvseData
  375), where a burst on top of the rate would be over the limit.
* :class:`LogLimiter`: which of many alike log lines that strangers can cause to write.

The rate limits answer "how long to wait before the next event" and take the event as done at
that time, so waits add up and nothing is skipped.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable


def wait_until(now: float, at: float) -> float:
    """Seconds from ``now`` to ``at`` such that ``now + wait`` is not before ``at``: the caller
    acts at ``now + wait``, and a rounded ``at - now`` can land one unit early, which would put
    one event more into a window than the limit allows."""
    wait = at - now
    while now + wait < at:
        wait = math.nextafter(wait, math.inf)
    return wait


class SlidingWindow:
    """No ``window``-second interval holds more than ``limit`` events.

    Keeps the times of the events of the last window (at most ``limit``): the next event may
    happen once the ``limit``-th last one is a whole window old. A burst up to the limit goes at
    once; nothing more until the window has moved on.
    """

    def __init__(
        self, limit: int, window: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a sliding window needs limit >= 1 and window > 0")
        self.limit, self.window, self.clock = limit, window, clock
        self._times: deque[float] = deque()

    @classmethod
    def per_minute(cls, per_minute: float) -> SlidingWindow:
        return cls(max(1, int(per_minute)), 60.0)

    def free_at(self, now: float | None = None) -> float:
        """The earliest time the next event may happen (``now`` or later)."""
        now = self.clock() if now is None else now
        times = self._times
        while times and times[0] + self.window <= now:  # out of every window from now on
            times.popleft()
        if len(times) < self.limit:
            return now
        return max(now, times[-self.limit] + self.window)

    def take(self) -> float:
        """Record one event at the earliest allowed time; returns the seconds until then."""
        now = self.clock()
        wait = wait_until(now, self.free_at(now))
        self.record(now + wait)
        return wait

    def record(self, at: float) -> None:
        """One event at ``at`` (no earlier than :meth:`free_at` said, nor than the last one)."""
        self._times.append(at)

    async def acquire(self) -> float:
        """Take one event, sleeping until it is allowed; returns the time waited."""
        wait = self.take()
        if wait > 0:
            await asyncio.sleep(wait)
        return wait


class TokenBucket:
    """``rate`` events per second on average, ``burst`` at once.

    Taking a token may run into debt: the answer is how long to wait before the event, so
    waits add up and nothing is skipped.
    """

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens = float(burst)
        self._stamp = clock()

    @classmethod
    def per_minute(cls, per_minute: float, *, burst: float | None = None) -> TokenBucket:
        """``per_minute`` events a minute; the burst defaults to one second's worth."""
        rate = per_minute / 60.0
        return cls(rate, burst if burst is not None else max(1.0, rate))

    def take(self) -> float:
        """Spend one token; returns the seconds to wait before the event (0: now)."""
        now = self.clock()
        self.record(now)
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def free_at(self, now: float | None = None) -> float:
        """The earliest time a token is there without debt (``now`` or later)."""
        now = self.clock() if now is None else now
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        return now if tokens >= 1 else now + (1 - tokens) / self.rate

    def record(self, at: float) -> None:
        """Spend one token at ``at`` (not before the last event)."""
        self._tokens = min(self.burst, self._tokens + (at - self._stamp) * self.rate) - 1
        self._stamp = at

    async def acquire(self) -> float:
        """Take one token, sleeping as long as needed; returns the time waited."""
        wait = self.take()
        if wait > 0:
            await asyncio.sleep(wait)
        return wait


class PacedWindow:
    """At most ``limit`` events in any ``window`` seconds (exact, a :class:`SlidingWindow`),
    spread out at ``limit / window`` per second with a burst of ``burst`` (a
    :class:`TokenBucket`; default: one second's worth)."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        rate = limit / window
        self.clock = clock
        self.window = SlidingWindow(limit, window, clock=clock)
        self.pace = TokenBucket(rate, burst if burst is not None else max(1.0, rate), clock=clock)
        self.pace._stamp = float("-inf")  # full from the start, whatever the clock says

    @classmethod
    def per_minute(cls, per_minute: float) -> PacedWindow:
        return cls(max(1, int(per_minute)), 60.0)

    def free_at(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        return max(self.window.free_at(now), self.pace.free_at(now))

    def take(self) -> float:
        """Record one event at the earliest time both allow; returns the seconds until then."""
        now = self.clock()
        wait = wait_until(now, self.free_at(now))
        self.window.record(now + wait)
        self.pace.record(now + wait)
        return wait

    async def acquire(self) -> float:
        wait = self.take()
        if wait > 0:
            await asyncio.sleep(wait)
        return wait


class LogLimiter:
    """Which of many alike log lines to write: one per key (e.g. an address) and ``interval``,
    and at most ``budget`` lines per interval in all.

    A line that is written carries how many of its key were left out since its previous one
    (``admit`` returns that number; None: leave this one out). Memory is bounded: at most
    ``max_keys`` keys are remembered, the oldest forgotten first.
    """

    def __init__(
        self,
        interval: float,
        budget: int,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval, self.budget, self.max_keys, self.clock = interval, budget, max_keys, clock
        self._keys: dict[str, list[float]] = {}  # key → [logged_at, left out since]
        self._window_start = -float("inf")
        self._lines = 0
        #: Lines left out because the overall budget was spent (reported by the next line).
        self.over_budget = 0

    def admit(self, key: str) -> int | None:
        now = self.clock()
        if now - self._window_start >= self.interval:
            self._window_start, self._lines = now, 0
        entry = self._keys.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return None
        if self._lines >= self.budget:
            self.over_budget += 1
            return None
        self._lines += 1
        left_out = int(entry[1]) if entry is not None else 0
        self._keys.pop(key, None)
        self._keys[key] = [now, 0]
        while len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]
        return left_out

    def take_over_budget(self) -> int:
        """Lines left out for the overall budget since the last call (then 0)."""
        count, self.over_budget = self.over_budget, 0
        return count
