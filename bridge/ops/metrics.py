"""Prometheus metrics of one bridge, in a registry of its own.

Event counts (status notifications, pushes, auth failures) are counted as they happen, through
the hooks of ``Ingest``, ``PushWorker`` and ``OcppServer``. The live state is read from the
running bridge at scrape time by the collector ``watch`` registers (``bridge.ops.live_metrics``);
what every metric is called and means is in ``bridge.ops.metric_table``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from bridge.delivery.lane import PushEvent
from bridge.ocpp.failure import Failure
from bridge.ops.live_metrics import LiveCollector, Watched
from bridge.ops.metric_table import BY_NAME
from bridge.ops.push_tally import PushTally
from bridge.status.table import OcppStatus

__all__ = ["BridgeMetrics"]

AUTH_REASONS = frozenset(f.value for f in Failure)
# Pushes take tens of ms on a healthy hub; the client's whole-request timeout is 20 s.
DURATION_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0)

# ``*_created`` series double every counter and no dashboard of ours uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]


def _counter(registry: CollectorRegistry, name: str) -> Counter:
    doc = BY_NAME[name]
    return Counter(name, doc.help, doc.labels, registry=registry)


class BridgeMetrics:
    """The metrics of one bridge; ``watch`` a bridge to export its live state too."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.status_notifications = _counter(self.registry, "bridge_status_notifications_total")
        self.auth_failures = _counter(self.registry, "bridge_ocpp_auth_failures_total")
        self.connections_refused = _counter(self.registry, "bridge_ocpp_connections_refused_total")
        self.ops_refused = _counter(self.registry, "bridge_ops_connections_refused_total")
        self.pushes = PushTally(DURATION_BUCKETS)
        self.registry.register(self.pushes)
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
        self.pushes.add(event.action, event.outcome, event.code, event.duration_s)

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
        self.registry.register(LiveCollector(bridge))

    async def refresh(self) -> None:
        for refresh in self.refreshers:
            await refresh()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition in the format the scraper asked for: (body, content type)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
