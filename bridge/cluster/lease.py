"""The push lease: exactly one replica sends to the hub, and a deposed one stops in time.

Why a lease row with an epoch, not an advisory lock: a session lock is released when the
database ends the leader's session, but nothing bounds what the old process, which may not have
noticed, still sends. The lease bounds it by time, on both sides:

* The leader counts its lease from the moment it *sent* a renewal (its own monotonic clock):
  the database set the expiry later than that, so the leader's view never outlasts the
  database's. It sends a hub request only while that lease outlives the request's timeout, so
  every request it sends has ended (answered or abandoned) before the lease expires.
* Another replica takes the lease only once it expired by the database's clock, with a new
  epoch. If the old leader had a request in flight (the lease row names it), its outcome is
  unknown: the new leader waits the settle time before its first request and pushes that EVSE
  again, the same rule as after any ambiguous outcome.
* Every write of the hub-side state is fenced by the epoch (``bridge.store.postgres``): a
  deposed leader's late writes are refused and it steps down.

A leader cut off from the database cannot renew: it stops sending once its lease (by its own
clock) no longer outlives a request, which is before the lease expires for the others. Clocks
only need to run at the same rate (``DRIFT`` allows for a little difference).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

import structlog

from bridge.errors import StoreError
from bridge.store.pgcluster import Cluster, Grant

log = structlog.get_logger("bridge.cluster")

#: Share of a lease by which two clocks may drift apart during it (generous for NTP).
DRIFT = 0.01


class Role(StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"


class Lease:
    """This replica's side of the push lease: takes it, renews it, gives it up."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        ttl: float,
        acquire_interval: float,
        on_elected: Callable[[Grant], Awaitable[None]],
        on_lost: Callable[[str], None],
        on_change: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.ttl = ttl
        self.acquire_interval = acquire_interval
        self.renew_interval = ttl / 4
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.on_change = on_change  # the lease was taken, renewed or lost: the lane decides again
        self.monotonic = monotonic
        self.role = Role.FOLLOWER
        self.epoch: int | None = None
        self.failovers = 0  # times this replica took the lease from another holder
        self.elections = 0
        self._valid_until = -math.inf  # monotonic, by our clock
        self._reserved_until = -math.inf  # a long request (a fullLoad) runs until then
        self._changed = asyncio.Event()
        self._stop = False

    # -- the gate of the lane ----------------------------------------------------------------
    def lease_until(self) -> float:
        return self._valid_until if self.role is Role.LEADER else -math.inf

    async def reserve(self, seconds: float) -> bool:
        """Make the lease outlive a request of ``seconds`` (a fullLoad's long timeout): renew
        with a longer term now if needed. False: not the leader, or the database said no."""
        if self.role is not Role.LEADER:
            return False
        now = self.monotonic()
        self._reserved_until = max(self._reserved_until, now + seconds)
        if self._valid_until - now > seconds:
            return True
        return await self._renew(self.ttl)

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    # -- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        while not self._stop:
            if self.role is Role.LEADER:
                await self._lead_once()
            else:
                await self._try_acquire()
                await self._sleep(self.acquire_interval)

    async def _lead_once(self) -> None:
        left = self._valid_until - self.monotonic()
        if left <= 0:
            self.step_down("lease expired by this replica's clock: the database did not answer")
            return
        await self._sleep(min(self.renew_interval, left))
        if self.role is Role.LEADER and not self._stop:
            await self._renew(self.ttl)

    async def _sleep(self, seconds: float) -> None:
        self._changed.clear()
        try:
            async with asyncio.timeout(seconds):
                await self._changed.wait()
        except TimeoutError:
            pass

    async def _try_acquire(self) -> None:
        sent = self.monotonic()
        try:
            grant = await self.cluster.acquire(self.ttl)
        except StoreError as exc:
            log.warning("leader.acquire_failed", error=str(exc))
            return
        if grant is None or self._stop:
            return
        self.epoch = grant.epoch
        self._valid_until = sent + self.ttl * (1 - DRIFT)
        self.elections += 1
        if grant.previous is not None:
            self.failovers += 1
        log.warning("leader.elected", epoch=grant.epoch, previous=grant.previous,
                    in_flight=grant.in_flight, monotonic=round(self.monotonic(), 4),
                    lease_s=self.ttl)  # fmt: skip
        try:
            await self.on_elected(grant)
        except Exception:
            log.exception("leader.start_failed")
            await self._give_up()
            return
        self.role = Role.LEADER
        self.on_change()

    async def _renew(self, ttl: float) -> bool:
        epoch = self.epoch
        if epoch is None:
            return False
        sent = self.monotonic()
        # Never shorter than the request in flight needs (a regular renewal during a fullLoad
        # must not cut the lease that covers it).
        ttl = max(ttl, (self._reserved_until - sent) / (1 - DRIFT) + self.ttl / 2)
        try:
            # A database that does not answer must not hold the step-down back.
            async with asyncio.timeout(max(0.05, self._valid_until - sent)):
                ours = await self.cluster.renew(epoch, ttl)
        except TimeoutError:
            self.step_down("lease expired by this replica's clock: the database did not answer")
            return False
        except StoreError as exc:
            log.warning("leader.renew_failed", error=str(exc), epoch=epoch,
                        lease_left_s=round(self._valid_until - self.monotonic(), 3))  # fmt: skip
            return False
        if not ours:
            self.step_down("the lease was taken by another replica")
            return False
        if self.epoch == epoch:
            # The database's expiry is now this renewal's (even if shorter than before): the
            # view by our clock follows it, counted from when the renewal was sent.
            self._valid_until = sent + ttl * (1 - DRIFT)
            self.on_change()
        return True

    def step_down(self, reason: str) -> None:
        """Stop leading at once (the lane closes before anything else happens)."""
        if self.role is not Role.LEADER and self.epoch is None:
            return
        epoch = self.epoch
        self.role, self.epoch, self._valid_until = Role.FOLLOWER, None, -math.inf
        log.warning("leader.lost", epoch=epoch, reason=reason,
                    monotonic=round(self.monotonic(), 4))  # fmt: skip
        self.on_lost(reason)
        self._changed.set()

    async def _give_up(self) -> None:
        epoch = self.epoch
        self.step_down("stopping")
        if epoch is not None:
            try:
                await self.cluster.release(epoch)
            except StoreError as exc:
                log.warning("leader.release_failed", error=str(exc))

    async def stop(self) -> None:
        """Give the lease up (the lane has stopped): another replica takes it at once."""
        self._stop = True
        self._changed.set()
        if self.epoch is not None:
            await self._give_up()
