"""The live status of every connector and EVSE: pure state transitions, no I/O.

The engine turns one OCPP status report into the list of EVSEs whose *OICP* status changed.
Only those changes are worth a push: Preparing → Charging → Finishing is one ``Occupied``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bridge.status.aggregate import STATION_DOWN, evse_status
from bridge.status.registry import Registry
from bridge.status.table import OcppStatus, OicpStatus

STATION = 0  # evse_key: OCPP 1.6 connectorId 0 / the 2.0.1 ChargingStation component
WHOLE_EVSE = 0  # connector_id of the 2.0.1 EVSE component (the whole EVSE evse_key)
#: Unmapped connectors whose last status is kept in memory, per charger.
UNMAPPED_KEPT = 64


@dataclass(frozen=True, slots=True)
class StatusReport:
    """One connector status as a charger reported it."""

    charge_point_id: str
    evse_key: int  # 1.6: connectorId (0 = whole charge point); 2.0.1: evseId
    connector_id: int  # 1.6: same as evse_key; 2.0.1: connectorId within the EVSE (0: all)
    status: OcppStatus


@dataclass(frozen=True, slots=True)
class EvseChange:
    evse_id: str
    charge_point_id: str
    old: OicpStatus
    new: OicpStatus


class StatusEngine:
    """Connector statuses in, per-EVSE OICP statuses out."""

    def __init__(
        self,
        table: Mapping[OcppStatus, OicpStatus],
        registry: Registry,
        *,
        offline_status: OicpStatus = OicpStatus.UNKNOWN,
    ) -> None:
        self.table = table
        self.registry = registry
        self.offline_status = offline_status
        # EvseID → (evse_key, connector_id) → last OCPP status of that connector
        self._connectors: dict[str, dict[tuple[int, int], OcppStatus]] = {}
        # EvseID → (evse_key, status) of the whole EVSE (the 2.0.1 EVSE component)
        self._whole: dict[str, tuple[int, OcppStatus]] = {}
        self._station: dict[str, OcppStatus] = {}
        self._offline: set[str] = set()
        self._evses_of: dict[str, set[str]] = {}
        self._cp_of: dict[str, str] = {}
        self._status: dict[str, OicpStatus] = {}
        # Catalog-driven state (configure_charger): statuses of connectors without an EvseID
        # (kept so a later mapping starts from them), EVSEs not shared with the hub (stock
        # stations) and statuses fed over the API (OCPI → OICP) instead of computed.
        self._unmapped: dict[str, dict[tuple[int, int], OcppStatus]] = {}
        self._unshared: set[str] = set()
        self._fixed: dict[str, OicpStatus] = {}
        for evse_id, cp_id in registry.configured_evse_ids().items():
            self._learn(cp_id, evse_id)

    # -- queries ---------------------------------------------------------------------------
    def status(self, evse_id: str) -> OicpStatus:
        return self._status.get(evse_id, OicpStatus.UNKNOWN)

    def evse_ids(self) -> list[str]:
        """Every EVSE shared with the hub: configured ones plus those learned from templates."""
        if self._unshared:
            return sorted(e for e in self._cp_of if e not in self._unshared)
        return sorted(self._cp_of)

    def snapshot(self) -> dict[str, tuple[str, OicpStatus]]:
        """Every EVSE shared with the hub → (its charge point, its current status)."""
        unshared = self._unshared
        return {
            evse_id: (cp_id, self._status.get(evse_id, OicpStatus.UNKNOWN))
            for evse_id, cp_id in self._cp_of.items()
            if evse_id not in unshared
        }

    def charge_point_of(self, evse_id: str) -> str | None:
        return self._cp_of.get(evse_id)

    def evses_of(self, charge_point_id: str) -> list[str]:
        return sorted(self._evses_of.get(charge_point_id, ()))

    def connectors(self, evse_id: str) -> dict[tuple[int, int], OcppStatus]:
        """(evse_key, connector_id) → last OCPP status, for each connector of an EVSE
        (connector_id 0: the whole EVSE, as a 2.0.1 EVSE component reported it)."""
        mine = dict(self._connectors.get(evse_id, {}))
        whole = self._whole.get(evse_id)
        if whole is not None:
            mine[(whole[0], WHOLE_EVSE)] = whole[1]
        return dict(sorted(mine.items()))

    def down(
        self, charge_point_id: str, evse_id: str | None, evse_key: int
    ) -> list[tuple[int, int]]:
        """Which of the charger's station level (0, 0) and the whole EVSE ``evse_id`` (number
        ``evse_key``: (evse_key, 0)) are down (Unavailable/Faulted) just now."""
        levels = []
        if self._station.get(charge_point_id) in STATION_DOWN:
            levels.append((STATION, 0))
        whole = self._whole.get(evse_id) if self._whole and evse_id is not None else None
        if whole is not None and whole[1] in STATION_DOWN:
            levels.append((evse_key, WHOLE_EVSE))
        return levels

    def ocpp_statuses(self, evse_id: str) -> list[str]:
        """The last OCPP status of each connector of an EVSE (for logs and the API)."""
        return [status.value for status in self.connectors(evse_id).values()]

    def station_status(self, charge_point_id: str) -> OcppStatus | None:
        return self._station.get(charge_point_id)

    def is_offline(self, charge_point_id: str) -> bool:
        return charge_point_id in self._offline

    # -- transitions -----------------------------------------------------------------------
    def restore(
        self,
        connectors: Iterable[tuple[str, int, int, OcppStatus]],
        offline: Iterable[str] = (),
    ) -> None:
        """Rebuild from persisted connector statuses (at start-up); emits no changes."""
        for cp_id, key, connector_id, status in connectors:
            self._set(StatusReport(cp_id, key, connector_id, status))
        self._offline.update(offline)
        for evse_id in self._cp_of:
            self._status[evse_id] = self._compute(evse_id)

    def apply(self, report: StatusReport) -> tuple[str | None, list[EvseChange]]:
        """Record one report. Returns its EvseID (None: station-wide or unmapped) and changes."""
        evse_id = self._set(report)
        if report.evse_key == STATION:
            return None, self._recompute(self.evses_of(report.charge_point_id))
        if evse_id is None:
            return None, []
        return evse_id, self._recompute([evse_id])

    def set_offline(self, charge_point_id: str, offline: bool) -> list[EvseChange]:
        """Mark a charger offline (its EVSEs show ``offline_status``) or back online."""
        if offline == (charge_point_id in self._offline):
            return []
        if offline:
            self._offline.add(charge_point_id)
        else:
            self._offline.discard(charge_point_id)
        return self._recompute(self.evses_of(charge_point_id))

    # -- internals -------------------------------------------------------------------------
    def _set(self, report: StatusReport) -> str | None:
        cp_id = report.charge_point_id
        if report.evse_key == STATION:
            self._station[cp_id] = report.status
            return None
        evse_id = self.registry.evse_id(cp_id, report.evse_key)
        if evse_id is None:
            # Kept in memory only (never stored, never pushed) so that a catalog change that
            # maps this connector shows its status at once; bounded per charger, since a
            # charger may send any number.
            key = (report.evse_key, report.connector_id)
            unmapped = self._unmapped.setdefault(cp_id, {})
            if key in unmapped or len(unmapped) < UNMAPPED_KEPT:
                unmapped[key] = report.status
            return None
        self._learn(cp_id, evse_id)
        if report.connector_id == WHOLE_EVSE:
            self._whole[evse_id] = (report.evse_key, report.status)
        else:
            self._connectors.setdefault(evse_id, {})[(report.evse_key, report.connector_id)] = (
                report.status
            )
        return evse_id

    def _learn(self, cp_id: str, evse_id: str) -> None:
        if evse_id not in self._cp_of:
            self._cp_of[evse_id] = cp_id
            self._evses_of.setdefault(cp_id, set()).add(evse_id)

    def _compute(self, evse_id: str) -> OicpStatus:
        if self._fixed:
            fixed = self._fixed.get(evse_id)
            if fixed is not None:
                return fixed
        cp_id = self._cp_of[evse_id]
        if cp_id in self._offline:
            return self.offline_status
        mine = self._connectors.get(evse_id, {}).values()
        whole = self._whole.get(evse_id)
        return evse_status(
            mine, self.table, self._station.get(cp_id), whole[1] if whole is not None else None
        )

    def _recompute(self, evse_ids: Iterable[str]) -> list[EvseChange]:
        changes = []
        for evse_id in evse_ids:
            old = self._status.get(evse_id, OicpStatus.UNKNOWN)
            new = self._compute(evse_id)
            if new != old:
                self._status[evse_id] = new
                if evse_id not in self._unshared:
                    changes.append(EvseChange(evse_id, self._cp_of[evse_id], old, new))
        return changes

    # -- catalog changes ---------------------------------------------------------------------
    def configure_charger(
        self,
        charge_point_id: str,
        evse_ids: Iterable[str],
        *,
        unshared: Iterable[str] = (),
        fixed: Mapping[str, OicpStatus] | None = None,
    ) -> tuple[list[str], list[EvseChange]]:
        """Take a charger's EVSEs anew after the registry changed for it.

        ``evse_ids``: its EVSEs now; ``unshared``: those the hub must not see (stock);
        ``fixed``: statuses fed over the API instead of computed. The connector statuses known
        so far are kept and sorted under the new EvseIDs (by their OCPP numbers).

        Returns the EvseIDs that were shared and no longer are (they leave the hub) and the
        changes of shared EVSEs, every newly shared one with a known status included (one
        still Unknown reaches the hub with its first report or the next fullLoad, as a
        configured EVSE always has).
        """
        cp_id = charge_point_id
        old = self._evses_of.pop(cp_id, set())
        old_shared = {e for e in old if e not in self._unshared}
        old_status = {e: self._status.get(e, OicpStatus.UNKNOWN) for e in old}
        raw = self._unmapped.pop(cp_id, {})
        for evse_id in old:
            raw.update(self._connectors.pop(evse_id, {}))
            self._cp_of.pop(evse_id, None)
            self._status.pop(evse_id, None)
            self._unshared.discard(evse_id)
            self._fixed.pop(evse_id, None)
        for evse_id in evse_ids:
            self._learn(cp_id, evse_id)
        mine = self._evses_of.setdefault(cp_id, set())
        for (key, connector_id), reported in raw.items():
            target = self.registry.evse_id(cp_id, key)
            if target is not None and target in mine:
                self._connectors.setdefault(target, {})[(key, connector_id)] = reported
            else:
                self._unmapped.setdefault(cp_id, {})[(key, connector_id)] = reported
        self._unshared.update(e for e in unshared if e in mine)
        self._fixed.update({e: s for e, s in (fixed or {}).items() if e in mine})
        changes = []
        for evse_id in sorted(mine):
            status = self._status[evse_id] = self._compute(evse_id)
            if evse_id in self._unshared:
                continue
            if evse_id not in old_shared and status is OicpStatus.UNKNOWN:
                continue
            if evse_id not in old_shared or status != old_status.get(evse_id):
                old_value = old_status.get(evse_id, OicpStatus.UNKNOWN)
                changes.append(EvseChange(evse_id, cp_id, old_value, status))
        withdrawn = sorted(old_shared - {e for e in mine if e not in self._unshared})
        return withdrawn, changes

    def is_shared(self, evse_id: str) -> bool:
        return evse_id in self._cp_of and evse_id not in self._unshared
