"""The operator's CSMS as seen by the proxy: which chargers go there, and how to reach it.

``Upstream`` is built once from the settings (TLS context and per-charger passwords are loaded at
start, so a bad file stops the bridge instead of refusing chargers later). ``refusal_for`` turns
a failed connection attempt into the answer the charger gets: the bridge never pretends to be
the CSMS, so it either relays the CSMS's own 401/403/404 or says 502/503 with Retry-After.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import ssl
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from bridge import __version__
from bridge.config import (
    UPSTREAM_PLACEHOLDER,
    ChargerSettings,
    OcppMode,
    OcppSettings,
    UpstreamSettings,
    charger_mode,
)
from bridge.errors import ConfigError

USER_AGENT = f"ocpp-oicp-bridge/{__version__}"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
# The CSMS's own answers that the charger gets unchanged: they are about the charger.
RELAYED_STATUSES = frozenset({401, 403, 404})
# The CSMS says "later": the charger gets 503 (with the CSMS's Retry-After when it sent one).
BUSY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Refusal:
    """The charger's answer when the connection to the CSMS could not be opened.

    ``reason`` is a stable label (logs, ``bridge_upstream_handshakes_total``); ``login`` says
    whether the CSMS refused the charger itself (counted as a failed login, so one address
    cannot guess passwords through the bridge, which the CSMS sees as one client).
    """

    status: int
    reason: str
    body: str
    upstream_status: int | None = None
    retry_after: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    login: bool = False
    error: str | None = None


class Upstream:
    """Where and how the bridge opens each proxied charger's connection to the CSMS."""

    def __init__(self, ocpp: OcppSettings, chargers: Mapping[str, ChargerSettings]) -> None:
        self.settings: UpstreamSettings = ocpp.upstream
        self.default_mode: OcppMode = ocpp.mode
        self._modes = {cp: c.mode for cp, c in chargers.items() if c.mode is not None}
        self._listed = frozenset(chargers)
        self._template = self.settings.url or ""
        self._ocpp, self._chargers = ocpp, chargers
        self.tls, self._passwords = self._read_files()

    def _read_files(self) -> tuple[ssl.SSLContext | None, dict[str, bytes]]:
        """The TLS context and the per-charger passwords, from their files (ConfigError)."""
        tls = _tls_context(self.settings) if self._template.startswith("wss:") else None
        passwords: dict[str, bytes] = {}
        if self.settings.credentials == "per_charger":
            for cp_id, charger in self._chargers.items():
                if charger_mode(self._ocpp, charger) == "proxy":
                    passwords[cp_id] = load_upstream_password(cp_id, charger)
        return tls, passwords

    @property
    def has_files(self) -> bool:
        """Whether anything is read from files that a renewal may change (what SIGHUP reloads)."""
        s = self.settings
        tls_files = self.tls is not None and (s.ca_bundle or s.client_cert) is not None
        return tls_files or any(
            self._chargers[cp_id].upstream_password_file is not None for cp_id in self._passwords
        )

    def reload(self) -> None:
        """Read the CA bundle, client certificate and password files again; connections
        opened from now on use them, open ones keep theirs. All or nothing: if any file cannot
        be used, ConfigError names it and the ones in use stay."""
        self.tls, self._passwords = self._read_files()

    # -- which chargers ---------------------------------------------------------------------
    def mode_for(self, charge_point_id: str) -> OcppMode:
        return self._modes.get(charge_point_id, self.default_mode)

    def proxied(self, charge_point_id: str) -> bool:
        return self.mode_for(charge_point_id) == "proxy"

    def any_proxied(self) -> bool:
        return self.default_mode == "proxy" or "proxy" in self._modes.values()

    def count_proxied(self) -> int:
        """Listed chargers in proxy mode (unlisted ones follow ``ocpp.mode``)."""
        return sum(1 for cp_id in self._listed if self.proxied(cp_id))

    def checks_password(self, charge_point_id: str) -> bool:
        """Whether the CSMS checks this charger's Basic password (pass-through credentials)."""
        return self.proxied(charge_point_id) and self.settings.credentials == "pass_through"

    # -- how --------------------------------------------------------------------------------
    @property
    def insecure(self) -> bool:
        """Plain ws:// to another machine: charger credentials would cross the network unread."""
        host = urlsplit(self.url_for("x")).hostname or ""
        return self._template.startswith("ws:") and not _is_loopback(host)

    def url_for(self, charge_point_id: str) -> str:
        return self._template.replace(UPSTREAM_PLACEHOLDER, quote(charge_point_id, safe=""))

    @property
    def template(self) -> str:
        return self._template  # never holds credentials (checked in the settings)

    def headers_for(
        self, charge_point_id: str, request_headers: Headers, peer_address: str | None
    ) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        mode = self.settings.credentials
        if mode == "pass_through":
            headers += [("Authorization", v) for v in request_headers.get_all("Authorization")]
        elif mode == "per_charger":
            secret = charge_point_id.encode("utf-8") + b":" + self._passwords[charge_point_id]
            headers.append(("Authorization", "Basic " + base64.b64encode(secret).decode("ascii")))
        if peer_address:
            headers.append(("X-Forwarded-For", peer_address))
        return headers

    async def open(
        self,
        charge_point_id: str,
        offered: Sequence[Subprotocol],
        request_headers: Headers,
        peer_address: str | None,
    ) -> ClientConnection:
        """Open the CSMS connection offering exactly the charger's subprotocols.

        Raises what ``websockets.connect`` raises (``InvalidStatus`` for a refusal, ``OSError``,
        ``TimeoutError``, ``InvalidHandshake``); ``refusal_for`` says what each means.
        """
        s = self.settings
        return await connect(
            self.url_for(charge_point_id),
            subprotocols=list(offered) or None,
            additional_headers=self.headers_for(charge_point_id, request_headers, peer_address),
            ssl=self.tls,
            open_timeout=s.connect_timeout,
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
            close_timeout=s.connect_timeout,
            max_size=s.max_message_size,
            compression=None,  # per hop; ~40 KiB per connection for a few hundred bytes a frame
            proxy=None,  # the CSMS is reached directly; HTTP(S)_PROXY variables are not used
            user_agent_header=USER_AGENT,
            logger=_RedactingLogger(logging.getLogger("websockets.client")),
        )


