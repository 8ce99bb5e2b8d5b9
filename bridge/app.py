"""Wiring: builds the pieces from the settings, starts them in order, stops them gracefully."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from bridge.api.commands import WorkerFullLoad
from bridge.api.context import ApiContext
from bridge.api.status import delivery_summary
from bridge.api.tokens import Tokens
from bridge.catalog.catalog import Catalog
from bridge.catalog.rules import SetUp
from bridge.certs import days_until, log_certificate
from bridge.cluster.replica import ReplicaNode, default_replica_id
from bridge.config import Settings
from bridge.delivery.data_outbox import DataAcknowledged, DataOutbox
from bridge.delivery.hubhealth import HubHealth
from bridge.delivery.ingest import Ingest
from bridge.delivery.lane import PushClient, RetrySettings
from bridge.delivery.networks import HubKnows, NetworkPushes, StatusAcknowledged
from bridge.delivery.outbox import Outbox
from bridge.delivery.scheduler import run_daily_full_load, run_weekly_data_full_load
from bridge.delivery.worker import PushWorker
from bridge.errors import ConfigError
from bridge.eventloop import loop_name
from bridge.hubsim import HubSimulator
from bridge.hubsim.statefile import StateFile
from bridge.live import LiveCatalog
from bridge.ocpp.server import OcppServer
from bridge.oicp.certwatch import ClientCertWatch
from bridge.oicp.client import OicpClient
from bridge.oicp.evse_data import EvseDataService, watch_offsets
from bridge.oicp.evse_schema import compile_all
from bridge.oicp.networks import NetworkClient
from bridge.ops.guard import summarise_accept_errors
from bridge.ops.http import OpsServer
from bridge.ops.metrics import BridgeMetrics
from bridge.ops.quality_metrics import QualityGauges
from bridge.passwords import hash_password
from bridge.ratelimit import PacedWindow
from bridge.status.engine import StatusEngine
from bridge.status.registry import Registry
from bridge.status.table import TABLE, OcppStatus, OicpStatus, effective_table
from bridge.store import make_store
from bridge.store.base import EvseDataRow
from bridge.store.local import DatabaseLock, api_url_file
from bridge.store.postgres import PostgresStore

log = structlog.get_logger("bridge")


class Bridge:
    """The running bridge. ``start`` → ``wait`` → ``stop``, or ``run`` for all three."""

    def __init__(self, settings: Settings, *, client: PushClient | None = None) -> None:
        self.settings = settings
        self.lock = DatabaseLock(settings.state.database)
        self.replica_id = settings.replication.replica_id or default_replica_id()
        self.store = make_store(settings.state, replica_id=self.replica_id)
        #: Replicas on PostgreSQL: this one's lease and change feed (None: SQLite, one process).
        self.replica: ReplicaNode | None = None
        self.table = effective_table(settings.status.overrides)
        self.registry = Registry.from_settings(settings)
        self.engine = StatusEngine(
            self.table, self.registry, offline_status=OicpStatus(settings.ocpp.offline_status)
        )
        self.outbox = Outbox(self.store)
        #: EVSE data at the hub (None: evse_data.enabled is false).
        self.data: DataOutbox | None = None
        self.data_service: EvseDataService | None = None
        self.ingest = Ingest(
            self.engine, self.outbox, self.store, offline_grace=settings.ocpp.offline_grace
        )
        if self.store.shared:
            self.ingest.replica_id = self.replica_id
            self.ingest.decides_offline = False  # until this replica leads
        self.hub_sim: HubSimulator | None = None
        #: When the OICP client certificate loaded at start expires (None: none/unknown).
        self.client_cert_not_after: datetime | None = None
        self._client = client
        self.hub = HubHealth()  # what the requests to the hub met (healthz details, metrics)
        self.worker: PushWorker | None = None
        self.hub_tls: ClientCertWatch | None = None  # reloads a renewed hub client certificate
        self._hub_tls_task: asyncio.Task[None] | None = None
        self.ocpp = OcppServer(
            settings.ocpp, self.registry, self.ingest, chargers=settings.chargers
        )
        # The catalog feeds the registry, the credentials and the engine's EVSEs.
        self.catalog = Catalog(catalog_setup(settings, self.ocpp))
        if settings.evse_data.enabled:
            compile_all()  # the schemas once, before the first record is built
            self.data = DataOutbox(self.store, changed=self.outbox.changed)
            self.data_service = EvseDataService(
                self.catalog, self.data, defaults=settings.catalog.operator_defaults,
                version=settings.oicp.evse_data_version, language=settings.evse_data.language,
            )  # fmt: skip
        self.live = LiveCatalog(
            self.catalog, self.store, registry=self.registry, engine=self.engine,
            hub=self.outbox, credentials=self.ocpp.auth, connections=self.ocpp,
            data=self.data_service,
        )  # fmt: skip
        # Network assignments go to the hub only for EVSEs it knows: one whose data it
        # acknowledged (EVSE data on), else one whose status it acknowledged.
        known: HubKnows = StatusAcknowledged(self.outbox.rows)
        if self.data is not None:  # with EVSE data: the hub knows an EVSE once it has its data
            known = DataAcknowledged(self.data, known.knows)
        self.networks = NetworkPushes(
            self.catalog, known, self.store,
            initial=settings.delivery.retry_initial, cap=settings.delivery.retry_max,
        )  # fmt: skip
        self.live.on_networks = self.networks.changed
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()
        # Ops: metrics counted through the components' hooks, state read at scrape time.
        self.metrics = BridgeMetrics()
        self.metrics.watch(self)
        # The data-quality gauges, made on a scrape after a catalog change; their per-station
        # reports are the API's too (GET /api/v2/data-quality).
        self.quality = QualityGauges(self.catalog, settings.catalog.operator_defaults, {})
        self.metrics.refreshers.append(self.quality.refresh)
        self.ingest.on_status = self.metrics.observe_status
        self.ocpp.on_auth_failure = self.metrics.observe_auth_failure
        self.ocpp.admission.on_refused = self.metrics.observe_connection_refused
        self.ops_server: OpsServer | None = None
        self.accepting = False  # the OCPP endpoint is listening (readiness)
        self.stopping = False
        self._restored_full_load: float | None = None
        self._restored_data_full_load: float | None = None
        self._meta: dict[str, str] = {}  # the state database's meta table as loaded

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The long-running tasks (push worker, fullLoad scheduler)."""
        return list(self._tasks)

    @property
    def last_full_load(self) -> float | None:
        """Unix time of the last fullLoad the hub accepted, also from before a restart."""
        # The worker starts with the restored value (make_worker).
        return self.worker.last_full_load if self.worker is not None else self._restored_full_load

    def open_state(self) -> None:
        """Take the database lock and load the durable state (blocking; at start-up).

        SQLite: one bridge per file, kept by a file lock. PostgreSQL: any number of replicas;
        the push lease keeps the lane to one of them."""
        if not self.store.shared:
            self.lock.acquire()
        self.load_state()

    def load_state(self) -> None:
        """Load the durable state without the lock: read-only use (previews), or after it."""
        snapshot = self.store.open()
        self.live.load(snapshot.catalog)
        self.live.import_file(self.settings.chargers)
        self.live.configure_all()
        self.engine.restore(
            ((r.charge_point_id, r.evse_key, r.connector_id, OcppStatus(r.ocpp_status))
             for r in snapshot.connectors),
            offline=(r.charge_point_id for r in snapshot.charge_points if r.offline),
        )  # fmt: skip
        self.outbox.restore(snapshot.evses)
        if self.data is not None and self.data_service is not None:
            self.data.restore(snapshot.evse_data)
            # Operator facts, the OICP version or the time of year may have changed since.
            self.data_service.rebuild_all()
        self.networks.restore(snapshot.assignments)
        # The configuration may have changed since (EvseIDs, overrides, removed EVSEs): what
        # the hub should show is recomputed, and every difference is queued.
        reconciled = self.outbox.reconcile(self.engine.snapshot())
        self._meta = snapshot.meta
        with suppress(KeyError, ValueError):
            self._restored_full_load = float(snapshot.meta["last_full_load"])
        with suppress(KeyError, ValueError):
            self._restored_data_full_load = float(snapshot.meta["last_data_full_load"])
        self.ingest.restore(snapshot.charge_points, snapshot.connectors)
        log.info("state.loaded", database=self.store.where, evses=len(snapshot.evses),
                 connectors=len(snapshot.connectors), pending=len(self.outbox),
                 stations=len(self.catalog.stations), schema=self.store.migration,
                 reconciled=len(reconciled))  # fmt: skip

    def api_context(self) -> ApiContext:
        s = self.settings
        return ApiContext(
            settings=s.api, tokens=Tokens(s.api.tokens), catalog=self.catalog, live=self.live,
            engine=self.engine, outbox=self.outbox, presence=self.ingest.charge_points,
            delivery=lambda: delivery_summary(
                self.engine, self.outbox, self.worker, base_url=s.oicp.base_url,
                operator_id=s.oicp.operator_id, last_full_load=self.last_full_load,
            ),
            full_load=WorkerFullLoad(lambda: self.worker, self.engine, s.oicp,
                                     elsewhere=self._not_leader),
            operator_defaults=s.catalog.operator_defaults, hash_password=hash_password,
            hub_data=self.data.describe if self.data is not None else lambda evse_id: None,
            networks=self.networks, quality_cache=self.quality.kept,
        )  # fmt: skip

    def make_worker(self, client: PushClient) -> PushWorker:
        s = self.settings
        d = s.delivery
        self.worker = PushWorker(
            self.outbox,
            self.engine,
            self.hub.watch(client),
            limiter=PacedWindow.per_minute(d.rate_limit_per_minute),
            retry=RetrySettings(
                initial=d.retry_initial, cap=d.retry_max, pause=d.pause_retry,
                max_attempts=d.max_attempts, settle=d.settle_time,
                # Replicas: a push must end well within the lease (bridge.cluster.lease).
                push_timeout=s.replication.push_timeout if self.store.shared
                else s.oicp.request_timeout,
                full_load_timeout=s.fullload.request_timeout,
                data_full_load_timeout=s.evse_data.full_load_timeout,
            ),
            data=self.data,
            data_limiter=PacedWindow.per_minute(s.evse_data.rate_limit_per_minute),
            data_batch_size=s.evse_data.batch_size,
        )  # fmt: skip
        self.worker.on_push = self.metrics.observe_push
        self.worker.last_full_load = self._restored_full_load
        self.worker.last_data_full_load = self._restored_data_full_load
        if hasattr(client, "post"):  # the hub client (a test's stand-in may lack the service)
            self.worker.networks = (self.networks, NetworkClient(s.oicp, client))  # type: ignore[arg-type]
            self.networks.wake = self.worker.wake
        if self.replica is not None:
            self.worker.gate = self.replica.lease
        return self.worker

    def _make_replica(self) -> ReplicaNode | None:
        s = self.settings
        if not isinstance(self.store, PostgresStore):
            return None
        r = s.replication
        settle = s.delivery.settle_time if s.delivery.settle_time is not None else r.push_timeout
        return ReplicaNode(
            self.store, ttl=r.lease_ttl, acquire_interval=r.acquire_interval,
            replica_timeout=r.replica_timeout, settle=settle, engine=self.engine,
            outbox=self.outbox, ingest=self.ingest, live=self.live, worker=lambda: self.worker,
            ops_url=lambda: self.ops_server.api_url if self.ops_server is not None else None,
            close=self._taken_over,
        )  # fmt: skip

    def _data_rows(self, rows: list[EvseDataRow]) -> None:
        """A new leader: the data rows the previous one wrote, then every record rebuilt."""
        if self.data is not None and self.data_service is not None:
            self.data.reload(rows)
            self.data_service.rebuild_all()

    def _not_leader(self) -> str | None:
        """Why this replica does not send to the hub (None: it does)."""
        if self.replica is None or self.replica.lease.is_leader:
            return None
        holder, url = self.replica.leader_hint
        where = f"{holder} ({url})" if holder and url else holder or "none right now"
        return f"this replica is not the push leader; ask the leader: {where}"

    def _taken_over(self, charge_point_id: str, replica: str) -> None:
        """The charger connected again on another replica: the newest connection wins."""
        if self.ocpp.disconnect(charge_point_id, f"connected to replica {replica}"):
            log.info("charger.taken_over", charge_point_id=charge_point_id, replica=replica)

    @property
    def role(self) -> str:
        """single (SQLite, one process), or this replica's: leader or follower."""
        return "single" if self.replica is None else self.replica.role.value

    def replication_status(self) -> dict[str, Any]:
        """What the ops port shows of this replica."""
        if self.replica is None:
            return {"mode": "single", "role": "single"}
        lease = self.replica.lease
        return {"mode": "replicated", "replica": self.replica_id, "role": lease.role.value,
                "epoch": lease.epoch, "elections": lease.elections,
                "failovers": lease.failovers}  # fmt: skip

    def check_client_cert(self) -> None:
        """Log (warn under 30 days) and keep how long the hub client certificate is valid."""
        if self.settings.oicp.client_cert is not None:
            self.client_cert_not_after = log_certificate(
                "oicp.client_cert", self.settings.oicp.client_cert
            )

    def _api_file(self) -> Path:
        """Where the running bridge leaves its API's URL for the CLI (``oicp-bridge fullload``)."""
        return api_url_file(self.settings.state.database)  # this replica's, on its own disk

    @property
    def client_cert_days_left(self) -> float | None:
        """Days until the client certificate in use expires (it is loaded once, at start)."""
        not_after = self.client_cert_not_after
        return None if not_after is None else days_until(not_after)

    async def start(self) -> None:
        s = self.settings
        log_table(self.table, s.status.overrides)
        self.open_state()
        for network, evses in self.networks.without_group().items():
            log.warning("network.evses_without_group", network=network, count=len(evses),
                        evses=evses[:20], risk="the hub prices EVSEs in no group at zero "
                        "once the service offer is active")  # fmt: skip
        if s.hub_sim.embedded:
            state_file = s.hub_sim.state_file
            self.hub_sim = HubSimulator(
                s.hub_sim.host,
                s.hub_sim.port,
                state_file=StateFile(state_file) if state_file else None,
            )
            self.hub_sim.require_data_for_status = s.hub_sim.require_data_for_status
            await self.hub_sim.start()
            log.info("hubsim.embedded", url=self.hub_sim.base_url,
                     state_file=str(state_file) if state_file else None)  # fmt: skip
        await self.store.commit()  # the file's chargers as imported into the catalog
        summarise_accept_errors(asyncio.get_running_loop())
        if s.ops.enabled:
            self.ops_server = OpsServer(
                self, s.ops, metrics=self.metrics, api=self.api_context(), api_settings=s.api
            )
            self.ops_server.on_refused = self.metrics.observe_ops_refused
            await self.ops_server.start()
            self._api_file().write_text(self.ops_server.api_url + "\n", encoding="utf-8")
        self.check_client_cert()
        client = self._client or OicpClient(s.oicp)
        self._client = client
        if isinstance(client, OicpClient):
            self._watch_hub_tls(client)
        self.replica = self._make_replica()
        worker = self.make_worker(client)
        if self.replica is None:
            self._resume_lane(worker)
        else:  # the lease's in-flight marker tells the next leader what the clean-stop flag did
            self.replica.on_data_rows = self._data_rows
            if self.data is not None:
                self.replica.on_data_follow = self.data.follow
            await self.replica.start()
            self._tasks += self.replica.tasks
        self._tasks.append(asyncio.create_task(worker.run(), name="push-worker"))
        if s.fullload.enabled:
            leads = (lambda: True) if self.replica is None else (lambda: self.role == "leader")
            self._tasks.append(asyncio.create_task(
                run_daily_full_load(worker, s.fullload.time, ZoneInfo(s.fullload.timezone),
                                    leads=leads),
                name="fullload-scheduler",
            ))  # fmt: skip
        if self.data_service is not None:
            self._tasks.append(asyncio.create_task(
                watch_offsets(self.data_service, self.store.commit_soon), name="evse-data-dst",
            ))  # fmt: skip
            if s.evse_data.full_load_enabled:
                leads = (lambda: True) if self.replica is None else (lambda: self.role == "leader")
                self._tasks.append(asyncio.create_task(
                    run_weekly_data_full_load(
                        worker, s.evse_data.full_load_weekday, s.evse_data.full_load_time,
                        ZoneInfo(s.evse_data.full_load_timezone), leads=leads),
                    name="data-fullload-scheduler",
                ))  # fmt: skip
        try:
            await self.ocpp.start()
        except OSError as exc:
            raise ConfigError(
                "ocpp.port",
                f"cannot listen on {s.ocpp.host}:{s.ocpp.port}: "
                f"{os.strerror(exc.errno) if exc.errno else exc}; stop what uses it or choose "
                "another port",
            ) from exc
        self.accepting = True
        if self.replica is None:  # replicas: the leader decides (take_offline_decisions)
            self.ingest.start_grace_for_all()
        log.info("bridge.started", ocpp_port=self.ocpp.port, hub=s.oicp.base_url,
                 operator_id=s.oicp.operator_id, chargers=len(s.chargers),
                 evses=len(self.engine.evse_ids()), role=self.role,
                 replica=self.replica_id if self.replica is not None else None,
                 ops_port=self.ops_server.port if self.ops_server else None,
                 event_loop=loop_name())  # fmt: skip

    def _watch_hub_tls(self, client: OicpClient) -> None:
        def loaded(not_after: datetime | None) -> None:
            self.client_cert_not_after = not_after

        self.hub_tls = ClientCertWatch(self.settings.oicp, client.use_tls, on_loaded=loaded)
        interval = self.settings.oicp.tls_reload_interval
        if self.hub_tls.paths and interval > 0:
            self._hub_tls_task = asyncio.create_task(self.hub_tls.run(interval))

    def _resume_lane(self, worker: PushWorker) -> None:
        """Pick up where the previous process left the hub.

        After a crash the hub may hold statuses this database never got to keep (a push goes
        out while its report is still being committed), and a request of the previous process
        may still be applied: nothing is sent for the settle time, then a fullLoad puts the
        hub right. After a clean stop that abandoned a request, only the wait remains.
        """
        unclean = self._meta.get("clean_stop") == "0"
        self.store.write_meta_now("clean_stop", "0")  # until stop() says otherwise
        with suppress(KeyError, ValueError):
            worker.hold(float(self._meta["hub_settles_at"]) - time.time())
        if unclean:
            d, settle = self.settings.delivery, self.settings.oicp.request_timeout
            settle = d.settle_time if d.settle_time is not None else settle
            worker.hold(settle)
            worker.request_full_load()
            log.warning("bridge.unclean_start", action="fullLoad after the settle time",
                        settle_s=settle)  # fmt: skip

    async def stop(self) -> None:
        """Stop accepting, close chargers (1001), let the push in flight finish, commit."""
        log.info("bridge.stopping")
        self.stopping, self.accepting = True, False  # not ready from here on; still alive
        if self._hub_tls_task is not None:
            self._hub_tls_task.cancel()
            await asyncio.gather(self._hub_tls_task, return_exceptions=True)
        if self.hub_tls is not None:
            await self.hub_tls.close()
        await self.ocpp.close()
        self.ingest.close()
        if self.worker is not None:
            self.worker.stop()
        scheduler = [t for t in self._tasks if t.get_name() != "push-worker"
                     and (self.replica is None or t not in self.replica.tasks)]  # fmt: skip
        for task in scheduler:
            task.cancel()
        pushing = [t for t in self._tasks if t.get_name() == "push-worker"]
        if pushing:
            _, late = await asyncio.wait(pushing, timeout=self.settings.delivery.shutdown_timeout)
            for task in late:  # the push stays pending and is sent after the next start
                task.cancel()
                log.warning("bridge.push_abandoned", reason="shutdown timeout")
        await asyncio.gather(*scheduler, *pushing, return_exceptions=True)
        if self.replica is not None:
            await self.store.commit()  # the last acknowledgments, fenced, before the lease goes
            await self.replica.stop()
        if self.replica is None and self.worker is not None and self.store.is_open:
            self.store.put_meta("hub_settles_at", str(self.worker.unsettled_until))
            self.store.put_meta("clean_stop", "1")
        await self.store.close()
        if isinstance(self._client, OicpClient):
            await self._client.aclose()
        if self.hub_sim is not None:
            await self.hub_sim.stop()
        if self.ops_server is not None:
            await self.ops_server.close()
            with suppress(OSError):
                self._api_file().unlink()
        self.lock.release()
        log.info("bridge.stopped", pending=len(self.outbox))
        self._stopped.set()

    async def run(self, on_started: Callable[[], None] | None = None) -> None:
        """Run until SIGTERM/SIGINT, then stop gracefully; SIGHUP re-reads changed TLS files."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        # A SIGHUP (a certificate-renewal hook) while starting or stopping must not kill the
        # process, as its default action would.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        if on_started is not None:
            on_started()
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with suppress(Exception):
                    loop.remove_signal_handler(sig)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            await self.stop()

    def _on_sighup(self) -> None:
        files = []
        if self.ocpp.tls is not None:
            files.append("the OCPP port's")
            self.ocpp.request_tls_reload()
        if self.hub_tls is not None and self.hub_tls.paths:
            files.append("the hub client's")
            self.hub_tls.request_check()
        upstream = self.ocpp.proxy.upstream if self.ocpp.proxy is not None else None
        if upstream is not None and upstream.has_files:
            try:
                upstream.reload()  # new CSMS connections use them; open ones keep theirs
            except ConfigError as exc:
                log.error("proxy.reload_failed", field=exc.field, error=exc.reason,
                          outcome="the CSMS connection's files in use stay")  # fmt: skip
            else:
                files.append("the CSMS connection's")
        action = (
            f"reload changed TLS and password files: {', '.join(files)}"
            if files
            else "none: no TLS or password files"
        )
        log.info("bridge.sighup", action=action)


def catalog_setup(settings: Settings, ocpp: OcppServer) -> SetUp:
    """What the catalog's rules need to know of the configuration."""
    security = settings.ocpp.security
    return SetUp(
        operator_id=settings.oicp.operator_id, default_profile=security.profile,
        tls=security.tls_cert is not None,
        client_certs=ocpp.auth.client_cert_mode() != ssl.CERT_NONE,
        evse_id_template=settings.catalog.evse_id_template,
    )  # fmt: skip


def log_table(
    table: Mapping[OcppStatus, OicpStatus], overrides: Mapping[OcppStatus, OicpStatus]
) -> None:
    """Log the effective mapping table once at start, marking overridden rows."""
    rows = [
        {"ocpp": row.ocpp.value, "ocpi": row.ocpi.value,
         "oicp": table[row.ocpp].value, "overridden": row.ocpp in overrides}
        for row in TABLE
    ]  # fmt: skip
    log.info("status.table", rows=rows)
