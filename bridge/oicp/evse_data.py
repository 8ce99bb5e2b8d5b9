"""The EVSE data service: the catalog's EVSEs as records in the data outbox.

Every catalog change that touches an EVSE's record (its location, its charge station, the
station's EVSEs and connectors) rebuilds the records of the EVSEs concerned
(:mod:`bridge.oicp.records`) and hands them to the data outbox, staged with the change itself
(one transaction). At start every record is rebuilt (the configuration's operator facts or the
OICP version may have changed). At each daylight-saving change of a location's zone its
records are rebuilt too: ``TimeZone`` is the offset in force, so the hub gets an update.

Which EVSEs have data: those of a charge station at a location whose EVSE has connectors (the
configuration file's stations have neither: their data, if any, is not the bridge's to push,
and their status goes unheld). A record is wanted at the hub while the station is in
production, the location is published and the EVSE is not REMOVED.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import structlog

from bridge.catalog.catalog import Catalog, Change, Entry, content
from bridge.catalog.enums import DeploymentState
from bridge.catalog.facts import OperatorFacts
from bridge.catalog.model import LocationBody, StationBody
from bridge.delivery.data_outbox import DataOutbox
from bridge.oicp.evse_schema import Version
from bridge.oicp.records import RecordFacts, build_record, utc_offset
from bridge.status.table import OcpiStatus

log = structlog.get_logger("bridge.evse_data")


class EvseDataService:
    def __init__(
        self,
        catalog: Catalog,
        outbox: DataOutbox,
        *,
        defaults: OperatorFacts,
        version: Version = "2.3",
        language: str = "en",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.catalog = catalog
        self.outbox = outbox
        self.defaults = defaults
        self.version: Version = version
        self.language = language
        self.now = now
        self._by_station: dict[str, set[str]] = {}  # station → EvseIDs with a data row
        self._offsets: dict[str, str] = {}  # IANA zone → the UTC offset its records carry
        #: Called with (EvseID, field errors) when an EVSE's record starts or stops failing.
        self.on_invalid: Callable[[str, list[str]], None] | None = None

    # -- building ------------------------------------------------------------------------------
    def rebuild_all(self) -> int:
        """Every record from the catalog (at start); returns how many EVSEs have data."""
        self._by_station.clear()
        for row in self.outbox.rows.values():
            self._by_station.setdefault(row.charge_point_id, set()).add(row.evse_id)
        for station_id in set(self.catalog.stations) | set(self._by_station):
            self.station_changed(station_id)
        return sum(len(v) for v in self._by_station.values())

    def catalog_changed(self, changes: Iterable[Change]) -> None:
        """Rebuild what the changes touch (staged with them; the caller commits)."""
        stations: set[str] = set()
        for change in changes:
            if change.kind == "station":
                stations.add(change.id)
            elif change.kind == "location" and _says_more(change):
                # Only a location whose content changed: a station's write stamps its location's
                # last_updated too (OCPI), which no record carries; rebuilding every station of
                # the location for it made a batch of N stations at one location cost N².
                stations.update(e.body.id for e in self.catalog.stations_at(change.id))
        for station_id in sorted(stations):
            self.station_changed(station_id)

    def station_changed(self, station_id: str) -> None:
        entry = self.catalog.stations.get(station_id)
        built_ids: set[str] = set()
        if entry is not None:
            built_ids = self._build_station(entry)
        for evse_id in self._by_station.get(station_id, set()) - built_ids:
            self.outbox.withdraw(evse_id)  # no longer an EVSE of this station with data
        known = self._by_station.setdefault(station_id, set())
        known |= built_ids

    def _build_station(self, entry: Entry[StationBody]) -> set[str]:
        body = entry.body
        location = self.catalog.locations.get(body.location_id or "")
        if location is None:
            return set()
        loc: LocationBody = location.body
        facts = RecordFacts(loc.operator.over(self.defaults), self.language)
        now = self.now()
        self._offsets.setdefault(loc.time_zone, utc_offset(loc.time_zone, now))
        shared = body.deployment_state is DeploymentState.PRODUCTION and loc.publish
        built_ids = set()
        for evse in body.evses:
            if not evse.connectors:
                continue
            built = build_record(loc, body, evse, facts, now=now, version=self.version)
            want = shared and evse.status is not OcpiStatus.REMOVED
            if self.outbox.set_built(body.id, built, want=want):
                errors = [str(e) for e in built.errors]
                # A record that fails is a warning; one that passes again is good news (INFO).
                emit = log.warning if errors else log.info
                emit("evse_data.invalid" if errors else "evse_data.valid",
                     evse_id=evse.evse_id, charge_point_id=body.id, errors=errors)  # fmt: skip
                if self.on_invalid is not None:
                    self.on_invalid(evse.evse_id, errors)
            built_ids.add(evse.evse_id)
        return built_ids

    # -- daylight saving -----------------------------------------------------------------------
    def offsets_changed(self) -> list[str]:
        """Zones whose UTC offset differs from the one their records carry; rebuilds their
        locations' records (an update of each goes to the hub)."""
        now = self.now()
        changed = [z for z, o in self._offsets.items() if utc_offset(z, now) != o]
        for zone in changed:
            self._offsets[zone] = utc_offset(zone, now)
            locations = [e.body.id for e in self.catalog.locations.values()
                         if e.body.time_zone == zone]  # fmt: skip
            stations = sorted({s.body.id for loc in locations
                               for s in self.catalog.stations_at(loc)})  # fmt: skip
            for station_id in stations:
                self.station_changed(station_id)
            log.info("evse_data.offset_changed", zone=zone, offset=self._offsets[zone],
                     stations=len(stations))  # fmt: skip
        return changed


async def watch_offsets(
    service: EvseDataService, commit: Callable[[], object], interval: float = 30.0
) -> None:
    """Look for a changed UTC offset every ``interval`` seconds (a DST change is at most that
    late at the hub); rebuilt records are committed with the next group commit."""
    while True:
        await asyncio.sleep(interval)
        if service.offsets_changed():
            commit()


def _says_more(change: Change) -> bool:
    """A created location, or one whose content changed (not only its last_updated)."""
    before = change.before
    return before is None or content(before.body) != content(change.after.body)
