"""Hub side: the OICP client, fullLoads, delivery (the push lane), EVSE data, the hub simulator."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from bridge.config.base import OperatorId, _Model


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
