"""The catalog in memory and the changes made to it: plain data in, plain data out, no I/O.

A write is planned first (``plan_*``: validate, stamp ``last_updated`` and versions, return the
changes) and applied after (``apply``), so a refused write leaves nothing behind and a batch item
applies fully or not at all. ``last_updated`` cascades as in OCPI: a changed connector stamps
its EVSE, a changed EVSE its station and the station's location.
"""

from __future__ import annotations

import hashlib
import json
from bisect import insort
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from bridge.catalog.enums import DeploymentState, Source, StatusSource
from bridge.catalog.model import (
    ConnectorBody,
    EvseBody,
    EvsePatch,
    LocationBody,
    LocationPatch,
    StationBody,
    StationPatch,
    TemplateBody,
)
from bridge.catalog.networks import READ_ONLY, NetworkBody, NetworkPatch, check_network
from bridge.catalog.rules import (
    SetUp,
    bad,
    check_location,
    check_station,
    template_evse_id,
    valid_evse_id,
)
from bridge.errors import CatalogError
from bridge.status.table import OcpiStatus

Kind = Literal["location", "station", "template", "network"]
T = TypeVar("T", LocationBody, StationBody, TemplateBody, NetworkBody)
_STATION_READ_ONLY = {"source": None, "has_password": None, "boot": None, "connection": None,
                      "password": None}  # fmt: skip
_CONTENT_EXCLUDE: Any = {
    "last_updated": True,
    "evses": {"__all__": {"last_updated": True, "connectors": {"__all__": {"last_updated"}}}},
}


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """One stored object: its body, who owns it, its version (the ETag) and, for a station,
    the scrypt hash of its password."""

    body: T
    source: Source
    version: int
    password_hash: str | None = None

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    before: Entry[Any] | None
    after: Entry[Any]

    @property
    def id(self) -> str:
        return str(self.after.body.id)

    @property
    def created(self) -> bool:
        return self.before is None


def content(body: BaseModel) -> Any:
    """What a body says, without the stamps the bridge sets (for "did anything change?")."""
    exclude = _CONTENT_EXCLUDE if isinstance(body, StationBody) else {"last_updated"}
    return body.model_dump(mode="json", exclude=exclude)


