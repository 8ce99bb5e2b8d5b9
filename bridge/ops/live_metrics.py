"""The gauges read from the running bridge on every scrape (``BridgeMetrics.watch``).

Everything that is a state (who is connected, what is pending, when the last fullLoad went
out) is read at scrape time, so it cannot drift from what the status API shows. The
data-quality gauges are the one thing kept between scrapes (too costly to make each time): a
scrape makes them again before rendering when the catalog changed
(``bridge.ops.quality_metrics``); here they are only read.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from bridge import __version__
from bridge.ocpp.proxy import LATENCY_BUCKETS, Proxy, RelayStats
from bridge.ocpp.rpc import PROTOCOLS
from bridge.ops.metric_table import BY_NAME
from bridge.status.table import OICP_STATUSES

__all__ = ["LiveCollector", "Watched"]


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


class LiveCollector:
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
            doc = BY_NAME[f"bridge_leader_{name}_total"]
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
            "bridge_ocpp_password_checks", BY_NAME["bridge_ocpp_password_checks_total"].help
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
    doc = BY_NAME["bridge_upstream_added_latency_seconds"]
    family = HistogramMetricFamily(doc.name, doc.help, labels=doc.labels)
    for direction, counts in stats.latency.items():
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if math.isinf(bound) else repr(bound), float(cumulative)))
        family.add_metric([direction], buckets, stats.latency_sum[direction])
    yield family


def _counter_family(name: str, samples: Iterable[tuple[str, int]]) -> CounterMetricFamily:
    doc = BY_NAME[name]
    family = CounterMetricFamily(doc.name.removesuffix("_total"), doc.help, labels=doc.labels)
    for label, value in sorted(samples):
        family.add_metric([label], float(value))
    return family


def _gauge(name: str, samples: Iterable[tuple[tuple[str, ...], float]]) -> GaugeMetricFamily:
    doc = BY_NAME[name]
    family = GaugeMetricFamily(name, doc.help, labels=doc.labels)
    for labels, value in samples:
        family.add_metric(list(labels), value)
    return family
