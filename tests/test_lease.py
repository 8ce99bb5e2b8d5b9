"""The push lease's rules, with a scripted database and clock (unit tests of one module)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bridge.cluster.lease import DRIFT, Lease, Role
from bridge.errors import StoreError
from bridge.store.pgcluster import Grant


class Database:
    """Answers lease requests as scripted; remembers the terms asked for."""

    def __init__(self) -> None:
        self.terms: list[float] = []
        self.fail = False
        self.taken = False

    async def acquire(self, ttl: float) -> Grant | None:
        self.terms.append(ttl)
        return Grant(7, "DE*ABC*E1*1", "old")

    async def renew(self, epoch: int, ttl: float) -> bool:
        if self.fail:
            raise StoreError("database gone")
        self.terms.append(ttl)
        return not self.taken

    async def release(self, epoch: int) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def leading(db: Database, clock: Clock, lost: list[str], ttl: float = 6) -> Lease:
    elected: list[Grant] = []

    async def on_elected(grant: Grant) -> None:
        elected.append(grant)

    lease = Lease(db, ttl=ttl, acquire_interval=0.5, on_elected=on_elected,  # type: ignore[arg-type]
                  on_lost=lost.append, monotonic=clock)  # fmt: skip
    await lease._try_acquire()
    assert lease.role is Role.LEADER and elected[0].in_flight == "DE*ABC*E1*1"
    return lease


async def test_the_lease_is_counted_from_when_the_renewal_was_sent() -> None:
    db, clock, lost = Database(), Clock(), []
    lease = await leading(db, clock, lost)
    assert lease.lease_until() == pytest.approx(100 + 6 * (1 - DRIFT))
    clock.now = 104.0
    assert await lease._renew(6)
    assert lease.lease_until() == pytest.approx(104 + 6 * (1 - DRIFT))


@pytest.mark.parametrize("ttl", [1.0, 2.0, 6.0])
async def test_a_long_request_extends_the_lease_and_a_later_renewal_cannot_cut_it(
    ttl: float,
) -> None:
    db, clock, lost = Database(), Clock(), []
    lease = await leading(db, clock, lost, ttl)
    assert await lease.reserve(120)  # a fullLoad with a 120 s timeout
    assert lease.lease_until() - clock.now > 120
    clock.now += 1
    assert await lease._renew(ttl)  # the regular renewal during the fullLoad
    assert db.terms[-1] >= 119 and lease.lease_until() - clock.now > 119
    clock.now += 125  # the fullLoad is long over: renewals are short again...
    assert await lease._renew(ttl)
    # ...and so is this replica's view of the lease (never longer than the database's).
    assert lease.lease_until() == pytest.approx(clock.now + ttl * (1 - DRIFT))


async def test_a_leader_whose_renewals_fail_stops_before_its_lease_expires() -> None:
    db, clock, lost = Database(), Clock(), []
    lease = await leading(db, clock, lost)
    db.fail = True
    clock.now += 2
    assert not await lease._renew(6)
    assert lease.is_leader  # still within its lease: it may finish what fits
    clock.now = lease.lease_until() + 0.01
    await lease._lead_once()
    assert not lease.is_leader and lease.lease_until() == -math.inf
    assert lost and "did not answer" in lost[0]


async def test_a_lease_taken_by_another_is_given_up_at_once() -> None:
    db, clock, lost = Database(), Clock(), []
    lease = await leading(db, clock, lost)
    db.taken = True
    assert not await lease._renew(6)
    assert not lease.is_leader and lease.epoch is None
    assert lost == ["the lease was taken by another replica"]


def test_the_lane_waits_unless_the_lease_outlives_the_request() -> None:
    from bridge.delivery.lane import FullLoadRequests, Wait, next_step

    class Outbox:
        def head(self, now: float) -> Any:
            return None

        def next_due(self) -> None:
            return None

    class Limiter:
        def free_at(self, now: float | None = None) -> float:
            return 0.0

        def take(self) -> float:
            return 0.0

    full = FullLoadRequests()
    args: dict[str, Any] = {"hold_until": 0.0, "full_load": full, "outbox": Outbox(),
                            "limiter": Limiter(), "now": 10.0, "request_timeout": 2.0}  # fmt: skip
    assert next_step(**args, lease_until=-math.inf) == Wait(None)  # a follower
    assert next_step(**args, lease_until=11.9) == Wait(None)  # would outlast the lease
    assert next_step(**args, lease_until=12.5) == Wait(None)  # nothing to send: waits anyway
    args["hold_until"] = 20.0
    assert next_step(**args, lease_until=math.inf) == Wait(20.0)  # the one process: its hold
