"""Rate limits: one token bucket for hub pushes (Hubject's per-minute limit) and each charger
connection's message budget; one limiter for log lines that strangers can cause."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


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
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate) - 1
        self._stamp = now
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def acquire(self) -> float:
        """Take one token, sleeping as long as needed; returns the time waited."""
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