class Catalog:
    """Locations, stations and templates with the indexes the rules need (EvseID, uid)."""

    def __init__(self, setup: SetUp | None = None) -> None:
        self.setup = setup or SetUp()
        self.locations: dict[str, Entry[LocationBody]] = {}
        self.stations: dict[str, Entry[StationBody]] = {}
        self.templates: dict[str, Entry[TemplateBody]] = {}
        self.networks: dict[str, Entry[NetworkBody]] = {}
        self.evse_owner: dict[str, str] = {}  # EvseID → station id
        self.uid_owner: dict[str, str] = {}  # EVSE uid → station id
        self._order: dict[Kind, list[str]] = {"location": [], "station": [], "template": [],
                                              "network": []}  # fmt: skip
        #: Counts the changes applied: what is derived from the catalog and kept (the
        #: data-quality gauges of /metrics) is current while this has not moved.
        self.revision = 0

    # -- reading ---------------------------------------------------------------------------
    def table(self, kind: Kind) -> Mapping[str, Entry[Any]]:
        if kind == "location":
            return self.locations
        if kind == "station":
            return self.stations
        if kind == "network":
            return self.networks
        return self.templates

    def ids(self, kind: Kind) -> list[str]:
        """Every id of a kind, sorted (kept sorted on insert: objects are never deleted)."""
        return self._order[kind]

    def get(self, kind: Kind, object_id: str) -> Entry[Any]:
        entry = self.table(kind).get(object_id)
        if entry is None:
            raise CatalogError("", f"unknown {kind} {object_id!r}", status_code=2003,
                               http_status=404)  # fmt: skip
        return entry

    def stations_at(self, location_id: str) -> Iterator[Entry[StationBody]]:
        return (e for e in self.stations.values() if e.body.location_id == location_id)

    # -- applying --------------------------------------------------------------------------
    def apply(self, changes: Iterable[Change]) -> None:
        for change in changes:
            table: dict[str, Entry[Any]] = self.table(change.kind)  # type: ignore[assignment]
            object_id = change.id
            if object_id not in table:
                insort(self._order[change.kind], object_id)
            table[object_id] = change.after
            self.revision += 1
            if change.kind == "station":
                if change.before is not None:
                    for evse in change.before.body.evses:
                        self.evse_owner.pop(evse.evse_id, None)
                        self.uid_owner.pop(evse.uid, None)
                for evse in change.after.body.evses:
                    self.evse_owner[evse.evse_id] = object_id
                    self.uid_owner[evse.uid] = object_id

    # -- locations -------------------------------------------------------------------------
    def plan_location(
        self, body: LocationBody, *, now: datetime, source: Source = Source.API,
        create_only: bool = False,
    ) -> list[Change]:  # fmt: skip
        before = self.locations.get(body.id)
        self._writable("location", before, source, create_only)
        check_location(body)
        if before is not None and content(before.body) == content(body):
            return []
        after = Entry(body.model_copy(update={"last_updated": now}), source, _next(before))
        return [Change("location", before, after)]

    def patched_location(self, location_id: str, patch: LocationPatch) -> LocationBody:
        before = self.get("location", location_id).body
        return _merge(before, patch, LocationBody)

    # -- templates -------------------------------------------------------------------------
    def plan_template(
        self, body: TemplateBody, *, now: datetime, create_only: bool = False
    ) -> list[Change]:
        before = self.templates.get(body.id)
        self._writable("template", before, Source.API, create_only)
        if before is not None and content(before.body) == content(body):
            return []
        after = Entry(body.model_copy(update={"last_updated": now}), Source.API, _next(before))
        return [Change("template", before, after)]

    # -- networks --------------------------------------------------------------------------
    def plan_network(
        self, body: NetworkBody, *, now: datetime, source: Source = Source.API,
        create_only: bool = False, hub_assigned: Mapping[str, str] | None = None,
    ) -> list[Change]:  # fmt: skip
        """Validate ``body`` as the network's new state (``hub_assigned``: EvseID → group the
        hub acknowledged for it); ``force`` is checked, never stored."""
        before = self.networks.get(body.id)
        self._writable("network", before, source, create_only)
        check_network(
            body, before.body if before is not None else None, stations=self.stations,
            evse_owner=self.evse_owner, setup=self.setup, hub_assigned=hub_assigned or {},
        )  # fmt: skip
        body = body.model_copy(update=READ_ONLY)
        if before is not None and content(before.body) == content(body):
            return []
        after = Entry(body.model_copy(update={"last_updated": now}), source, _next(before))
        return [Change("network", before, after)]

    def patched_network(self, network_id: str, patch: NetworkPatch) -> NetworkBody:
        return _merge(self.get("network", network_id).body, patch, NetworkBody)

    # -- stations --------------------------------------------------------------------------
    def plan_station(
        self,
        body: StationBody,
        *,
        now: datetime,
        password_hash: str | None = None,
        source: Source = Source.API,
        create_only: bool = False,
    ) -> list[Change]:
        """Validate ``body`` as the station's new state and return the changes it makes
        (the station and, when its EVSEs changed, its location)."""
        before = self.stations.get(body.id)
        self._writable("station", before, source, create_only)
        body = body.model_copy(update=_STATION_READ_ONLY)
        if before is None and not body.evses and body.charge_station_template_id is not None:
            body = self._from_template(body)
        body = _normalise_status(body)
        stored_hash = password_hash or (before.password_hash if before is not None else None)
        check_station(
            body, before.body if before is not None else None, source=source,
            password_hash=stored_hash if source is Source.API else "file", locations=self.locations,
            evse_owner=self.evse_owner, uid_owner=self.uid_owner, setup=self.setup,
        )  # fmt: skip
        body = _stamp(body, before.body if before is not None else None, now)
        if (
            before is not None
            and content(before.body) == content(body)
            and stored_hash == before.password_hash
        ):
            return []
        after = Entry(body, source, _next(before), stored_hash if source is Source.API else None)
        changes = [Change("station", before, after)]
        evses_changed = before is None or any(
            e.last_updated == now for e in body.evses
        ) or [e.uid for e in body.evses] != [e.uid for e in before.body.evses]  # fmt: skip
        touched = {body.location_id} if evses_changed else set()
        if before is not None and before.body.location_id != body.location_id:
            touched |= {before.body.location_id, body.location_id}
        for location_id in sorted(t for t in touched if t is not None):
            location = self.locations[location_id]
            stamped = location.body.model_copy(update={"last_updated": now})
            changes.append(
                Change(
                    "location",
                    location,
                    replace(location, body=stamped, version=location.version + 1),
                )
            )
        return changes  # fmt: skip

    def patched_station(self, station_id: str, patch: StationPatch) -> StationBody:
        return _merge(self.get("station", station_id).body, patch, StationBody)

    def patched_evse(self, station_id: str, uid: str, patch: EvsePatch) -> StationBody:
        station = self.get("station", station_id).body
        evses = list(station.evses)
        for n, evse in enumerate(evses):
            if evse.uid == uid:
                evses[n] = _merge(evse, patch, EvseBody)
                break
        else:
            raise CatalogError("", f"unknown EVSE {uid!r} of station {station_id!r}",
                               status_code=2003, http_status=404)  # fmt: skip
        # Validated again from plain data: the station's own rules (no EvseID twice) apply.
        data = station.model_dump(exclude={"password", "evses"})
        try:
            return StationBody.model_validate({**data, "evses": [e.model_dump() for e in evses]})
        except ValidationError as exc:
            error = exc.errors()[0]
            raise bad("evses", str(error["msg"]).removeprefix("Value error, ")) from None

    def _from_template(self, body: StationBody) -> StationBody:
        template_id = body.charge_station_template_id
        template = self.templates.get(template_id or "")
        if template is None:
            raise bad("charge_station_template_id", f"template {template_id!r} does not exist")
        evses = []
        for n, layout in enumerate(template.body.evses):
            evse_id = template_evse_id(self.setup, body.id, layout.ocpp_ids[0])
            if not valid_evse_id(evse_id):
                raise bad(
                    f"evses[{n}].evse_id", f"the EvseID {evse_id!r} made from "
                    "catalog.evse_id_template is not an OICP EvseID; give evses explicitly"
                )  # fmt: skip
            evses.append(EvseBody(
                uid=_uid(evse_id), evse_id=evse_id, ocpp_ids=layout.ocpp_ids,
                capabilities=layout.capabilities,
                connectors=[c.model_dump() for c in layout.connectors],
            ))  # fmt: skip
        return body.model_copy(update={"evses": evses})

    def _writable(
        self, kind: Kind, before: Entry[Any] | None, source: Source, create_only: bool
    ) -> None:
        if before is None:
            return
        if create_only:
            raise CatalogError("id", f"{kind} {before.body.id!r} exists already; PUT or PATCH "
                               "changes it", status_code=2000)  # fmt: skip
        if before.source is Source.FILE and source is not Source.FILE:
            raise CatalogError(
                "", f"{kind} {before.body.id!r} comes from the configuration file (chargers:); "
                "change it there", status_code=2000,
            )  # fmt: skip


