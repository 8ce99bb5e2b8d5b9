"""OCPP side: the listener, security profiles, proxy upstream, chargers of the file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge.config.base import EvseId, _Model
from bridge.passwords import PasswordHash

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
