"""The catalog, live: every accepted change is durable and in force before it is confirmed.

A change (planned by ``bridge.catalog``) is put into force in memory (the registry and the
credentials the OCPP handshake checks, the status engine's EVSEs, what the hub is told), its
catalog rows and outbox rows are staged together and committed in one transaction, then the
caller answers. Each collaborator is reached through the narrow interface below, not through
the bridge.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import structlog

from bridge.catalog.catalog import Catalog, Change, Entry, file_station
from bridge.catalog.enums import DeploymentState, Source, StatusSource
from bridge.catalog.model import LocationBody, StationBody, TemplateBody, utc_now
from bridge.catalog.networks import NetworkBody
from bridge.errors import ConfigError
from bridge.status.engine import EvseChange
from bridge.status.table import OCPI_TO_OICP, OcpiStatus, OicpStatus
from bridge.store.base import CatalogRow

log = structlog.get_logger("bridge.catalog")

_TABLES = {"location": "catalog_location", "station": "catalog_station",
           "template": "catalog_template", "network": "catalog_network"}  # fmt: skip
_KINDS = {table: kind for kind, table in _TABLES.items()}
_MODELS: dict[str, type[Any]] = {"location": LocationBody, "station": StationBody,
                                 "template": TemplateBody, "network": NetworkBody}  # fmt: skip


class Registry(Protocol):
    def set_charger(self, charge_point_id: str, evses: Mapping[int, str] | None) -> None: ...


class Credentials(Protocol):
    def set_station(
        self, charge_point_id: str, profile: int | None, password_hash: str | None
    ) -> None: ...

    def has_password(self, charge_point_id: str) -> bool: ...


class Engine(Protocol):
    def configure_charger(
        self,
        charge_point_id: str,
        evse_ids: Iterable[str],
        *,
        unshared: Iterable[str] = (),
        fixed: Mapping[str, OicpStatus] | None = None,
    ) -> tuple[list[str], list[EvseChange]]: ...


class HubSet(Protocol):
    """What the hub is told (the outbox): "these EVSEs are new or changed", "this one leaves"."""

    def apply(self, changes: Iterable[EvseChange]) -> None: ...

    def withdraw(self, evse_id: str) -> None: ...


class DataHook(Protocol):
    """EVSE data (``bridge.oicp.evse_data``): rebuild the records the changes touch."""

    def catalog_changed(self, changes: Iterable[Change]) -> None: ...


class Connections(Protocol):
    def disconnect(self, charge_point_id: str, reason: str) -> bool: ...


class Store(Protocol):
    def put_catalog(self, row: CatalogRow) -> None: ...

    async def commit(self) -> None: ...


class LiveCatalog:
    def __init__(
        self,
        catalog: Catalog,
        store: Store,
        *,
        registry: Registry,
        engine: Engine,
        hub: HubSet,
        credentials: Credentials | None = None,
        connections: Connections | None = None,
        data: DataHook | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.registry = registry
        self.engine = engine
        self.hub = hub
        self.credentials = credentials
        self.connections = connections
        self.data = data
        #: Called after a network or a station changed (network assignments are due again).
        self.on_networks: Callable[[], None] | None = None

    # -- start-up --------------------------------------------------------------------------
    def load(self, rows: Sequence[CatalogRow]) -> None:
        """Read the stored catalog (at start, before connector statuses are restored)."""
        changes = []
        for row in rows:
            kind = _KINDS[row.table]
            body = _MODELS[kind].model_validate_json(row.body)
            password_hash = row.extra[1] if kind == "station" else None
            entry = Entry(body, Source(row.source), row.version, password_hash)
            changes.append(Change(kind, None, entry))  # type: ignore[arg-type]
        self.catalog.apply(changes)

    def import_file(self, chargers: Mapping[str, Any], now: datetime | None = None) -> list[Change]:
        """Bring the file's ``chargers:`` into the catalog (idempotent; staged, not committed).

        Stations the file no longer lists become deprecated. A station of the API with an ID
        the file also uses is a configuration error: one owner per station.
        """
        now = now or utc_now()
        changes: list[Change] = []
        for cp_id, charger in chargers.items():
            existing = self.catalog.stations.get(cp_id)
            if existing is not None and existing.source is Source.API:
                raise ConfigError(
                    f"chargers.{cp_id}", "this charge station was created over the management "
                    "API; a station has one owner: remove it from the file (or deprecate the "
                    "API's station and use another ID)"
                )  # fmt: skip
            body = file_station(cp_id, charger.evses, charger.security_profile)
            if existing is not None:  # EVSEs the file dropped stay, REMOVED (history)
                listed = {e.uid for e in body.evses}
                gone = [
                    e.model_copy(update={"status": OcpiStatus.REMOVED})
                    for e in existing.body.evses
                    if e.uid not in listed
                ]
                body = body.model_copy(update={"evses": [*body.evses, *gone]})
            try:
                planned = self.catalog.plan_station(body, now=now, source=Source.FILE)
            except Exception as exc:
                raise ConfigError(f"chargers.{cp_id}", str(exc)) from None
            self.catalog.apply(planned)
            changes += planned
        for entry in list(self.catalog.stations.values()):
            dropped = entry.source is Source.FILE and entry.body.id not in chargers
            if dropped and entry.body.deployment_state is not DeploymentState.DEPRECATED:
                body = entry.body.model_copy(
                    update={"deployment_state": DeploymentState.DEPRECATED}
                )
                planned = self.catalog.plan_station(body, now=now, source=Source.FILE)
                self.catalog.apply(planned)
                changes += planned
        for change in changes:
            self.store.put_catalog(row_of(change.kind, change.after))
        if changes:
            log.info("catalog.file_imported", changes=len(changes),
                     stations=sorted({c.id for c in changes if c.kind == "station"}))  # fmt: skip
        return changes

    def configure_all(self) -> None:
        """Registry, credentials and engine from the whole catalog (at start)."""
        for entry in self.catalog.stations.values():
            self._configure(entry)

    def apply_remote(self, rows: Sequence[CatalogRow]) -> int:
        """Catalog objects another replica stored: put into force here as if changed here
        (registry, credentials, engine, the hub's set), without writing them again. Only
        newer versions count (a row read twice changes nothing). Returns how many did."""
        changes = []
        for row in rows:
            kind = _KINDS[row.table]
            before = self.catalog.table(kind).get(row.id)  # type: ignore[arg-type]
            if before is not None and before.version >= row.version:
                continue
            body = _MODELS[kind].model_validate_json(row.body)
            password_hash = row.extra[1] if kind == "station" else None
            after = Entry(body, Source(row.source), row.version, password_hash)
            changes.append(Change(kind, before, after))  # type: ignore[arg-type]
        self.catalog.apply(changes)
        for change in changes:
            if change.kind == "station":
                self._station_changed(change)
        if changes and self.data is not None:
            self.data.catalog_changed(changes)
        self._networks_changed(changes)
        if changes:
            objects = [f"{c.kind}:{c.id}:v{c.after.version}" for c in changes[:20]]
            log.info("catalog.followed", changes=len(changes), objects=objects)
        return len(changes)

    # -- changes ---------------------------------------------------------------------------
    async def commit(self, changes: Sequence[Change], *, actor: str) -> None:
        """Put planned changes into force and make them durable (one transaction)."""
        if not changes:
            return
        self.stage(changes)
        await self.durable(changes, actor=actor)

    async def durable(self, changes: Sequence[Change], *, actor: str) -> None:
        """Log staged changes and wait until they are on disk."""
        log.info("catalog.changed", actor=actor, changes=len(changes),
                 objects=[f"{c.kind}:{c.id}:v{c.after.version}" for c in changes[:20]])  # fmt: skip
        await self.store.commit()

    def stage(self, changes: Sequence[Change]) -> None:
        """Apply in memory and stage the rows (the caller commits)."""
        self.catalog.apply(changes)
        for change in changes:
            self.store.put_catalog(row_of(change.kind, change.after))
            if change.kind == "station":
                self._station_changed(change)
        if self.data is not None:  # the EVSE data records, in the same transaction
            self.data.catalog_changed(changes)
        self._networks_changed(changes)

    def _networks_changed(self, changes: Sequence[Change]) -> None:
        if self.on_networks is not None and any(c.kind in ("network", "station")
                                                for c in changes):  # fmt: skip
            self.on_networks()

    def _station_changed(self, change: Change) -> None:
        body: StationBody = change.after.body
        withdrawn, evse_changes = self._configure(change.after)
        for evse_id in withdrawn:
            self.hub.withdraw(evse_id)
        self.hub.apply(evse_changes)
        before: StationBody | None = change.before.body if change.before is not None else None
        if _may_connect(body) or before is None or not _may_connect(before):
            return
        if self.connections is not None and self.connections.disconnect(
            body.id, f"charge station is {body.deployment_state.value}"
            if body.deployment_state is DeploymentState.DEPRECATED
            else "charge station status comes over the API"
        ):  # fmt: skip
            log.info("catalog.disconnected", charge_point_id=body.id,
                     deployment_state=body.deployment_state.value)  # fmt: skip

    def _configure(self, entry: Entry[StationBody]) -> tuple[list[str], list[EvseChange]]:
        body = entry.body
        live = [e for e in body.evses if e.status is not OcpiStatus.REMOVED]
        if _may_connect(body):
            self.registry.set_charger(body.id, {n: e.evse_id for e in live for n in e.ocpp_ids})
        else:
            self.registry.set_charger(body.id, None)
        if self.credentials is not None and entry.source is Source.API:
            self.credentials.set_station(body.id, body.security_profile, entry.password_hash)
        shared = body.deployment_state is DeploymentState.PRODUCTION
        fixed = None
        if body.status_source is StatusSource.API:
            fixed = {e.evse_id: OCPI_TO_OICP[e.status or OcpiStatus.UNKNOWN] for e in live}
        return self.engine.configure_charger(
            body.id, [e.evse_id for e in live],
            unshared=() if shared else [e.evse_id for e in live], fixed=fixed,
        )  # fmt: skip


def _may_connect(body: StationBody) -> bool:
    return (
        body.deployment_state is not DeploymentState.DEPRECATED
        and body.status_source is StatusSource.OCPP
    )


def row_of(kind: str, entry: Entry[Any]) -> CatalogRow:
    body = entry.body
    text = json.dumps(body.model_dump(mode="json", exclude_none=True), separators=(",", ":"))
    extra: tuple[str | None, ...] = ()
    if kind == "station":
        extra = (body.location_id or "", entry.password_hash)
    stamp = body.last_updated.isoformat() if body.last_updated is not None else ""
    return CatalogRow(_TABLES[kind], body.id, text, entry.source.value, entry.version, stamp, extra)
