"""What the API handlers may use: the narrow pieces of the running bridge, not the bridge."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.api.tokens import Tokens
from bridge.catalog.catalog import Catalog
from bridge.catalog.facts import OperatorFacts
from bridge.catalog.quality import Kept
from bridge.config import ApiSettings
from bridge.delivery.networks import NetworkPushes
from bridge.delivery.outbox import Outbox
from bridge.live import LiveCatalog
from bridge.status.engine import StatusEngine
from bridge.store.base import ChargePointRow


class FullLoadControl(Protocol):
    """The running bridge's status fullLoad (sent by the one push lane)."""

    def preview(self) -> dict[str, Any]:
        """The body a fullLoad would send now."""
        ...

    def request(self) -> asyncio.Future[int]:
        """Queue a fullLoad; the future gives the number of records the hub accepted."""
        ...

    def preview_data(self) -> dict[str, Any]:
        """The body a data fullLoad would send now (HubError: EVSE data not enabled)."""
        ...

    def request_data(self) -> asyncio.Future[int]:
        """Queue a data fullLoad (HubError: EVSE data not enabled)."""
        ...

    def held_up(self) -> str | None:
        """Why pushes are held up now (paused by the hub, backing off), None if they are not."""
        ...


@dataclass
class ApiContext:
    settings: ApiSettings
    tokens: Tokens
    catalog: Catalog
    live: LiveCatalog
    engine: StatusEngine
    outbox: Outbox
    presence: Mapping[str, ChargePointRow]  # what each charger did (connections, boot)
    delivery: Callable[[], dict[str, Any]]  # the delivery summary of /api/v1/delivery
    full_load: FullLoadControl
    operator_defaults: OperatorFacts
    hash_password: Callable[[str], str]  # password → scrypt hash (runs in a thread)
    #: EvseID → its EVSE data at the hub (``DataOutbox.describe``; None: not enabled).
    hub_data: Callable[[str], dict[str, Any] | None] = lambda evse_id: None
    #: Network assignments and what the hub acknowledged (None: not sent by this process).
    networks: NetworkPushes | None = None
    #: Station id → (the entry, its JSON form): reads of unchanged stations skip pydantic.
    station_cache: dict[str, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    #: Station id → (its body, its location's, the defaults, its EVSEs' data-quality report).
    quality_cache: Kept = field(default_factory=dict)
