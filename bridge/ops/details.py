"""The details of ``/healthz``: how the hub and the push queue are doing.

They never make the bridge unhealthy or unready (a hub outage is not cured by a restart, and
the bridge keeps taking chargers through it); they say what to look at.
"""

from __future__ import annotations

from typing import Any, Protocol

from bridge.api.envelope import iso
from bridge.delivery.hubhealth import HubHealth
from bridge.delivery.outbox import Outbox

__all__ = ["DetailSource", "health_details"]


class _Worker(Protocol):
    @property
    def paused_reason(self) -> str | None: ...

    @property
    def in_flight(self) -> bool: ...


class DetailSource(Protocol):
    """What the details look at (the running bridge provides it)."""

    @property
    def hub(self) -> HubHealth: ...

    @property
    def worker(self) -> _Worker | None: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def last_full_load(self) -> float | None: ...

    def replication_status(self) -> dict[str, Any]: ...


def health_details(bridge: DetailSource) -> dict[str, Any]:
    hub, worker, outbox = bridge.hub, bridge.worker, bridge.outbox
    return {
        "replica": bridge.replication_status(),
        "hub": {
            "reachable": hub.reachable,
            "paused": worker.paused_reason if worker is not None else None,
            "consecutive_failures": hub.consecutive_failures,
            "last_success_at": iso(hub.last_success_at),
            "last_failure_at": iso(hub.last_failure_at),
            "last_error": str(hub.last_error) if hub.last_error is not None else None,
        },
        "push": {
            "pending": len(outbox),
            "oldest_pending_age_s": round(outbox.oldest_pending_age(), 1),
            "parked": sum(1 for row in outbox.rows.values() if row.parked is not None),
            "in_flight": worker.in_flight if worker is not None else False,
            "last_full_load": iso(bridge.last_full_load),
        },
    }
