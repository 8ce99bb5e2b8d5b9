"""Configuration: pydantic models, loaded from a YAML file and ``BRIDGE_*`` environment variables.

Environment variables override the file; nested fields use ``__``, e.g.
``BRIDGE_OICP__BASE_URL=https://service-qa.hubject.com``.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import ipaddress
import os
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
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
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


SecurityProfile = Annotated[int, Field(ge=0, le=3)]


class OcppSecuritySettings(_Model):
    """Who may connect to the OCPP port, and how (OCPP security profiles 0-3)."""

    profile: SecurityProfile = Field(
        0,
        description=(
            "Security profile of every charger without its own `security_profile`: 0 = no "
            "authentication (development only), 1 = HTTP Basic auth over ws, 2 = TLS (wss) + "
            "Basic auth, 3 = TLS with client certificates whose subject CN is the charge point ID."
        ),
    )
    tls_cert: Path | None = Field(
        None,
        description="PEM server certificate (chain) of the OCPP port. When set the port speaks "
        "only TLS (wss); profiles 2 and 3 need it.",
    )
    tls_key: Path | None = Field(
        None, description="PEM private key of `tls_cert` (omit if it is inside `tls_cert`)."
    )
    tls_min_version: Literal["1.2", "1.3"] = Field(
        "1.2", description="Oldest TLS version accepted from chargers."
    )
    charger_ca: Path | None = Field(
        None,
        description="PEM CA bundle that charger client certificates must chain to (profile 3).",
    )
    charger_crl: Path | None = Field(
        None,
        description="PEM file with the current CRL of every CA in `charger_ca` that issues "
        "charger certificates (profile 3); CRLs only, each signed by its CA. A listed "
        "certificate is refused, and a charger connected with one is disconnected when the "
        "file is replaced. A certificate whose issuer has no CRL here, or whose CRL is past "
        "its nextUpdate, is refused too.",
    )
    tls_reload_interval: float = Field(
        60.0,
        ge=0,
        description="Seconds between checks whether `tls_cert`, `tls_key`, `charger_ca` or "
        "`charger_crl` changed on disk; a changed file is loaded for the next handshakes "
        "without a restart (SIGHUP checks at once). 0: only on SIGHUP.",
    )
    handshake_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds allowed for the TLS handshake and, again, for the websocket "
        "handshake; slower or stalled connections are closed. A login waits at most half of it "
        "for its password check, then gets HTTP 503 with Retry-After.",
    )
    max_messages_per_second: float = Field(
        20.0,
        gt=0,
        description="Messages per second one connection may send on average; beyond that the "
        "bridge reads its messages more slowly (nothing is dropped) and logs `ocpp.throttled`.",
    )
    message_burst: int = Field(
        50, ge=1, description="Messages a connection may send at once before the rate applies."
    )
    auth_failure_limit: int = Field(
        10,
        ge=1,
        description="Failed logins one address (IPv6: one /64) may make per "
        "`auth_failure_window`; further attempts get HTTP 429 until the budget refills.",
    )
    auth_failure_window: float = Field(
        60.0, gt=0, description="Seconds over which `auth_failure_limit` failures refill."
    )

    @model_validator(mode="after")
    def _tls_complete(self) -> OcppSecuritySettings:
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key is set but tls_cert is not")
        if self.profile >= 2 and self.tls_cert is None:
            raise ValueError(f"security profile {self.profile} needs tls_cert (wss)")
        if self.profile == 3 and self.charger_ca is None:
            raise ValueError("security profile 3 needs charger_ca")
        if self.charger_crl is not None and self.charger_ca is None:
            raise ValueError("charger_crl is set but charger_ca is not")
        return self


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
    template_max_evses: int = Field(
        8,
        ge=1,
        le=1000,
        description="EVSEs an unlisted charger may have: only its connector/EVSE numbers 1 to "
        "this get an EvseID from `evse_id_template`; higher numbers are answered, not stored.",
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
    compression: Literal["none", "deflate"] = Field(
        "none",
        description="permessage-deflate (RFC 7692) for chargers that offer it. Off by default: "
        "it costs ~40 KiB of memory per connection for frames of a few hundred bytes.",
    )
    listen_backlog: int = Field(
        4096,
        ge=16,
        description="TCP accept queue; large enough for a fleet reconnecting at once (the "
        "kernel caps it at net.core.somaxconn).",
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
    security: OcppSecuritySettings = Field(
        default_factory=OcppSecuritySettings,
        description="Authentication, TLS and limits of the OCPP port.",
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
    request_timeout: float = Field(
        20.0, gt=0, description="Whole-request timeout (s) of a push (fullLoad: its own)."
    )

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
    request_timeout: float = Field(
        120.0,
        gt=0,
        description="Whole-request timeout (s) of a fullLoad, which carries every EVSE and "
        "takes the hub longer than a single push.",
    )

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
    settle_time: float | None = Field(
        None,
        ge=0,
        description="After a request whose outcome is unknown (a timeout, the connection lost "
        "after sending) no request goes to the hub for this long (s), so that the hub is done "
        "with it before the next one. Null: the timeout of that request (`oicp.request_timeout`,"
        " `fullload.request_timeout`).",
    )
    max_attempts: int = Field(
        10,
        ge=1,
        description="Attempts per EVSE when the hub refuses its push with a retryable code "
        "while other EVSEs go through; then it is parked (`push.parked`) until its status "
        "changes or a fullLoad.",
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
    security_profile: SecurityProfile | None = Field(
        None, description="This charger's security profile; null = `ocpp.security.profile`."
    )
    password_hash: SecretStr | None = Field(
        None,
        description="Basic-auth password hash for profiles 1 and 2, printed by `bridge "
        "hash-password` (never the password itself). Also settable as "
        "BRIDGE_CHARGERS__<ID>__PASSWORD_HASH.",
    )
    password_hash_file: Path | None = Field(
        None,
        description="File holding `password_hash` (e.g. a mounted secret), read at start.",
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

    @field_validator("password_hash")
    @classmethod
    def _hash_format(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from bridge.ocpp.auth import PasswordHash  # the format lives with its checker

            PasswordHash.parse(value.get_secret_value())  # the message never quotes the value
        return value

    @model_validator(mode="after")
    def _one_hash_source(self) -> ChargerSettings:
        if self.password_hash is not None and self.password_hash_file is not None:
            raise ValueError("set password_hash or password_hash_file, not both")
        return self


class OpsSettings(_Model):
    """The HTTP ops port: health, readiness, Prometheus metrics, read-only status API."""

    enabled: bool = Field(True, description="Serve the ops port.")
    host: str = Field("0.0.0.0", description="Ops port listen address.")
    port: int = Field(9100, ge=0, le=65535, description="Ops port (0 = pick a free one).")


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
    ops: OpsSettings = Field(default_factory=OpsSettings)
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

    @model_validator(mode="after")
    def _security_consistent(self) -> Settings:
        sec = self.ocpp.security
        if self.ocpp.allow_unlisted and sec.profile in (1, 2):
            raise ValueError(
                f"ocpp.allow_unlisted: unlisted chargers have no password, so they cannot log in "
                f"with security profile {sec.profile}; use profile 3 or list them"
            )
        for cp_id, charger in self.chargers.items():
            profile = sec.profile if charger.security_profile is None else charger.security_profile
            where = f"chargers.{cp_id}.security_profile"
            if profile >= 2 and sec.tls_cert is None:
                raise ValueError(f"{where}: profile {profile} needs ocpp.security.tls_cert (wss)")
            if profile == 3 and sec.charger_ca is None:
                raise ValueError(f"{where}: profile 3 needs ocpp.security.charger_ca")
            if (
                profile in (1, 2)
                and charger.password_hash is None
                and not charger.password_hash_file
            ):
                raise ValueError(
                    f"chargers.{cp_id}.password_hash: security profile {profile} needs a password "
                    "hash (`bridge hash-password`), password_hash_file or "
                    f"BRIDGE_CHARGERS__{cp_id}__PASSWORD_HASH"
                )
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
        # Charge point IDs are case-sensitive; the stock env source lower-cases them.
        sources: list[PydanticBaseSettingsSource] = [init_settings, _EnvSource(settings_cls)]
        path = _yaml_path.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return (*sources, file_secret_settings)


class _EnvSource(EnvSettingsSource):
    """``BRIDGE_*`` variables, keeping charge point IDs as spelled in the variable name.

    ``BRIDGE_CHARGERS__CP-0001__PASSWORD_HASH`` must reach charger ``CP-0001``, not ``cp-0001``.
    """

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        chargers = data.get("chargers")
        if isinstance(chargers, dict):
            prefix = f"{self.env_prefix}chargers{self.env_nested_delimiter}".lower()
            spelled = {}
            for name in os.environ:
                if name.lower().startswith(prefix):
                    cp_id = name[len(prefix) :].split(self.env_nested_delimiter or "__", 1)[0]
                    spelled[cp_id.lower()] = cp_id
            data["chargers"] = {spelled.get(k, k): v for k, v in chargers.items()}
        return data


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
    if msg.startswith(("chargers.", "ocpp.")) and ":" in msg:  # these name their own field
        field, msg = msg.split(": ", 1)
    more = len(exc.errors()) - 1
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(field, msg)
