"""Failed logins per network address (IPv6: per /64), counted before any credential is read.

The defence against password guessing: every guess costs a scrypt check, and an address
without a budget could keep the bridge checking without end. An address that has used up its
budget is refused with HTTP 429 before anything is checked, and a check takes its token before
it starts, so logins sent all at once cannot run more checks than the budget (docs/security.md,
"Throttling"). The handshake logs what is decided here (``ocpp.auth_throttled``,
``ocpp.auth_failed``); this module only counts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.ocpp.failure import Failure

_WAKE_BATCH = 64  # logins waiting for an address's checks that are woken per event-loop turn


def network_key(address: str) -> str:
    """The unit of per-address limits: the IP address; IPv6 per /64 (what one subscriber holds)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    pending: int = 0  # password checks reserved and not yet settled
    announced: bool = False  # ocpp.auth_throttled logged for this exhaustion
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


class FailureThrottle:
    """Failed logins per address: a token bucket of ``limit`` failures refilled over ``window``.

    While an address has no token left every attempt from it is refused (HTTP 429) before any
    credential is looked at, and the refusal is counted too: the bucket goes into debt (down to
    ``-limit``), so an address that keeps trying stays refused. A password check takes its token
    *before* it starts (``reserve``) and gives it back only when the password was right, so
    logins sent all at once cannot run more checks than the budget: those beyond it wait for
    the address's checks in progress and are refused if those fail. IPv6 addresses count per
    /64, which one subscriber usually holds.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = 100_000,
    ) -> None:
        self.limit = float(limit)
        self.rate = limit / window
        self.clock = clock
        self.max_tracked = max_tracked
        self._buckets: dict[str, _Bucket] = {}

    key = staticmethod(network_key)

    def _bucket(self, key: str, now: float) -> _Bucket:
        """The refilled bucket of ``key`` (new buckets are not stored until they change)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return _Bucket(self.limit, now)
        bucket.tokens = min(self.limit, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.announced = False
        return bucket

    def _store(self, key: str, bucket: _Bucket) -> None:
        self._buckets.pop(key, None)  # re-insert: dict order = least recently failed first
        self._buckets[key] = bucket
        if len(self._buckets) > self.max_tracked:
            self._prune(bucket.stamp)

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now).

        0 too while checks of the address are in progress: their outcome decides (``reserve``
        waits for it), a budget they hold is not used up.
        """
        key = self.key(address)
        if key not in self._buckets:
            return 0.0
        bucket = self._bucket(key, self.clock())
        if bucket.tokens >= 1 or bucket.pending > 0:
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def failed(self, address: str) -> bool:
        """Count one failure or refusal; True if the address's budget is now used up and that
        was not announced yet (log ``ocpp.auth_throttled`` once)."""
        key = self.key(address)
        bucket = self._bucket(key, self.clock())
        bucket.tokens = max(-self.limit, bucket.tokens - 1)
        self._store(key, bucket)
        return self._announce(bucket)

    def _announce(self, bucket: _Bucket) -> bool:
        if bucket.tokens >= 1 or bucket.announced:
            return False
        bucket.announced = True
        return True

    async def reserve(self, address: str, timeout: float) -> Failure | None:
        """Take a token for a password check about to start (None), or say why not.

        ``Failure.THROTTLED``: the budget is used up (answer 429; the refusal is counted).
        ``Failure.BUSY``: this address's checks in progress kept the budget for ``timeout``
        seconds (answer 503; not counted, nothing was checked). Settle with ``settle``.
        """
        key = self.key(address)
        deadline = self.clock() + timeout
        while True:
            bucket = self._bucket(key, self.clock())
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                bucket.pending += 1
                self._store(key, bucket)
                return None
            if bucket.pending == 0:
                self.failed(address)
                return Failure.THROTTLED
            # Checks of this address are running: their outcome decides whether this one may.
            waiter = asyncio.get_running_loop().create_future()
            bucket.waiters.append(waiter)
            try:
                async with asyncio.timeout(max(0.0, deadline - self.clock())):
                    await waiter
            except TimeoutError:
                return Failure.BUSY
            finally:
                if waiter in bucket.waiters:
                    bucket.waiters.remove(waiter)

    def settle(self, address: str, *, ok: bool) -> bool:
        """End a reservation: a right password gets its token back; else it stays spent.

        True, like ``failed``, when the budget is used up and was not announced yet.
        """
        key = self.key(address)
        bucket = self._bucket(key, self.clock())
        bucket.pending = max(0, bucket.pending - 1)
        if ok:
            bucket.tokens = min(self.limit, bucket.tokens + 1)
        self._wake(key, bucket)
        self._store(key, bucket)
        return not ok and self._announce(bucket)

    def _wake(self, key: str, bucket: _Bucket) -> None:
        """Wake the waiters that can now decide: one per token given back (first come, first
        served; thousands of chargers behind one NAT may wait), or all of them when nothing is
        in progress any more (they are refused). Many are woken ``_WAKE_BATCH`` per event-loop
        turn: each answer takes a fraction of a millisecond, and thousands at once would stall
        every other connection for about a second."""
        waiters = bucket.waiters
        due = len(waiters) if bucket.pending == 0 else max(0, math.floor(bucket.tokens))
        for _ in range(min(due, _WAKE_BATCH, len(waiters))):
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if waiters and due > _WAKE_BATCH:
            asyncio.get_running_loop().call_soon(self._wake_later, key)

    def _wake_later(self, key: str) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._wake(key, self._bucket(key, self.clock()))

    def _prune(self, now: float) -> None:
        def idle(bucket: _Bucket) -> bool:
            return bucket.pending == 0 and not bucket.waiters

        for key in [k for k, b in self._buckets.items() if idle(b)]:
            if self._bucket(key, now).tokens >= self.limit:
                del self._buckets[key]
        for key in [k for k, b in self._buckets.items() if idle(b)]:
            if len(self._buckets) <= self.max_tracked:
                break
            del self._buckets[key]