def refusal_for(exc: BaseException, retry_after: int) -> Refusal:
    """What the charger gets when opening its CSMS connection failed with ``exc``."""
    if isinstance(exc, InvalidStatus):
        response = exc.response
        status = response.status_code
        if status in RELAYED_STATUSES:
            headers: tuple[tuple[str, str], ...] = ()
            if status == 401:
                challenge = response.headers.get_all("WWW-Authenticate")
                headers = tuple(("WWW-Authenticate", v) for v in challenge[:2])
            body = {401: "Unauthorized\n", 403: "Forbidden\n", 404: "Unknown charge point\n"}
            reason = {401: "unauthorized", 403: "forbidden", 404: "not_found"}[status]
            return Refusal(status, reason, body[status], status, headers=headers, login=True)
        if status in BUSY_STATUSES:
            wait = _retry_after(response.headers.get("Retry-After")) or retry_after
            return Refusal(503, "busy", "Central system busy; try again later\n", status, wait)
        return Refusal(502, "bad_status", "Central system refused the connection\n", status,
                       retry_after, error=f"HTTP {status}")  # fmt: skip
    unavailable = "Central system unavailable; try again later\n"
    if isinstance(exc, TimeoutError):
        return Refusal(503, "timeout", unavailable, None, retry_after, error="timed out")
    if isinstance(exc, ssl.SSLError):  # before OSError: SSLError is one
        return Refusal(502, "tls", "Central system TLS failed\n", None, retry_after,
                       error=_short(exc))  # fmt: skip
    if isinstance(exc, OSError):
        return Refusal(503, "unreachable", unavailable, None, retry_after, error=_short(exc))
    if isinstance(exc, InvalidHandshake):
        return Refusal(502, "bad_handshake", "Central system handshake failed\n", None,
                       retry_after, error=_short(exc))  # fmt: skip
    return Refusal(502, "error", "Central system connection failed\n", None, retry_after,
                   error=_short(exc))  # fmt: skip


def load_upstream_password(charge_point_id: str, charger: ChargerSettings) -> bytes:
    """The password for the CSMS from ``upstream_password`` or its file; ConfigError if none."""
    if charger.upstream_password is not None:
        return charger.upstream_password.get_secret_value().encode("utf-8")
    where = f"chargers.{charge_point_id}.upstream_password"
    path = charger.upstream_password_file
    if path is None:
        raise ConfigError(where, "needed with ocpp.upstream.credentials per_charger")
    try:
        text = Path(path).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(where + "_file", f"cannot read {path}: {exc}") from None
    if not text:
        raise ConfigError(where + "_file", f"{path} is empty")
    return text.encode("utf-8")


def _tls_context(settings: UpstreamSettings) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(
            cafile=str(settings.ca_bundle) if settings.ca_bundle else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("ocpp.upstream.ca_bundle", f"{settings.ca_bundle}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.client_cert is not None:
        key = settings.client_key
        try:
            context.load_cert_chain(str(settings.client_cert), str(key) if key else None)
        except (OSError, ssl.SSLError) as exc:
            field = "ocpp.upstream.client_key" if key else "ocpp.upstream.client_cert"
            raise ConfigError(field, f"cannot use {settings.client_cert}: {exc}") from None
    return context


def _retry_after(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None  # an HTTP date: use our own value
    return max(1, min(3600, int(value.strip())))


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs the handshake headers at DEBUG; credentials must not reach the log."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if len(args) == 2 and isinstance(args[0], str) and args[0].lower() in _SECRET_HEADERS:
            args = (args[0], "[redacted]")
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        return msg, kwargs
