"""EVSE network assignments on the one lane: what each network needs sent, and what came of it.

The lane (``bridge.delivery.lane.next_step``) asks :meth:`NetworkPushes.due` which network has
an assignment to send; the push worker sends the body of :meth:`NetworkPushes.body` through
the one lane and reports the outcome here. What a network needs:

* **draft**: its whole assignment whenever an EVSE's group differs from what the hub
  acknowledged (each call overwrites the earlier ones at the hub);
* **active**: only EVSEs the hub has not assigned yet (it never changes an assignment there).

Either way only EVSEs the hub already knows are sent (:class:`HubKnows`); the others are held
until it does. What the hub acknowledged is kept per EVSE (``network_assignment``) and shown
by the API. A body the hub refuses outright is not sent again until the network changes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from bridge.catalog.catalog import Catalog
from bridge.catalog.networks import NetworkBody, NetworkState, desired, unassigned
from bridge.delivery.policy import backoff
from bridge.errors import HubError
from bridge.store.base import AssignmentRow

log = structlog.get_logger("bridge.network")

NETWORK = "network"  # the action name of a network push (logs, metrics)


class HubKnows(Protocol):
    """Whether the hub knows an EVSE, so that it may be assigned to a group."""

    def knows(self, evse_id: str) -> bool: ...


class StatusAcknowledged:
    """The hub knows an EVSE once it acknowledged a status record for it (and still holds it).

    Stands in for "the hub acknowledged the EVSE's data" until EVSE data is pushed: then the
    predicate is that one (see ``docs/how-it-works.md``)."""

    def __init__(self, rows: Mapping[str, Any]) -> None:
        self.rows = rows  # EvseID → EvseRow (the outbox's rows)

    def knows(self, evse_id: str) -> bool:
        row = self.rows.get(evse_id)
        return (
            row is not None and row.hub_holds and row.hub_acked_at is not None and (not row.removed)
        )


class Store(Protocol):
    def put_assignment(self, row: AssignmentRow) -> None: ...


@dataclass
class _Lane:
    """The lane state of one network."""

    not_before: float = 0.0  # monotonic; own backoff after a retryable refusal
    failures: int = 0
    refused: str | None = None  # the body (JSON key) the hub refused: not sent again as is
    last_error: str | None = None


@dataclass
class NetworkPushes:
    catalog: Catalog
    hub: HubKnows
    store: Store
    initial: float = 1.0
    cap: float = 300.0
    #: Network → EvseID → (group, acknowledged at, wall clock).
    acked: dict[str, dict[str, tuple[str, float | None]]] = field(default_factory=dict)
    lanes: dict[str, _Lane] = field(default_factory=dict)
    #: Called when something to send may have appeared (wakes the lane).
    wake: Callable[[], None] | None = None
    #: A grouped EVSE became known to the hub: recompute at this monotonic time (batched, see
    #: :meth:`hub_learned`).
    learned_at: float | None = None
    #: How long first acknowledgments are gathered before the networks are recomputed.
    batch_s: float = 0.5
    _cache: dict[str, dict[str, Any] | None] | None = None
    _grouped: set[str] | None = None  # every EVSE in a group of some network

    def restore(self, rows: Iterable[AssignmentRow]) -> None:
        """What the hub acknowledged, as stored (at start; a new leader: replacing it all)."""
        self.acked.clear()
        for row in rows:
            self.acked.setdefault(row.network, {})[row.evse_id] = (row.group_name, row.acked_at)
        self._cache = None

    def follow(self, rows: Iterable[AssignmentRow]) -> None:
        """What the leader recorded as acknowledged (a follower: its API checks against it)."""
        for row in rows:
            self.acked.setdefault(row.network, {})[row.evse_id] = (row.group_name, row.acked_at)
        self._cache = None

    def changed(self) -> None:
        """A network, a station or the hub's knowledge of an EVSE changed: decide again."""
        self._cache = self._grouped = None
        if self.wake is not None:
            self.wake()

    def hub_learned(self, evse_id: str) -> None:
        """The hub's knowledge of this EVSE changed (a record inserted or deleted). Only if a
        network groups it, and batched over ``batch_s``: at a cold start thousands of first
        inserts must not each recompute every network (ms per 10,000 grouped EVSEs)."""
        if self._grouped is None:
            self._grouped = {e for entry in self.catalog.networks.values()
                             for e in desired(entry.body)}  # fmt: skip
        if evse_id in self._grouped and self.learned_at is None:
            self.learned_at = time.monotonic() + self.batch_s

    # -- the lane's questions ----------------------------------------------------------------
    def _bodies(self, now: float | None = None) -> dict[str, dict[str, Any] | None]:
        if self.learned_at is not None and (now if now is not None else time.monotonic()) >= (
            self.learned_at
        ):
            self._cache, self.learned_at = None, None
        if self._cache is None:
            self._cache = {name: self._body(entry.body)
                           for name, entry in self.catalog.networks.items()}  # fmt: skip
        return self._cache

    def due(self, now: float) -> str | None:
        for name, body in self._bodies(now).items():
            lane = self.lanes.get(name)
            if body is not None and (lane is None or now >= lane.not_before):
                return name
        return None

    def next_due(self) -> float | None:
        times = [self.lanes[n].not_before for n, b in self._bodies().items()
                 if b is not None and n in self.lanes]  # fmt: skip
        if self.learned_at is not None:
            times.append(self.learned_at)
        return min(times) if times else None

    def body(self, name: str) -> dict[str, Any] | None:
        return self._bodies().get(name)

    def _body(self, network: NetworkBody) -> dict[str, Any] | None:
        """The body the lane sends now: None if nothing is due, or if the hub refused exactly
        this body (it waits until the network changes, or :meth:`retry_now`)."""
        body = self.assignment(network)
        lane = self.lanes.get(network.id)
        if body is not None and lane is not None and lane.refused == _key(body):
            return None
        return body

    def assignment(self, network: NetworkBody) -> dict[str, Any] | None:
        """The eRoamingEVSEAssignment body this network needs sent (None: nothing)."""
        plan = self.plan(network)
        if not plan:
            return None
        groups: dict[str, list[str]] = {}
        for evse_id, group in plan.items():
            groups.setdefault(group, []).append(evse_id)
        return {"NetworkName": network.id, "GroupsAssignments": [
            {"GroupName": g.name, "Evses": groups[g.name]}
            for g in network.groups if g.name in groups
        ]}  # fmt: skip

    def plan(self, network: NetworkBody) -> dict[str, str]:
        """EvseID → group to send now (in the network's group order)."""
        acked = self.acked.get(network.id, {})
        known = {e: g for e, g in desired(network).items() if self.hub.knows(e)}
        if network.state is NetworkState.ACTIVE:
            return {e: g for e, g in known.items() if e not in acked}
        if all(acked.get(e, (None,))[0] == g for e, g in known.items()):
            return {}
        return known  # draft: the whole (known) assignment overwrites

    # -- outcomes -----------------------------------------------------------------------------
    def acknowledged(self, name: str, body: Mapping[str, Any], at: float) -> int:
        """The hub took ``body``: record each EVSE's group (staged; the worker commits)."""
        acked = self.acked.setdefault(name, {})
        count = 0
        for assignment in body["GroupsAssignments"]:
            for evse_id in assignment["Evses"]:
                acked[evse_id] = (assignment["GroupName"], at)
                self.store.put_assignment(AssignmentRow(name, evse_id, assignment["GroupName"], at))
                count += 1
        self.lanes.pop(name, None)
        self._cache = None
        return count

    def refused(self, name: str, body: Mapping[str, Any], exc: HubError, *, retry: bool) -> float:
        """The hub refused this request: back off (retryable) or hold the body until the
        network changes. Returns the backoff (0: held)."""
        lane = self.lanes.setdefault(name, _Lane())
        lane.last_error = str(exc)
        self._cache = None
        if retry:
            lane.failures += 1
            wait = backoff(lane.failures, self.initial, self.cap, exc.retry_after)
            lane.not_before = time.monotonic() + wait
            return wait
        lane.refused = _key(body)
        return 0.0

    def retry_now(self) -> None:
        """Forget earlier refusals and backoffs: every due network is sent again now."""
        self.lanes.clear()
        self.changed()

    def failed(self, name: str) -> bool:
        """Whether the last attempt for this network was refused (since :meth:`retry_now`)."""
        lane = self.lanes.get(name)
        return lane is not None and lane.last_error is not None

    # -- what the API and the metrics show ----------------------------------------------------
    def hub_assigned(self, name: str) -> dict[str, str]:
        return {e: g for e, (g, _) in self.acked.get(name, {}).items()}

    def view(self, network: NetworkBody) -> dict[str, Any]:
        """Per EVSE: its group here, the hub's, and what happens next."""
        stations = self.catalog.stations
        acked = self.acked.get(network.id, {})
        wanted = desired(network)
        to_send = self.plan(network)
        loose = unassigned(network, stations)
        rows = []
        for evse_id in sorted(set(wanted) | set(loose) | set(acked)):
            group = wanted.get(evse_id)
            hub_group, at = acked.get(evse_id, (None, None))
            if group is None and evse_id in loose:
                state = "unassigned"
            elif group is None:  # left the network here; the service cannot unassign it
                state = "hub_only"
            elif evse_id in to_send:
                state = "pending"
            elif group is not None and not self.hub.knows(evse_id) and hub_group is None:
                state = "held"
            elif hub_group == group:
                state = "acknowledged"
            else:
                state = "fixed" if network.state is NetworkState.ACTIVE else "acknowledged"
            rows.append({"evse_id": evse_id, "group": group, "hub_group": hub_group,
                         "hub_acknowledged_at": _rfc3339(at), "state": state})  # fmt: skip
        lane = self.lanes.get(network.id)
        return {"unassigned": loose, "assignments": rows,
                "last_error": lane.last_error if lane is not None else None}  # fmt: skip

    def without_group(self) -> dict[str, list[str]]:
        """Network → its EVSEs in no group (only networks that have some)."""
        stations = self.catalog.stations
        found = {name: unassigned(entry.body, stations)
                 for name, entry in self.catalog.networks.items()}  # fmt: skip
        return {name: evses for name, evses in found.items() if evses}


def _key(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True)


def _rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
