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

from bridge.catalog.facts import OperatorFacts
from bridge.errors import ConfigError
from bridge.passwords import PasswordHash
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
    max_connections_per_address: int = Field(
        1000,
        ge=1,
        description="Open connections one address (IPv6: one /64) may hold; more are closed at "
        "once. Chargers behind one carrier NAT or VPN gateway share an address: set it above "
        "the number of chargers behind the largest one.",
    )
    max_tls_handshakes: int = Field(
        1000,
        ge=1,
        description="TLS handshakes in progress at once on the OCPP port (each holds ~100 KiB "
        "until it finishes or times out); more connections are closed at once.",
    )
    max_tls_handshakes_per_address: int = Field(
        100,
        ge=1,
        description="TLS handshakes in progress at once from one address (IPv6: one /64).",
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


OcppMode = Literal["csms", "proxy"]
UPSTREAM_PLACEHOLDER = "{charge_point_id}"


class UpstreamSettings(_Model):
    """The operator's CSMS that chargers in `proxy` mode are relayed to (see docs/proxy.md)."""

    url: str | None = Field(
        None,
        description="URL template of the CSMS's OCPP endpoint with the placeholder "
        "{charge_point_id}, e.g. wss://csms.example/ocpp/{charge_point_id}. Needed when any "
        "charger is in `proxy` mode.",
    )
    credentials: Literal["pass_through", "per_charger", "none"] = Field(
        "pass_through",
        description="How the bridge logs in at the CSMS: `pass_through` forwards the charger's "
        "own Basic credentials (the CSMS checks them), `per_charger` sends Basic auth with the "
        "charge point ID and `chargers.<ID>.upstream_password`, `none` sends no credentials "
        "(e.g. with `client_cert` only).",
    )
    ca_bundle: Path | None = Field(
        None, description="PEM CA bundle that verifies a wss:// CSMS; default: the system trust."
    )
    client_cert: Path | None = Field(
        None,
        description="PEM client certificate the bridge presents to a wss:// CSMS (for a CSMS "
        "that requires security profile 3; a charger's own certificate cannot be forwarded).",
    )
    client_key: Path | None = Field(
        None, description="PEM private key of `client_cert` (omit if it is inside)."
    )
    connect_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds to open the connection to the CSMS (TCP, TLS, websocket "
        "handshake) while the charger's handshake waits; must be below "
        "`ocpp.security.handshake_timeout`.",
    )
    retry_after: int = Field(
        30,
        ge=1,
        description="Retry-After (s) sent to a charger refused with HTTP 502/503 because the "
        "CSMS could not be reached or answered with an error.",
    )
    ping_interval: float | None = Field(
        60.0, description="Websocket ping interval (s) toward the CSMS; null disables pings."
    )
    ping_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for the CSMS's pong before dropping the link."
    )
    max_message_size: int = Field(
        1_048_576,
        ge=1024,
        description="Largest frame (bytes) accepted from the CSMS; a larger one closes both "
        "connections (1009).",
    )
    tap_timeout: float = Field(
        2.0,
        gt=0,
        description="Seconds the relay waits for a tapped status report to be stored before "
        "it passes the CSMS's confirmation on anyway (logged as `proxy.tap_failed`).",
    )

    @field_validator("url")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            example = value.format(charge_point_id="CP-1")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"unknown placeholder {exc}; the only one is {UPSTREAM_PLACEHOLDER}"
            ) from exc
        if UPSTREAM_PLACEHOLDER not in value:
            raise ValueError(f"the URL template needs the placeholder {UPSTREAM_PLACEHOLDER}")
        parts = urlsplit(example)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"{value!r} is not a ws:// or wss:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "no credentials in the URL: use `credentials` and chargers.<ID>.upstream_password"
            )
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> UpstreamSettings:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key is set but client_cert is not")
        plain = self.url is not None and self.url.startswith("ws:")
        for name in ("ca_bundle", "client_cert"):
            if plain and getattr(self, name) is not None:
                raise ValueError(f"{name} is set but the url is plain ws://; use wss://")
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
        description="Accept charge point IDs not in `chargers` (needs `evse_id_template`). Anyone "
        "who reaches the port can then create chargers whose statuses are pushed (up to "
        "`max_unlisted_chargers`): use it with security profile 3 or on a closed network.",
    )
    evse_id_template: str | None = Field(
        None,
        description=(
            "EvseID for unlisted chargers; placeholders {operator}, {charge_point}, {evse}. "
            "Example: '{operator}*E{charge_point}*{evse}'."
        ),
    )
    max_unlisted_chargers: int = Field(
        1000,
        ge=0,
        description="With `allow_unlisted`: how many unlisted charge point IDs may connect "
        "(counted since the start); further ones are refused. Each creates EVSEs that are "
        "pushed to the hub.",
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
    mode: OcppMode = Field(
        "csms",
        description="What the bridge is for chargers without their own `mode`: `csms` answers "
        "them itself (no transactions), `proxy` relays them to the operator's CSMS "
        "(`upstream`) and taps their status reports.",
    )
    upstream: UpstreamSettings = Field(
        default_factory=UpstreamSettings,
        description="The operator's CSMS for chargers in proxy mode.",
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
    evse_data_version: Literal["2.3", "2.2"] = Field(
        "2.3",
        description="OICP version of eRoamingPushEvseData: 2.3 (data-records v23) or 2.2 "
        "(v22: ChargingStationName, record-level ChargingModes, lastUpdate).",
    )
    network_path: str = Field(
        "/api/evsenetwork/v1/operators/{operator}/network",
        pattern=r"^/[!-~]*$",
        description="Path of the EVSE network assignment service (eRoamingEVSEAssignment) "
        "under `base_url`; `{operator}` is replaced by `operator_id`. Hubject's guide names "
        "`.../network`, its support pages `.../networks`: use what your Hubject contact confirms.",
    )
    tls_reload_interval: float = Field(
        60.0,
        ge=0,
        description="Seconds between checks whether `client_cert`, `client_key` or `ca_bundle` "
        "changed on disk; changed files that load are used for the next connection to the hub "
        "without a restart (SIGHUP checks at once). 0: only on SIGHUP.",
    )

    @field_validator("network_path")
    @classmethod
    def _network_path(cls, value: str) -> str:
        try:
            value.format(operator="DE*ABC")
        except (KeyError, IndexError, ValueError):
            raise ValueError("only the placeholder {operator} may appear in braces") from None
        return value

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
    """Where the bridge keeps its durable state: one SQLite file, or a PostgreSQL database
    shared by several replicas."""

    url: str | None = Field(
        None,
        description="The state database as a URL: `sqlite:///state/bridge.db` (a relative "
        "path after the three slashes, an absolute one after four) or "
        "`postgresql://user:password@host:5432/dbname` (several replicas may share it; see "
        "`replication`). Null: the SQLite file `database`. The password may also come from "
        "the usual PostgreSQL variables (PGPASSWORD, ~/.pgpass).",
    )
    database: Path = Field(
        Path("state/bridge.db"),
        description="SQLite state database file (when `url` is null or a sqlite:/// URL, "
        "which sets it). With PostgreSQL, its directory still holds this replica's small "
        "local files (the API address file of the CLI).",
    )
    group_commit_ms: float = Field(
        2.0,
        ge=0,
        le=100,
        description="A busy bridge (see `group_commit_rows`) waits this many ms before each "
        "commit so that more writes share it (0: never waits). Commits always batch what "
        "arrives while one is being written.",
    )
    group_commit_rows: int = Field(
        16,
        ge=0,
        description="The `group_commit_ms` wait applies after a commit of at least this many "
        "rows; after a smaller one a commit a charger's answer waits for is written at once, "
        "so that at a moderate rate the answer does not wait for the window (0: always wait). "
        "Writes nobody waits for (acknowledgments of pushes) still wait the window.",
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite synchronous mode: FULL survives power loss, NORMAL only crashes.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme == "sqlite" and value.startswith("sqlite:///") and len(value) > 10:
            return value
        if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            parts = urlsplit(value)
            if not parts.path.strip("/"):
                raise ValueError(f"{_redact(value)!r} names no database (…/dbname)")
            return value
        raise ValueError(
            f"{_redact(value)!r} is neither sqlite:///PATH nor postgresql://HOST/DBNAME"
        )

    @model_validator(mode="after")
    def _sqlite_url_sets_database(self) -> StateSettings:
        if self.url is not None and self.url.startswith("sqlite:///"):
            object.__setattr__(self, "database", Path(self.url.removeprefix("sqlite:///")))
        return self

    @property
    def postgres(self) -> bool:
        """Whether the state is in PostgreSQL (replicas possible) rather than SQLite."""
        return self.url is not None and not self.url.startswith("sqlite:")

    @property
    def where(self) -> str:
        """The database for messages and logs (a PostgreSQL URL without its password)."""
        return _redact(self.url) if self.postgres and self.url else str(self.database)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class ReplicationSettings(_Model):
    """Several replicas on one PostgreSQL database: one push leader, fast failover.

    Only with a PostgreSQL `state.url`. The leader holds a lease row (with an epoch) that it
    renews every `lease_ttl` / 4; it sends a hub request only while its lease, counted by its own
    clock from when it sent the last renewal, outlives that request's timeout. Another replica
    takes the lease only after it expired by the database's clock, then waits the settle time
    if a push was in flight. Failover after a crash: at most `lease_ttl` + `acquire_interval`
    (+ `push_timeout` when a push was in flight).
    """

    replica_id: str | None = Field(
        None,
        max_length=63,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="This replica's name in the database, logs and metrics (unique per "
        "running replica). Null: host name and process ID.",
    )
    lease_ttl: float = Field(
        6.0,
        ge=1,
        le=60,
        description="Seconds a leader's lease lasts without renewal. A dead leader is replaced "
        "after at most this long plus `acquire_interval` (plus the settle time when a push was "
        "in flight): 8.5 s with the defaults.",
    )
    acquire_interval: float = Field(
        0.5, gt=0, le=10, description="Seconds between a follower's attempts to take the lease."
    )
    push_timeout: float = Field(
        2.0,
        gt=0,
        description="Whole-request timeout (s) of a single push in replicated mode (it replaces "
        "`oicp.request_timeout`, which is made for one process): it must be below half the "
        "lease, so that the leader can send between renewals; it is also the settle time a new "
        "leader waits when a push was in flight (unless `delivery.settle_time` is set).",
    )
    replica_timeout: float = Field(
        15.0,
        gt=0,
        description="A replica whose heartbeat (every `lease_ttl` / 4) is older than this is "
        "dead: the leader takes its chargers as disconnected then, and they go offline after "
        "`ocpp.offline_grace` unless they connect again.",
    )

    @model_validator(mode="after")
    def _timeouts(self) -> ReplicationSettings:
        if self.push_timeout > self.lease_ttl / 2:
            raise ValueError(
                f"replication.push_timeout: {self.push_timeout:g} s must be at most half of "
                f"replication.lease_ttl ({self.lease_ttl:g} s): the leader sends only while its "
                "lease outlives the request"
            )
        if self.replica_timeout <= self.lease_ttl:
            raise ValueError(
                f"replication.replica_timeout: {self.replica_timeout:g} s must exceed "
                f"replication.lease_ttl ({self.lease_ttl:g} s)"
            )
        return self


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
        description="Basic-auth password hash for profiles 1 and 2, printed by `oicp-bridge "
        "hash-password` (never the password itself). Also settable as "
        "BRIDGE_CHARGERS__<ID>__PASSWORD_HASH.",
    )
    password_hash_file: Path | None = Field(
        None,
        description="File holding `password_hash` (e.g. a mounted secret), read at start.",
    )
    mode: OcppMode | None = Field(
        None, description="`csms` or `proxy` for this charger; null = `ocpp.mode`."
    )
    upstream_password: SecretStr | None = Field(
        None,
        description="Password the bridge sends to the CSMS for this charger when "
        "`ocpp.upstream.credentials` is `per_charger` (username: the charge point ID). Also "
        "settable as BRIDGE_CHARGERS__<ID>__UPSTREAM_PASSWORD.",
    )
    upstream_password_file: Path | None = Field(
        None, description="File holding `upstream_password` (e.g. a mounted secret), read at start."
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
            PasswordHash.parse(value.get_secret_value())  # the message never quotes the value
        return value

    @model_validator(mode="after")
    def _one_hash_source(self) -> ChargerSettings:
        if self.password_hash is not None and self.password_hash_file is not None:
            raise ValueError("set password_hash or password_hash_file, not both")
        if self.upstream_password is not None and self.upstream_password_file is not None:
            raise ValueError("set upstream_password or upstream_password_file, not both")
        return self


def charger_mode(ocpp: OcppSettings, charger: ChargerSettings | None) -> OcppMode:
    """``csms`` or ``proxy``: the charger's own mode, else the bridge's (``ocpp.mode``)."""
    if charger is not None and charger.mode is not None:
        return charger.mode
    return ocpp.mode


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


Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class EvseDataSettings(_Model):
    """EVSE data at the hub (eRoamingPushEvseData) built from the catalog."""

    enabled: bool = Field(
        True,
        description="Push each catalog EVSE's data (plugs, power, address, ...) to the hub; its "
        "status goes only once the hub holds its data. EVSEs without connectors (the "
        "configuration file's stations) are left out and their status is not held.",
    )
    batch_size: int = Field(
        100, ge=1, le=10_000, description="Most records in one insert/update/delete request."
    )
    rate_limit_per_minute: float = Field(
        375, gt=0, description="PushEvseData calls per minute (Hubject AUP: 375)."
    )
    full_load_enabled: bool = Field(True, description="Send the weekly data fullLoad.")
    full_load_weekday: Weekday = Field("monday", description="Day of the weekly fullLoad.")
    full_load_time: dt.time = Field(
        default_factory=lambda: dt.time(3, 30), description="Local time of day (HH:MM)."
    )
    full_load_timezone: str = Field("Europe/Berlin", description="IANA time zone of the time.")
    full_load_timeout: float = Field(
        300.0, gt=0, description="Whole-request timeout (s) of a data fullLoad (every record)."
    )
    language: str = Field(
        "en",
        pattern=r"^[a-z]{2,3}(?:-[A-Z]{2,3})?$",
        description="Language of ChargingStationNames (ISO 639, e.g. de).",
    )

    @field_validator("full_load_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


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


class HubSimSettings(_Model):
    """The bundled OICP hub simulator (development and tests only)."""

    embedded: bool = Field(
        False, description="Start the hub simulator inside `oicp-bridge run` (development only)."
    )
    host: str = Field("127.0.0.1", description="Simulator listen address.")
    port: int = Field(9501, ge=0, le=65535, description="Simulator port.")
    state_file: Path | None = Field(
        None,
        description="JSON file in which the simulator keeps the records it holds across "
        "restarts, as the bridge keeps what the hub acknowledged (null: it starts empty).",
    )
    require_data_for_status: bool = Field(
        False,
        description="Refuse (022) a status for an EVSE the simulator holds no EVSE data for.",
    )


class Settings(BaseSettings):
    """The whole bridge configuration."""

    model_config = SettingsConfigDict(
        env_prefix="BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    ocpp: OcppSettings = Field(default_factory=OcppSettings)
    oicp: OicpSettings = Field(default_factory=OicpSettings)
    fullload: FullLoadSettings = Field(default_factory=FullLoadSettings)
    evse_data: EvseDataSettings = Field(default_factory=EvseDataSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    replication: ReplicationSettings = Field(default_factory=ReplicationSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    log: LogSettings = Field(default_factory=LogSettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    hub_sim: HubSimSettings = Field(default_factory=HubSimSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    chargers: dict[str, ChargerSettings] = Field(
        default_factory=dict, description="Registry: charge point ID → its EVSEs."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Checks across sections; every problem is reported, not only the first."""
        _raise_all(
            [*self._registry_consistent(), *self._security_consistent(), *self._proxy_consistent()]
        )
        return self

    def _registry_consistent(self) -> list[str]:
        op = self.oicp.operator_id
        problems: list[str] = []
        seen: dict[str, str] = {}
        for cp_id, charger in self.chargers.items():
            for key, evse_id in charger.evses.items():
                if not evse_belongs_to(evse_id, op):
                    problems.append(
                        f"chargers.{cp_id}.evses.{key}: EvseID {evse_id!r} does not carry the "
                        f"operator prefix {op!r} (the hub would answer 018)"
                    )
                other = seen.setdefault(evse_id, cp_id)
                if other != cp_id:
                    problems.append(
                        f"chargers.{cp_id}.evses.{key}: EvseID {evse_id!r} is also used by "
                        f"charger {other!r}"
                    )
        if self.ocpp.allow_unlisted and not self.ocpp.evse_id_template:
            problems.append("ocpp.allow_unlisted needs ocpp.evse_id_template")
        return problems

    def _security_consistent(self) -> list[str]:
        sec = self.ocpp.security
        problems: list[str] = []
        if self.ocpp.allow_unlisted and sec.profile in (1, 2) and not self._checked_upstream(None):
            problems.append(
                f"ocpp.allow_unlisted: unlisted chargers have no password, so they cannot log in "
                f"with security profile {sec.profile}; use profile 3 or list them"
            )
        for cp_id, charger in self.chargers.items():
            profile = sec.profile if charger.security_profile is None else charger.security_profile
            where = f"chargers.{cp_id}.security_profile"
            if profile >= 2 and sec.tls_cert is None:
                problems.append(f"{where}: profile {profile} needs ocpp.security.tls_cert (wss)")
            if profile == 3 and sec.charger_ca is None:
                problems.append(f"{where}: profile 3 needs ocpp.security.charger_ca")
            if (
                profile in (1, 2)
                and charger.password_hash is None
                and not charger.password_hash_file
                and not self._checked_upstream(cp_id)
            ):
                problems.append(
                    f"chargers.{cp_id}.password_hash: security profile {profile} needs a password "
                    "hash (`oicp-bridge hash-password`), password_hash_file or "
                    f"BRIDGE_CHARGERS__{cp_id}__PASSWORD_HASH"
                )
        return problems

    def _proxy_consistent(self) -> list[str]:
        ocpp, upstream = self.ocpp, self.ocpp.upstream
        proxied = [cp for cp, c in self.chargers.items() if charger_mode(ocpp, c) == "proxy"]
        if not proxied and ocpp.mode != "proxy":
            return []
        problems: list[str] = []
        if upstream.url is None:
            which = "ocpp.mode is proxy" if ocpp.mode == "proxy" else f"{proxied[0]} is proxied"
            problems.append(f"ocpp.upstream.url: the CSMS URL is needed ({which})")
        if upstream.connect_timeout >= ocpp.security.handshake_timeout:
            problems.append(
                f"ocpp.upstream.connect_timeout: {upstream.connect_timeout:g} s must be below "
                f"ocpp.security.handshake_timeout ({ocpp.security.handshake_timeout:g} s), "
                "within which the charger's handshake must be answered"
            )
        if upstream.credentials == "per_charger":
            for cp_id in proxied:
                charger = self.chargers[cp_id]
                if charger.upstream_password is None and charger.upstream_password_file is None:
                    problems.append(
                        f"chargers.{cp_id}.upstream_password: ocpp.upstream.credentials is "
                        "per_charger, so this proxied charger needs upstream_password, "
                        f"upstream_password_file or BRIDGE_CHARGERS__{cp_id}__UPSTREAM_PASSWORD"
                    )
            if ocpp.allow_unlisted and ocpp.mode == "proxy":
                problems.append(
                    "ocpp.allow_unlisted: unlisted chargers have no upstream_password, so they "
                    "cannot be proxied with ocpp.upstream.credentials per_charger"
                )
        return problems

    def _checked_upstream(self, charge_point_id: str | None) -> bool:
        """Whether the CSMS, not the bridge, checks this charger's password (None: unlisted)."""
        charger = self.chargers.get(charge_point_id) if charge_point_id is not None else None
        return (
            charger_mode(self.ocpp, charger) == "proxy"
            and self.ocpp.upstream.credentials == "pass_through"
        )

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
            raise ConfigError(
                "--config",
                f"file {str(path)!r} not found (config/bridge.example.yaml is an example to "
                "start from)",
            )
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


def _raise_all(problems: list[str]) -> None:
    """One ValueError for every problem a model-level check found (one per line); each line
    names its own setting, and ``_config_error`` splits them again."""
    if problems:
        raise ValueError(_PROBLEM_SEPARATOR.join(problems))


_PROBLEM_SEPARATOR = "\n"


def _config_error(exc: ValidationError) -> ConfigError:
    """Every problem pydantic found, each with the setting it is about."""
    problems: list[tuple[str, str]] = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "config"
        text = str(error["msg"]).removeprefix("Value error, ")
        for line in text.split(_PROBLEM_SEPARATOR):  # a model check may report several
            where, msg = field, line
            named = _NAMES_ITS_SETTING.match(line)
            if named is not None:  # model checks name the setting they are about themselves
                where, msg = named.group(1), named.group(2)
            if (where, msg) not in problems:
                problems.append((where, msg))
    (field, msg), *more = problems
    return ConfigError(field, msg, more=more)


# "chargers.CP-1.evses.1: EvseID ..." or "ocpp.allow_unlisted needs ocpp.evse_id_template"
_NAMES_ITS_SETTING = re.compile(
    rf"^((?:{'|'.join(Settings.model_fields)})\.[^\s:]+)(?:: | )(.+)$", re.DOTALL
)
