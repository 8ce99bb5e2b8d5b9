"""Configuration: pydantic models, loaded from a YAML file and ``BRIDGE_*`` environment variables.

Environment variables override the file; nested fields use ``__``, e.g.
``BRIDGE_OICP__BASE_URL=https://service-qa.hubject.com``.

One module per side of the bridge (``ocpp``, ``hub``, ``state``, ``service``), the shared
checks in ``base`` and the whole (:class:`Settings`, :func:`load_settings`) in ``settings``;
the names other modules use are re-exported here.
"""

from bridge.config.base import EVSE_ID_RE, EvseId, OperatorId, evse_belongs_to, operator_prefix
from bridge.config.hub import (
    DeliverySettings,
    EvseDataSettings,
    FullLoadSettings,
    HubSimSettings,
    OicpSettings,
)
from bridge.config.ocpp import (
    UPSTREAM_PLACEHOLDER,
    ChargerSettings,
    OcppMode,
    OcppSecuritySettings,
    OcppSettings,
    UpstreamSettings,
    charger_mode,
)
from bridge.config.service import (
    ApiSettings,
    ApiToken,
    CatalogSettings,
    LogSettings,
    OpsSettings,
    RuntimeSettings,
    StatusSettings,
)
from bridge.config.settings import Settings, load_settings
from bridge.config.state import ReplicationSettings, StateSettings

__all__ = [
    "EVSE_ID_RE",
    "UPSTREAM_PLACEHOLDER",
    "ApiSettings",
    "ApiToken",
    "CatalogSettings",
    "ChargerSettings",
    "DeliverySettings",
    "EvseDataSettings",
    "EvseId",
    "FullLoadSettings",
    "HubSimSettings",
    "LogSettings",
    "OcppMode",
    "OcppSecuritySettings",
    "OcppSettings",
    "OicpSettings",
    "OperatorId",
    "OpsSettings",
    "ReplicationSettings",
    "RuntimeSettings",
    "Settings",
    "StateSettings",
    "StatusSettings",
    "UpstreamSettings",
    "charger_mode",
    "evse_belongs_to",
    "load_settings",
    "operator_prefix",
]
