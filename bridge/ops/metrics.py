"""Prometheus metrics of one bridge, in a registry of its own.

Event counts (status notifications, pushes, auth failures) are counted as they happen, through
the hooks of ``Ingest``, ``PushWorker`` and ``OcppServer``. Everything that is a state (who is
connected, what is pending, when the last fullLoad went out) is read from the running bridge at
scrape time, so it cannot drift from what the status API shows. The data-quality gauges are
the one thing kept between scrapes (too costly to make each time): a scrape makes them again
before rendering when the catalog changed (``bridge.ops.quality_metrics``).

``METRICS`` is the single list of every metric: the collectors below are built from it and the
metrics table in docs/operations.md is generated from it (``bridge.ops.docs``).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from bridge import __version__
from bridge.delivery.lane import PushEvent
from bridge.ocpp.failure import Failure
from bridge.ocpp.proxy import LATENCY_BUCKETS, Proxy, RelayStats
from bridge.ocpp.rpc import PROTOCOLS
from bridge.status.table import OICP_STATUSES, OcppStatus


class Watched(Protocol):
    """What the live gauges read from the running bridge (it provides these attributes)."""

    @property
    def ocpp(self) -> Any: ...  # connected_by_protocol(), tls_files

    @property
    def ingest(self) -> Any: ...  # charge_points

    @property
    def engine(self) -> Any: ...  # evse_ids(), status()

    @property
    def outbox(self) -> Any: ...  # rows, __len__, oldest_pending_age()

    @property
    def worker(self) -> Any: ...  # paused_reason

    @property
    def hub(self) -> Any: ...  # reachable, consecutive_failures

    @property
    def last_full_load(self) -> float | None: ...

    @property
    def client_cert_days_left(self) -> float | None: ...

    def replication_status(self) -> dict[str, Any]: ...


__all__ = ["METRICS", "BridgeMetrics", "MetricDoc"]

AUTH_REASONS = frozenset(f.value for f in Failure)
# Pushes take tens of ms on a healthy hub; the client's whole-request timeout is 20 s.
DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)

# ``*_created`` series double every counter and no dashboard of ours uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class MetricDoc:
    name: str  # as exposed (counters with their _total suffix)
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str


METRICS: tuple[MetricDoc, ...] = (
    MetricDoc("bridge_info", "gauge", ("version",), "Always 1; the bridge version as a label."),
    MetricDoc(
        "bridge_chargers_connected", "gauge", ("protocol",),
        "Chargers with an open websocket, by OCPP version (1.6, 2.0.1).",
    ),
    MetricDoc(
        "bridge_chargers_offline", "gauge", (),
        "Chargers gone longer than ocpp.offline_grace (their EVSEs show ocpp.offline_status).",
    ),
    MetricDoc(
        "bridge_status_notifications_total", "counter", ("protocol", "ocpp_status"),
        "Connector status reports received (StatusNotification, NotifyEvent AvailabilityState).",
    ),
    MetricDoc(
        "bridge_evses", "gauge", ("oicp_status",),
        "EVSEs by their current OICP status (what the bridge wants the hub to show).",
    ),
    MetricDoc(
        "bridge_pushes_total", "counter", ("action", "outcome", "code"),
        "Requests to the hub by action (insert, update, delete, fullLoad, network: an EVSE "
        "group assignment; EVSE data: data_insert, data_update, data_delete, data_fullLoad), "
        "outcome (ok; "
        "retry: the hub failed; defer: refused for now, others go first; flip, absent, pause, "
        "park; refused: a fullLoad the hub does not take) and OICP code (or http_NNN / "
        "transport without one).",
    ),
    MetricDoc(
        "bridge_push_duration_seconds", "histogram", ("action",),
        "Duration of push requests to the hub, successful or not.",
    ),
    MetricDoc(
        "bridge_replica_role", "gauge", ("role",),
        "1 for this process's role: single (SQLite, one process), leader (the replica that "
        "pushes to the hub) or follower (takes chargers, never calls the hub).",
    ),
    MetricDoc(
        "bridge_leader_elections_total", "counter", (),
        "Times this replica took the push lease (at start, or after another leader).",
    ),
    MetricDoc(
        "bridge_leader_failovers_total", "counter", (),
        "Times this replica took the push lease over from another replica whose lease had "
        "expired (a crash or a cut from the database; a clean stop hands it on without one).",
    ),
    MetricDoc(
        "bridge_push_pending", "gauge", (),
        "EVSEs whose current status the hub has not acknowledged yet (the outbox depth).",
    ),
    MetricDoc(
        "bridge_push_oldest_pending_age_seconds", "gauge", (),
        "Age of the oldest pending push (0 when nothing is pending).",
    ),
    MetricDoc(
        "bridge_network_evses_without_group", "gauge", ("network",),
        "EVSEs of an EVSE network that are in none of its groups: once the network's service "
        "offer is active the hub prices them at zero. Alert on anything above 0.",
    ),
    MetricDoc(
        "bridge_push_paused", "gauge", (),
        "1 while pushes are paused because the hub reports a configuration error (017, 210, "
        "300, HTTP 401/403), else 0.",
    ),
    MetricDoc(
        "bridge_hub_reachable", "gauge", (),
        "1 if the last request to the hub got an HTTP answer (even a refusal), 0 if it did not "
        "(connection, TLS, timeout); absent before the first request since the start.",
    ),
    MetricDoc(
        "bridge_hub_consecutive_failures", "gauge", (),
        "Requests to the hub that failed in a row (unreachable, refused or an error answer); 0 "
        "after a success.",
    ),
    MetricDoc(
        "bridge_evses_parked", "gauge", (),
        "EVSEs set aside after a refusal (e.g. 018) until their status changes or a fullLoad.",
    ),
    MetricDoc(
        "bridge_fullload_last_success_timestamp_seconds", "gauge", (),
        "Unix time of the last fullLoad the hub accepted (0: none yet).",
    ),
    MetricDoc(
        "bridge_evse_data_pending", "gauge", (),
        "EVSEs whose data record (eRoamingPushEvseData) the hub has not acknowledged yet, "
        "deletes included.",
    ),
    MetricDoc(
        "bridge_evse_data_invalid", "gauge", (),
        "Shared EVSEs whose data record fails the OICP schema (never pushed; their status is "
        "held; the field errors are in the station's hub_data and the evse_data.invalid log).",
    ),
    MetricDoc(
        "bridge_evse_data_parked", "gauge", (),
        "EVSE data records the hub refused (e.g. HTTP 400 naming their fields), set aside "
        "until they change or a data fullLoad.",
    ),
    MetricDoc(
        "bridge_evse_status_held", "gauge", (),
        "EVSE statuses waiting until the hub holds the EVSE's data.",
    ),
    MetricDoc(
        "bridge_evse_data_fullload_last_success_timestamp_seconds", "gauge", (),
        "Unix time of the last data fullLoad the hub accepted (0: none yet).",
    ),
    # The data-quality report (GET /api/v2/data-quality) in numbers, made again when the
    # catalog changed (bridge.ops.quality_metrics).
    MetricDoc(
        "bridge_evse_data_assessed", "gauge", (),
        "EVSEs the data-quality report covers: not REMOVED, of a station in stock or "
        "production.",
    ),
    MetricDoc(
        "bridge_evse_data_evses_with_findings", "gauge", ("severity",),
        "EVSEs with at least one data-quality finding of the severity: error (OICP requires "
        "what is missing or wrong: the hub refuses the record) or warning (lowers Hubject's "
        "EVSE Data Score). Alert on errors above 0.",
    ),
    MetricDoc(
        "bridge_evse_data_findings", "gauge", ("severity", "code"),
        "EVSEs with at least one data-quality finding of the code (every code of the "
        "report, 0 when none has it; a code has one severity).",
    ),
    MetricDoc(
        "bridge_evse_data_missing_fields", "gauge", ("field",),
        "EVSEs without a counted field (the 15 of the report, e.g. location.opening_times).",
    ),
    MetricDoc(
        "bridge_evse_data_score_evses", "gauge", ("score",),
        "EVSEs by data-quality score band: 0-24, 25-49, 50-74, 75-99, 100.",
    ),
    MetricDoc(
        "bridge_evse_data_score_min", "gauge", (),
        "Lowest data-quality score of an EVSE (0-100); absent without EVSEs.",
    ),
    MetricDoc(
        "bridge_evse_data_score_mean", "gauge", (),
        "Mean data-quality score of the EVSEs (0-100; the report's score_mean unrounded); "
        "absent without EVSEs.",
    ),
    MetricDoc(
        "bridge_evse_data_completeness_mean", "gauge", (),
        "Mean percent of the counted fields the EVSEs have (0-100); absent without EVSEs.",
    ),
    MetricDoc(
        "bridge_hub_client_cert_days_left", "gauge", (),
        "Days until the hub client certificate (oicp.client_cert) expires; absent without one.",
    ),
    MetricDoc(
        "bridge_ocpp_server_cert_days_left", "gauge", (),
        "Days until the OCPP port's certificate (ocpp.security.tls_cert) expires; absent "
        "without TLS.",
    ),
    MetricDoc(
        "bridge_ocpp_charger_crl_hours_left", "gauge", (),
        "Hours until the first charger CRL (ocpp.security.charger_crl) passes its nextUpdate; "
        "after that chargers of its CA are refused. Absent without CRLs.",
    ),
    MetricDoc(
        "bridge_ocpp_auth_failures_total", "counter", ("reason",),
        "Charger connections refused by authentication, by reason (wrong_password, "
        "client_cert_mismatch, unknown_charge_point, throttled, ...).",
    ),
    MetricDoc(
        "bridge_ocpp_password_checks_total", "counter", (),
        "Password checks (scrypt runs) for Basic-auth logins, right or wrong, including the "
        "decoy checks for unknown IDs; a login verified since the start costs none.",
    ),
    MetricDoc(
        "bridge_ocpp_connections_refused_total", "counter", ("reason",),
        "OCPP connections closed at once, before any handshake, by reason: address_limit "
        "(max_connections_per_address), handshake_limit (max_tls_handshakes), "
        "address_handshake_limit (max_tls_handshakes_per_address).",
    ),
    MetricDoc(
        "bridge_ops_connections_refused_total", "counter", ("reason",),
        "Ops port connections closed at once: connection_limit (ops.max_connections), "
        "address_limit (ops.max_connections_per_address) or descriptor_reserve (open files "
        "near the limit, kept for chargers).",
    ),
    # Proxy mode (docs/proxy.md); zero unless some charger is proxied.
    MetricDoc(
        "bridge_upstream_connections", "gauge", (),
        "Open connections to the operator's CSMS (one per proxied charger).",
    ),
    MetricDoc(
        "bridge_upstream_handshakes_total", "counter", ("outcome",),
        "Attempts to open a proxied charger's CSMS connection: ok, or why not (unauthorized, "
        "forbidden, not_found: relayed to the charger; unreachable, timeout, busy: 503; tls, "
        "bad_status, bad_handshake, error: 502).",
    ),
    MetricDoc(
        "bridge_upstream_frames_total", "counter", ("direction",),
        "Frames relayed unchanged, to_csms or to_charger.",
    ),
    MetricDoc(
        "bridge_upstream_relay_errors_total", "counter", ("kind",),
        "What went wrong while relaying: unparsable frames (relayed anyway), status reports "
        "ignored or dropped by the tap, status_refused (a CALLERROR of the CSMS), tap_failed "
        "(not stored in time), abnormal_close (a hop lost without a close frame), internal.",
    ),
    MetricDoc(
        "bridge_upstream_added_latency_seconds", "histogram", ("direction",),
        "Time from receiving a frame on one hop to having written it to the other, including "
        "the storing of a tapped status before its confirmation is relayed.",
    ),
)  # fmt: skip

_DOC = {m.name: m for m in METRICS}


def _counter(registry: CollectorRegistry, name: str) -> Counter:
    doc = _DOC[name]
    return Counter(name, doc.help, doc.labels, registry=registry)


class BridgeMetrics:
    """The metrics of one bridge; ``watch`` a bridge to export its live state too."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.status_notifications = _counter(self.registry, "bridge_status_notifications_total")
        self.pushes = _counter(self.registry, "bridge_pushes_total")
        self.auth_failures = _counter(self.registry, "bridge_ocpp_auth_failures_total")
        self.connections_refused = _counter(self.registry, "bridge_ocpp_connections_refused_total")
        self.ops_refused = _counter(self.registry, "bridge_ops_connections_refused_total")
        self.push_duration = Histogram(
            "bridge_push_duration_seconds",
            _DOC["bridge_push_duration_seconds"].help,
            _DOC["bridge_push_duration_seconds"].labels,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._push_children: dict[tuple[str, str, str | None], tuple[Any, Any]] = {}
        self._status_children: dict[tuple[str, OcppStatus], Any] = {}
        #: Awaited before each scrape is rendered: what is derived and kept is made current
        #: there, where it may wait for a worker thread (``collect`` cannot).
        self.refreshers: list[Callable[[], Awaitable[None]]] = []

    # -- hooks (called by the bridge's components) -----------------------------------------
    def observe_status(self, charge_point_id: str, protocol: str, status: OcppStatus) -> None:
        # Children looked up once, as for the pushes: one report per StatusNotification.
        key = (protocol, status)
        child = self._status_children.get(key)
        if child is None:
            child = self._status_children[key] = self.status_notifications.labels(
                protocol=protocol, ocpp_status=status.value
            )
        child.inc()

    def observe_push(self, event: PushEvent) -> None:
        # The labelled children, looked up once: labels() per push was a measurable share of
        # the push lane's CPU at thousands of pushes a second (bench/RESULTS.md).
        key = (event.action, event.outcome, event.code)
        children = self._push_children.get(key)
        if children is None:
            code = event.code or "none"
            children = self._push_children[key] = (
                self.pushes.labels(action=event.action, outcome=event.outcome, code=code),
                self.push_duration.labels(action=event.action),
            )
        children[0].inc()
        children[1].observe(max(0.0, event.duration_s))

    def observe_auth_failure(self, reason: str) -> None:
        # Only the known reasons become labels: anything else (e.g. an ID a stranger made up)
        # would let the internet grow the metric without bound.
        self.auth_failures.labels(reason=reason if reason in AUTH_REASONS else "other").inc()

    def observe_connection_refused(self, reason: str) -> None:
        self.connections_refused.labels(reason=reason).inc()

    def observe_ops_refused(self, reason: str) -> None:
        self.ops_refused.labels(reason=reason).inc()

    # -- live state ------------------------------------------------------------------------
    def watch(self, bridge: Watched) -> None:
        self.registry.register(_LiveCollector(bridge))

    async def refresh(self) -> None:
        for refresh in self.refreshers:
            await refresh()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition in the format the scraper asked for: (body, content type)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _data_gauges(b: Any) -> Iterable[Metric]:
    data = getattr(b, "data", None)
    if data is None:
        return
    parked = sum(1 for row in data.rows.values() if row.parked_code is not None)
    worker = b.worker
    last = worker.last_data_full_load if worker is not None else None
    yield _gauge("bridge_evse_data_pending", [((), float(len(data)))])
    yield _gauge("bridge_evse_data_invalid", [((), float(data.invalid()))])
    yield _gauge("bridge_evse_data_parked", [((), float(parked))])
    yield _gauge("bridge_evse_status_held", [((), float(b.outbox.held()))])
    yield _gauge(
        "bridge_evse_data_fullload_last_success_timestamp_seconds", [((), float(last or 0.0))]
    )


def _quality_gauges(b: Any) -> Iterable[Metric]:
    quality = getattr(b, "quality", None)  # bridge.ops.quality_metrics.QualityGauges
    f = quality.figures if quality is not None else None
    if f is None:  # not made yet (no scrape went through refresh)
        return
    yield _gauge("bridge_evse_data_assessed", [((), float(f.evses))])
    yield _gauge("bridge_evse_data_evses_with_findings",
                 [((s.value,), float(n)) for s, n in f.by_severity.items()])  # fmt: skip
    yield _gauge("bridge_evse_data_findings", [
        ((s.value, code), float(n)) for (code, s), n in sorted(f.by_code.items())
    ])  # fmt: skip
    yield _gauge("bridge_evse_data_missing_fields",
                 [((field,), float(n)) for field, n in f.missing.items()])  # fmt: skip
    yield _gauge("bridge_evse_data_score_evses",
                 [((band,), float(n)) for band, n in f.bands.items()])  # fmt: skip
    for name, value in (("bridge_evse_data_score_min", f.score_min),
                        ("bridge_evse_data_score_mean", f.score_mean),
                        ("bridge_evse_data_completeness_mean", f.completeness_mean)):  # fmt: skip
        if value is not None:
            yield _gauge(name, [((), float(value))])


class _LiveCollector:
    """Gauges read from the running bridge on every scrape."""

    def __init__(self, bridge: Watched) -> None:
        self.bridge = bridge

    def describe(self) -> Iterable[Metric]:
        return []  # the names are fixed in METRICS; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        b = self.bridge
        yield _gauge("bridge_info", [((__version__,), 1.0)])

        connected = dict.fromkeys(PROTOCOLS, 0)
        connected.update(b.ocpp.connected_by_protocol())
        yield _gauge("bridge_chargers_connected", [((p,), float(n)) for p, n in connected.items()])
        offline = sum(1 for row in b.ingest.charge_points.values() if row.offline)
        yield _gauge("bridge_chargers_offline", [((), float(offline))])

        by_status = dict.fromkeys((s.value for s in OICP_STATUSES), 0)
        for evse_id in b.engine.evse_ids():
            status = b.engine.status(evse_id).value
            by_status[status] = by_status.get(status, 0) + 1
        yield _gauge("bridge_evses", [((s,), float(n)) for s, n in by_status.items()])

        status = b.replication_status()
        yield _gauge(
            "bridge_replica_role",
            [((r,), 1.0 if status["role"] == r else 0.0) for r in ("single", "leader", "follower")],
        )
        for name in ("elections", "failovers"):
            doc = _DOC[f"bridge_leader_{name}_total"]
            family = CounterMetricFamily(doc.name.removesuffix("_total"), doc.help)
            family.add_metric([], float(status.get(name, 0)))
            yield family
        yield _gauge("bridge_push_pending", [((), float(len(b.outbox)))])
        yield _gauge(
            "bridge_push_oldest_pending_age_seconds", [((), b.outbox.oldest_pending_age())]
        )
        worker = b.worker
        paused = worker is not None and worker.paused_reason is not None
        yield _gauge("bridge_push_paused", [((), 1.0 if paused else 0.0)])
        if b.hub.reachable is not None:
            yield _gauge("bridge_hub_reachable", [((), 1.0 if b.hub.reachable else 0.0)])
        yield _gauge("bridge_hub_consecutive_failures", [((), float(b.hub.consecutive_failures))])
        networks = getattr(b, "networks", None)  # bridge.delivery.networks.NetworkPushes
        if networks is not None:
            loose = networks.without_group()
            yield _gauge("bridge_network_evses_without_group", [
                ((name,), float(len(loose.get(name, ())))) for name in networks.catalog.networks
            ])  # fmt: skip
        parked = sum(1 for row in b.outbox.rows.values() if row.parked is not None)
        yield _gauge("bridge_evses_parked", [((), float(parked))])
        last = b.last_full_load
        yield _gauge("bridge_fullload_last_success_timestamp_seconds", [((), float(last or 0.0))])
        yield from _data_gauges(b)
        yield from _quality_gauges(b)
        # Certificates as loaded and in use (a replaced file counts once it is loaded).
        days = b.client_cert_days_left
        if days is not None:
            yield _gauge("bridge_hub_client_cert_days_left", [((), days)])
        tls_files = b.ocpp.tls_files
        days = tls_files.server_cert_days_left
        if days is not None:
            yield _gauge("bridge_ocpp_server_cert_days_left", [((), days)])
        hours = tls_files.revocations.hours_left() if tls_files.revocations else None
        if hours is not None:
            yield _gauge("bridge_ocpp_charger_crl_hours_left", [((), hours)])
        checks = CounterMetricFamily(
            "bridge_ocpp_password_checks", _DOC["bridge_ocpp_password_checks_total"].help
        )
        checks.add_metric([], float(b.ocpp.auth.checks.done))
        yield checks
        yield from _upstream(b.ocpp.proxy)


def _upstream(proxy: Proxy | None) -> Iterable[Metric]:
    """Proxy mode; zeros when no charger is proxied, so dashboards need no special case."""
    stats = proxy.stats if proxy is not None else RelayStats()
    connections = proxy.connections if proxy is not None else 0
    yield _gauge("bridge_upstream_connections", [((), float(connections))])
    yield _counter_family("bridge_upstream_handshakes_total", stats.handshakes.items())
    yield _counter_family("bridge_upstream_frames_total", stats.frames.items())
    yield _counter_family("bridge_upstream_relay_errors_total", stats.errors.items())
    doc = _DOC["bridge_upstream_added_latency_seconds"]
    family = HistogramMetricFamily(doc.name, doc.help, labels=doc.labels)
    for direction, counts in stats.latency.items():
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if math.isinf(bound) else repr(bound), float(cumulative)))
        family.add_metric([direction], buckets, stats.latency_sum[direction])
    yield family


def _counter_family(name: str, samples: Iterable[tuple[str, int]]) -> CounterMetricFamily:
    doc = _DOC[name]
    family = CounterMetricFamily(doc.name.removesuffix("_total"), doc.help, labels=doc.labels)
    for label, value in sorted(samples):
        family.add_metric([label], float(value))
    return family


def _gauge(name: str, samples: Iterable[tuple[tuple[str, ...], float]]) -> GaugeMetricFamily:
    doc = _DOC[name]
    family = GaugeMetricFamily(name, doc.help, labels=doc.labels)
    for labels, value in samples:
        family.add_metric(list(labels), value)
    return family
