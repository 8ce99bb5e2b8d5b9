"""The service around the bridge: logs, status table overrides, ops port, API, catalog, runtime."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from bridge.catalog.facts import OperatorFacts
from bridge.config.base import LogFormat, _Model
from bridge.status.table import OcppStatus, OicpStatus


class LogSettings(_Model):
    """Logging."""

    format: LogFormat = Field(LogFormat.JSON, description="json (one object per line) or console.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")


class StatusSettings(_Model):
    """OCPP → OICP status mapping."""

    overrides: dict[OcppStatus, OicpStatus] = Field(
        default_factory=dict,
        description="Replace single rows of the mapping table, e.g. {Unavailable: Unknown}.",
    )

    @field_validator("overrides")
    @classmethod
    def _pushable(cls, value: dict[OcppStatus, OicpStatus]) -> dict[OcppStatus, OicpStatus]:
        for ocpp_status, oicp_status in value.items():
            if oicp_status is OicpStatus.EVSE_NOT_FOUND:
                raise ValueError(f"{ocpp_status}: EvseNotFound is not a status a CPO pushes")
        return value


class OpsSettings(_Model):
    """The HTTP ops port: health, readiness, Prometheus metrics, read-only status API."""

    enabled: bool = Field(True, description="Serve the ops port.")
    host: str = Field("0.0.0.0", description="Ops port listen address.")
    port: int = Field(9100, ge=0, le=65535, description="Ops port (0 = pick a free one).")
    max_connections: int = Field(
        100,
        ge=1,
        description="Connections the ops port holds at once; more are closed at once (probes, "
        "scrapers and API clients need a few).",
    )
    max_connections_per_address: int = Field(
        20,
        ge=1,
        description="Connections the ops port holds from one address (IPv6: one /64), so that "
        "one client cannot take every place from the probes.",
    )
    keepalive_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds an ops connection may stay idle, or take to send its request, "
        "before it is closed.",
    )
    request_timeout: float = Field(
        10.0, gt=0, description="Seconds an ops request may take before it is answered 503."
    )
    descriptor_reserve: int = Field(
        512,
        ge=0,
        description="Open files kept for charger connections: with fewer left (or fewer than "
        "an eighth of the open-file limit) the ops port closes new connections at once.",
    )


TOKEN_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class ApiToken(_Model):
    """One client of the API: a name for the logs, the token's hash, what it may do."""

    name: str = Field(
        min_length=1, max_length=64, description="Who holds the token; logged with every write."
    )
    hash: str = Field(
        description="`sha256:<hex>` of the token, printed by `oicp-bridge api-token` (never the "
        "token itself)."
    )
    scope: Literal["read", "write"] = Field(
        "read", description="read: GET only; write: also POST, PUT, PATCH and commands."
    )

    @field_validator("hash")
    @classmethod
    def _hash_format(cls, value: str) -> str:
        if not TOKEN_HASH_RE.match(value):
            raise ValueError(
                "not a token hash: expected sha256:<64 hex digits> (oicp-bridge api-token)"
            )
        return value


class ApiSettings(_Model):
    """The status API (/api/v1) and the management API (/api/v2): tokens, listener, limits."""

    tokens: list[ApiToken] = Field(
        default_factory=list,
        description="Who may call the API (`Authorization: Token <token>`); none: every API "
        "request is answered 401. /healthz, /readyz and /metrics need no token.",
    )
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve the API on its own port (0 = pick a free one); null: on the ops port.",
    )
    host: str = Field("0.0.0.0", description="Listen address of the API's own port.")
    tls_cert: Path | None = Field(
        None, description="PEM certificate (chain): the API's own port speaks HTTPS."
    )
    tls_key: Path | None = Field(None, description="PEM private key of `tls_cert`.")
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body (bytes); larger: HTTP 413."
    )
    max_batch_items: int = Field(
        1000, ge=1, description="Most items in one batch request; more: refused (2001)."
    )

    @model_validator(mode="after")
    def _tls_needs_port(self) -> ApiSettings:
        if self.tls_cert is not None and self.port is None:
            raise ValueError(
                "api.tls_cert needs api.port: the ops port stays plain HTTP for probes"
            )
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("api.tls_key is set but api.tls_cert is not")
        names = [t.name for t in self.tokens]
        if len(set(names)) != len(names):
            raise ValueError("api.tokens: each token needs its own name")
        return self


class CatalogSettings(_Model):
    """The charge-station catalog (management API): operator facts and generated EvseIDs."""

    operator_defaults: OperatorFacts = Field(
        default_factory=OperatorFacts,
        description="Hotline phone, accessibility, payment options, authentication modes and "
        "calibration law of every location that does not set its own (OICP EVSE data).",
    )
    evse_id_template: str = Field(
        "{operator}*E{charge_point}*{evse}",
        description="EvseID of each EVSE of a station created from a hardware template; "
        "placeholders {operator}, {charge_point} (letters and digits of the ID), {evse}.",
    )

    @field_validator("evse_id_template")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        try:
            value.format(operator="DE*ABC", charge_point="CP1", evse=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"unknown placeholder {exc}; use {{operator}}, {{charge_point}}, {{evse}}"
            ) from exc
        return value


class RuntimeSettings(_Model):
    """How the process runs."""

    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto",
        description="Event loop of `oicp-bridge run`: uvloop (less CPU per charger message and "
        "per hub push, bench/RESULTS.md), asyncio (the standard library's), or auto: uvloop "
        "when it is installed (it is with the bridge on Linux and macOS), except with TLS on "
        "the OCPP port (`ocpp.security.tls_cert`), whose handshake needs asyncio's own TLS "
        "(uvloop is then refused). Under uvloop failed accepts (out of descriptors) are not "
        "summarised in `bridge.accept_failed` lines.",
    )
