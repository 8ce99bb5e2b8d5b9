"""One token bucket for every rate limit: hub pushes (Hubject's per-minute limit) and each
charger connection's message budget."""

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
