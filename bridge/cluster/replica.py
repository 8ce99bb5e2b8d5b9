"""One replica among several on a PostgreSQL database: follower or push leader.

Every replica takes chargers, stores their reports and answers them; only the push leader
(``bridge.cluster.lease``) sends to the hub, runs the daily fullLoad and decides when a
charger is offline. Every replica follows what the others write (the change feed of
``bridge.store.pgcluster``): connector statuses and presence go into its status engine, so the
leader knows every EVSE's status at once and a follower that takes over is already current;
catalog changes are put into force everywhere.

Why the leader derives the EVSE rows itself, instead of each replica writing the EVSE status
its own charger changed: an EVSE's status depends on every connector, the catalog and the
offline rule; one writer of the ``evse`` rows means no lost update between replicas, and the
leader needs the engine's view anyway for the fullLoad.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Protocol

import structlog

from bridge.cluster.lease import Lease, Role
from bridge.delivery.data_push import DATA_FULL_LOAD
from bridge.delivery.ingest import Ingest
from bridge.delivery.lane_steps import FULL_LOAD
from bridge.delivery.outbox import Outbox
from bridge.delivery.worker import PushWorker
from bridge.errors import HubError, StoreError
from bridge.status.engine import StatusEngine
from bridge.store.base import EvseDataRow
from bridge.store.pgcluster import Changes, Cluster, Grant
from bridge.store.postgres import PostgresStore

log = structlog.get_logger("bridge.cluster")


class Catalog(Protocol):
    def apply_remote(self, rows: Any) -> int: ...


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ReplicaNode:
    def __init__(
        self,
        store: PostgresStore,
        *,
        ttl: float,
        acquire_interval: float,
        replica_timeout: float,
        settle: float,
        engine: StatusEngine,
        outbox: Outbox,
        ingest: Ingest,
        live: Catalog,
        worker: Callable[[], PushWorker | None],
        ops_url: Callable[[], str | None],
        close: Callable[[str, str], None] = lambda cp, replica: None,
    ) -> None:
        self.store = store
        self.replica_id = store.replica_id
        self.cluster = Cluster(store.url, replica_id=store.replica_id, where=store.where)
        self.lease = Lease(
            self.cluster, ttl=ttl, acquire_interval=acquire_interval,
            on_elected=self._elected, on_lost=self._lost, on_change=self._lease_changed,
        )  # fmt: skip
        self.replica_timeout = replica_timeout
        self.settle = settle
        self.engine, self.outbox, self.ingest, self.live = engine, outbox, ingest, live
        self._worker = worker
        self._ops_url = ops_url
        self._close = close  # closes a charger's connection here: (charge point, new replica)
        self._checks: set[asyncio.Task[None]] = set()
        self.watermark = store.feed_from
        self.followed = 0  # rows of other replicas applied (metrics)
        #: The push leader as last seen (replica, its API URL), for "ask the leader" answers.
        self.leader_hint: tuple[str | None, str | None] = (None, None)
        self._wake = asyncio.Event()
        #: A new leader's EVSE data rows (the data outbox reloads them and rebuilds).
        self.on_data_rows: Callable[[list[EvseDataRow]], None] | None = None
        #: A follower: what the leader wrote of an EVSE's data at the hub (for reads).
        self.on_data_follow: Callable[[EvseDataRow], None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._feed_lock = asyncio.Lock()
        store.on_fence_refused = lambda: self.lease.step_down(
            "a fenced write was refused: another replica holds the lease"
        )
        ingest.replica_id = self.replica_id
        ingest.decides_offline = False  # until this replica leads
        ingest.on_taken = self._claimed

    @property
    def role(self) -> Role:
        return self.lease.role

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks)

    def _lease_changed(self) -> None:
        worker = self._worker()
        if worker is not None:
            worker.wake()

    async def start(self) -> None:
        await self.cluster.heartbeat(self.role.value, self._ops_url())
        # Chargers this replica's name held before (a previous process of it, killed): nobody
        # holds them now; the leader's grace starts from here.
        for cp_id in await self.cluster.release_chargers():
            self.ingest.swept(cp_id, self.ingest.clock())
        self.cluster.listen(self._wake, self._listen_failed)
        self._tasks = [
            asyncio.create_task(self.lease.run(), name="leader-lease"),
            asyncio.create_task(self._follow(), name="replica-feed"),
            asyncio.create_task(self._heartbeats(), name="replica-heartbeat"),
        ]
        log.info("replica.started", replica=self.replica_id, lease_s=self.lease.ttl)

    async def stop(self) -> None:
        """After the lane stopped: give up the lease, leave the replica table."""
        await self.lease.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with suppress(StoreError):
            await self.cluster.leave()
        await self.cluster.close()

    # -- following the others ----------------------------------------------------------------
    async def _follow(self) -> None:
        while True:
            with suppress(TimeoutError):
                async with asyncio.timeout(self.lease.renew_interval):
                    await self._wake.wait()  # a NOTIFY; else read anyway now and then
            self._wake.clear()
            try:
                await self.read_feed()
            except StoreError as exc:
                log.warning("replica.feed_failed", error=str(exc))
                await asyncio.sleep(self.lease.renew_interval)

    async def read_feed(self) -> None:
        async with self._feed_lock:
            changes, watermark = await self.cluster.changes(self.watermark)
            if changes:
                self.apply(changes)
            self.watermark = watermark

    def apply(self, changes: Changes) -> None:
        """Put what other replicas wrote into force here (the order matters: the catalog says
        which connector is which EVSE, presence says who is offline)."""
        if changes.catalog:
            self.live.apply_remote(changes.catalog)
        for cp in changes.charge_points:
            self.ingest.remote_presence(cp)
        for connector in changes.connectors:
            self.ingest.remote_status(connector)
        if self.lease.is_leader:
            self.store.commit_soon()  # the EVSE rows the leader derived
        else:
            for evse in changes.evses:
                self.outbox.follow(evse)
            if self.on_data_follow is not None:
                for data in changes.evse_data:
                    self.on_data_follow(data)
            worker = self._worker()
            if changes.assignments and worker is not None and worker.networks is not None:
                worker.networks[0].follow(changes.assignments)
        self.followed += len(changes.connectors) + len(changes.charge_points)

    def _claimed(self, charge_point_id: str, replica: str) -> None:
        task = asyncio.get_running_loop().create_task(self._check_claim(charge_point_id))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _check_claim(self, charge_point_id: str) -> None:
        """Another replica claims a charger connected here. Once our own claim is committed,
        the row holds the newest claim (a claim always overwrites): if it is not ours, the
        charger connected there after it connected here, and this connection is closed."""
        try:
            await self.store.commit()
            holder, connected = await self.cluster.holder_of(charge_point_id)
        except StoreError as exc:
            log.warning("replica.feed_failed", error=str(exc))
            return
        if connected and holder is not None and holder != self.replica_id:
            self.ingest.taken_by(charge_point_id, holder)
            self._close(charge_point_id, holder)

    def _listen_failed(self, exc: BaseException) -> None:
        log.warning("replica.listen_failed", error=str(exc))

    # -- heartbeats and dead replicas ------------------------------------------------------------
    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.lease.renew_interval)
            try:
                await self.cluster.heartbeat(self.role.value, self._ops_url())
                self.leader_hint = await self.cluster.leader()
                if self.lease.is_leader:
                    for cp_id in await self.cluster.sweep(self.replica_timeout):
                        log.warning("replica.charger_orphaned", charge_point_id=cp_id,
                                    reason="its replica stopped sending heartbeats")  # fmt: skip
                        self.ingest.swept(cp_id, self.ingest.clock())
            except StoreError as exc:
                log.warning("replica.heartbeat_failed", error=str(exc))

    # -- becoming and ceasing to be the leader -----------------------------------------------
    async def _elected(self, grant: Grant) -> None:
        """Start leading from what the database holds: every follower change read, the EVSE
        rows the previous leader wrote, the request it had in flight treated as ambiguous."""
        self.store.epoch = grant.epoch
        await self.read_feed()
        self.outbox.reload(await self.cluster.evses())
        if self.on_data_rows is not None:  # EVSE data: the rows the previous leader wrote
            self.on_data_rows(await self.cluster.evse_data())
        reconciled = self.outbox.reconcile(self.engine.snapshot())
        worker = self._worker()
        if worker is not None:
            worker.reset()
            if worker.networks is not None:  # what the hub assigned, as the last leader left it
                worker.networks[0].restore(await self.cluster.assignments())
        if grant.in_flight:
            if worker is not None:
                worker.hold(self.settle)
                if grant.in_flight == FULL_LOAD:
                    worker.request_full_load()
                elif grant.in_flight == DATA_FULL_LOAD and worker.data is not None:
                    worker.request_data_full_load()
            if grant.in_flight in self.outbox.rows:
                self.outbox.ambiguous(grant.in_flight)  # its hub status is unknown: re-assert
        self.ingest.take_offline_decisions()
        await self.store.commit()
        self.store.check_fence()
        log.info("leader.resumed", epoch=grant.epoch, pending=len(self.outbox),
                 reconciled=len(reconciled), in_flight=grant.in_flight,
                 settle_s=self.settle if grant.in_flight else 0)  # fmt: skip
        if worker is not None:
            worker.wake()

    def _lost(self, reason: str) -> None:
        self.store.epoch = None
        self.ingest.leave_offline_decisions()
        worker = self._worker()
        if worker is not None:
            gone = HubError(f"this replica is no longer the push leader ({reason})")
            worker.full_load.fail(list(worker.full_load.waiters), gone)
            worker.wake()