# -- file import ---------------------------------------------------------------------------------
def file_station(
    charge_point_id: str, evses: Mapping[int, str], profile: int | None
) -> StationBody:
    """The catalog form of a ``chargers:`` entry of the configuration file."""
    keys: dict[str, list[int]] = {}
    for key, evse_id in sorted(evses.items()):
        keys.setdefault(evse_id, []).append(key)
    return StationBody(
        id=charge_point_id, deployment_state=DeploymentState.PRODUCTION,
        security_profile=profile,
        evses=[EvseBody(uid=_uid(evse_id), evse_id=evse_id, ocpp_ids=numbers)
               for evse_id, numbers in sorted(keys.items(), key=lambda kv: kv[1])],
    )  # fmt: skip


def _uid(evse_id: str) -> str:
    """A stable uid for an EVSE known only by its EvseID (file stations, templates)."""
    if len(evse_id) <= 36:
        return evse_id
    return evse_id[:27] + "~" + hashlib.sha1(evse_id.encode()).hexdigest()[:8]


# -- helpers -------------------------------------------------------------------------------------
def _next(before: Entry[Any] | None) -> int:
    return 1 if before is None else before.version + 1


M = TypeVar("M", bound=BaseModel)


def _merge(before: BaseModel, patch: BaseModel, model: type[M]) -> M:
    """``before`` with the fields ``patch`` sets; validated again as a whole."""
    changes = patch.model_dump(exclude_unset=True, exclude={"last_updated"})
    if "password" in patch.model_fields_set and getattr(patch, "password", None) is not None:
        changes["password"] = patch.password  # type: ignore[attr-defined]
    data = before.model_dump(exclude={"password", "force"})
    data.update(changes)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
        raise bad(field.lstrip("."), str(error["msg"]).removeprefix("Value error, ")) from None


def _normalise_status(body: StationBody) -> StationBody:
    """For OCPP-fed stations the status is computed, not written: only REMOVED is kept."""
    if body.status_source is StatusSource.API:
        evses = [e.model_copy(update={"oicp_status": None, "hub_data": None})
                 for e in body.evses]  # fmt: skip
        return body.model_copy(update={"evses": evses})
    read_only = {"oicp_status": None, "hub_data": None}
    evses = [
        e.model_copy(update=read_only) if e.status in (None, OcpiStatus.REMOVED)
        else e.model_copy(update={"status": None, **read_only})
        for e in body.evses
    ]  # fmt: skip
    return body.model_copy(update={"evses": evses})


def _stamp(body: StationBody, before: StationBody | None, now: datetime) -> StationBody:
    """Set last_updated on what changed: connector → EVSE → station."""
    old = {e.uid: e for e in before.evses} if before is not None else {}
    evses = []
    for evse in body.evses:
        prev = old.get(evse.uid)
        prev_connectors = {c.id: c for c in prev.connectors} if prev is not None else {}
        connectors = []
        for connector in evse.connectors:
            p = prev_connectors.get(connector.id)
            same = p is not None and _plain(p) == _plain(connector)
            stamp = p.last_updated if same and p is not None else now
            connectors.append(connector.model_copy(update={"last_updated": stamp}))
        stamped = evse.model_copy(update={"connectors": connectors})
        same = prev is not None and content_evse(prev) == content_evse(stamped)
        stamp = prev.last_updated if same and prev is not None else now
        evses.append(stamped.model_copy(update={"last_updated": stamp}))
    body = body.model_copy(update={"evses": evses})
    unchanged = before is not None and content(before) == content(body)
    stamp = before.last_updated if unchanged and before is not None else now
    return body.model_copy(update={"last_updated": stamp})


def content_evse(evse: EvseBody) -> Any:
    exclude: Any = {"last_updated": True, "connectors": {"__all__": {"last_updated"}}}
    return evse.model_dump(mode="json", exclude=exclude)


def _plain(connector: ConnectorBody) -> str:
    return json.dumps(connector.model_dump(mode="json", exclude={"last_updated"}), sort_keys=True)
