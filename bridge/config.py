"""Configuration: pydantic models, loaded from a YAML file and ``BRIDGE_*`` environment variables.

Environment variables override the file; nested fields use ``__``, e.g.
``BRIDGE_OICP__BASE_URL=https://service-qa.hubject.com``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from bridge.errors import ConfigError
from bridge.status.table import OcppStatus, OicpStatus

# Patterns from the OICP 2.3 OpenAPI (components EvseID / OperatorID).
EVSE_ID_RE = re.compile(
    r"^(([A-Za-z]{2}\*?[A-Za-z0-9]{3}\*?E[A-Za-z0-9\*]{1,30})|(\+?[0-9]{1,3}\*[0-9]{3}\*[0-9\*]{1,32}))$"
)
OPERATOR_ID_RE = re.compile(r"^(([A-Za-z]{2}\*?[A-Za-z0-9]{3})|(\+?[0-9]{1,3}\*[0-9]{3}))$")


def _check_evse_id(value: str) -> str:
    if not EVSE_ID_RE.match(value):
        raise ValueError(f"{value!r} is not an OICP EvseID (e.g. DE*ABC*E0001*1)")
    return value


def _check_operator_id(value: str) -> str:
    if not OPERATOR_ID_RE.match(value):
        raise ValueError(f"{value!r} is not an OICP OperatorID (e.g. DE*ABC)")
    return value


EvseId = Annotated[str, AfterValidator(_check_evse_id)]
OperatorId = Annotated[str, AfterValidator(_check_operator_id)]


def operator_prefix(operator_id: str) -> str:
    """Canonical operator part of an ID (``DE*ABC`` and ``DEABC`` are the same operator)."""
    return operator_id.replace("*", "").replace("+", "").upper()


def evse_belongs_to(evse_id: str, operator_id: str) -> bool:
    """True if ``evse_id`` carries ``operator_id`` as its prefix (else Hubject answers 018)."""
    compact = evse_id.replace("*", "").replace("+", "").upper()
    return compact.startswith(operator_prefix(operator_id))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"


class OcppSettings(_Model):
    """The OCPP-J websocket endpoint chargers connect to."""

    host: str = Field("0.0.0.0", description="Address the OCPP websocket server listens on.")
    port: int = Field(
        9000, ge=0, le=65535, description="OCPP websocket port (0 = pick a free one)."
    )
    heartbeat_interval: int = Field(
        300, ge=10, le=86400, description="Heartbeat interval (s) sent in BootNotification replies."
    )
    allow_unlisted: bool = Field(
        False,
        description="Accept charge point IDs not in `chargers` (needs `evse_id_template`).",
    )
    evse_id_template: str | None = Field(
        None,
        description=(
            "EvseID for unlisted chargers; placeholders {operator}, {charge_point}, {evse}. "
            "Example: '{operator}*E{charge_point}*{evse}'."
        ),
    )
    ping_interval: float | None = Field(
        60.0, description="Websocket ping interval (s); null disables pings."
    )
    response_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for the charger's pong before dropping it."
    )
    silence_margin: float = Field(
        60.0,
        gt=0,
        description="A charger silent for heartbeat_interval + this (s) is disconnected.",
    )
    max_message_size: int = Field(
        65536, ge=1024, description="Largest frame (bytes); larger ones close with 1009."
    )
    offline_grace: float = Field(
        300.0,
        ge=0,
        description="Seconds a charger may stay disconnected before its EVSEs are pushed "
        "as `offline_status`.",
    )
    offline_status: Literal["Unknown", "OutOfService"] = Field(
        "Unknown", description="OICP status pushed for the EVSEs of an offline charger."
    )

    @field_validator("evse_id_template")
    @classmethod
    def _template_fields(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            value.format(operator="DE*ABC", charge_point="CP1", evse=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"unknown placeholder {exc}; use {{operator}}, {{charge_point}}, {{evse}}"
            ) from exc
        return value


class OicpSettings(_Model):
    """The OICP hub (Hubject) the bridge pushes EVSE statuses to."""

    base_url: str = Field(
        "http://127.0.0.1:9501",
        description=(
            "Hub base URL without /api/oicp, e.g. https://service-qa.hubject.com. Plain http is "
            "accepted only for a loopback address (the bundled hub simulator)."
        ),
    )
    operator_id: OperatorId = Field("DE*ABC", description="Your OICP OperatorID, e.g. DE*ABC.")
    operator_name: str | None = Field(
        None, max_length=100, description="OperatorName sent with every push (optional, ≤100)."
    )
    client_cert: Path | None = Field(None, description="PEM client certificate for mutual TLS.")
    client_key: Path | None = Field(
        None, description="PEM private key of the client certificate (if not inside client_cert)."
    )
    ca_bundle: Path | None = Field(
        None,
        description="PEM CA bundle that verifies the hub; default: the system trust store.",
    )
    connect_timeout: float = Field(5.0, gt=0, description="TCP+TLS connect timeout (s).")
    request_timeout: float = Field(20.0, gt=0, description="Whole-request timeout (s).")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if parts.scheme == "http" and not _is_loopback(parts.hostname):
            raise ValueError(
                "plain http is only allowed to a loopback address (hub simulator); use https"
            )
        return value.rstrip("/")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> OicpSettings:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key is set but client_cert is not")
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FullLoadSettings(_Model):
    """The daily fullLoad of every EVSE's status."""

    enabled: bool = Field(True, description="Send the daily fullLoad.")
    time: dt.time = Field(
        default_factory=lambda: dt.time(3, 0), description="Local time of day (HH:MM)."
    )
    timezone: str = Field("Europe/Berlin", description="IANA time zone of `time`.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class StateSettings(_Model):
    """Where the bridge keeps its durable state."""

    database: Path = Field(Path("state/bridge.db"), description="SQLite state database file.")
    group_commit_ms: float = Field(
        2.0, ge=0, le=100, description="Batch commits over this many ms (0: commit at once)."
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite synchronous mode: FULL survives power loss, NORMAL only crashes.",
    )


class DeliverySettings(_Model):
    """How pushes to the hub are paced and retried."""

    rate_limit_per_minute: float = Field(
        2000, gt=0, description="PushEvseStatus calls per minute (Hubject AUP: 2000)."
    )
    retry_initial: float = Field(1.0, gt=0, description="First retry backoff (s).")
    retry_max: float = Field(300.0, gt=0, description="Longest retry backoff (s).")
    pause_retry: float = Field(
        60.0,
        gt=0,
        description="Retry interval (s) while the hub reports a configuration error (017, 300).",
    )
    shutdown_timeout: float = Field(
        5.0, gt=0, description="On SIGTERM, wait this long (s) for the push in flight."
    )


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


class ChargerSettings(_Model):
    """One charge point of the registry."""

    evses: dict[int, EvseId] = Field(
        description=(
            "OCPP 1.6: connectorId → EvseID; OCPP 2.0.1: evseId → EvseID. Several 1.6 "
            "connectors may share one EvseID (one EVSE with several plugs)."
        ),
    )

    @field_validator("evses")
    @classmethod
    def _positive(cls, value: dict[int, str]) -> dict[int, str]:
        if not value:
            raise ValueError("a charger needs at least one EVSE")
        bad = [k for k in value if k < 1]
        if bad:
            raise ValueError(f"connector/EVSE numbers start at 1, got {bad}")
        return value


class HubSimSettings(_Model):
    """The bundled OICP hub simulator (development and tests only)."""

    embedded: bool = Field(
        False, description="Start the hub simulator inside `bridge run` (development only)."
    )
    host: str = Field("127.0.0.1", description="Simulator listen address.")
    port: int = Field(9501, ge=0, le=65535, description="Simulator port.")


class Settings(BaseSettings):
    """The whole bridge configuration."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    ocpp: OcppSettings = Field(default_factory=OcppSettings)
    oicp: OicpSettings = Field(default_factory=OicpSettings)
    fullload: FullLoadSettings = Field(default_factory=FullLoadSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    hub_sim: HubSimSettings = Field(default_factory=HubSimSettings)
    chargers: dict[str, ChargerSettings] = Field(
        default_factory=dict, description="Registry: charge point ID → its EVSEs."
    )

    @model_validator(mode="after")
    def _registry_consistent(self) -> Settings:
        op = self.oicp.operator_id
        seen: dict[str, str] = {}
        for cp_id, charger in self.chargers.items():
            for key, evse_id in charger.evses.items():
                if not evse_belongs_to(evse_id, op):
                    raise ValueError(
                        f"chargers.{cp_id}.evses.{key}: EvseID {evse_id!r} does not carry the "
                        f"operator prefix {op!r} (the hub would answer 018)"
                    )
                other = seen.setdefault(evse_id, cp_id)
                if other != cp_id:
                    raise ValueError(
                        f"chargers.{cp_id}.evses.{key}: EvseID {evse_id!r} is also used by "
                        f"charger {other!r}"
                    )
        if self.ocpp.allow_unlisted and not self.ocpp.evse_id_template:
            raise ValueError("ocpp.allow_unlisted needs ocpp.evse_id_template")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _yaml_path.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return (*sources, file_secret_settings)


_yaml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("yaml_path", default=None)


def load_settings(path: Path | str | None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (YAML) and the environment; raise ConfigError on problems."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("--config", f"file {str(path)!r} not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError("--config", f"{path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("--config", f"{path} must hold a mapping at the top level")
    token = _yaml_path.set(Path(path) if path is not None else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc) from None
    finally:
        _yaml_path.reset(token)


def _config_error(exc: ValidationError) -> ConfigError:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "config"
    msg = str(first["msg"]).removeprefix("Value error, ")
    if msg.startswith("chargers.") and ":" in msg:  # registry errors name their own field
        field, msg = msg.split(": ", 1)
    more = len(exc.errors()) - 1
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(field, msg)
