"""Who may open an OCPP connection: the decision of the websocket handshake, without sockets.

The server hands over what the HTTP upgrade request carries (an ``Attempt``) and gets back
``None`` (let it in) or a ``Refusal`` (the HTTP answer). The steps run in this order, and each
may end the handshake:

1. the path must be ``/ocpp/{chargePointId}``;
2. an address that used up its failed-login budget is refused before anything is looked at;
3. the charger's security profile decides how it proves its ID: Basic auth (1, 2) or a client
   certificate (3);
4. the ID must be known (listed, or allowed by the template for unlisted chargers);
5. an unlisted charger must not get an EvseID of another charger, and their number is capped.

Every refused login is logged once (``ocpp.auth_failed``, no credential in it), counted by
the throttle and reported to the metrics hook.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog

from bridge.config import OcppSecuritySettings
from bridge.ocpp import auth
from bridge.ocpp.client_cert import check_client_cert
from bridge.ocpp.failure import Failure
from bridge.ocpp.throttle import FailureThrottle, network_key
from bridge.ratelimit import LogLimiter
from bridge.status.registry import Registry

log = structlog.get_logger("bridge.ocpp")

PATH_PREFIX = "/ocpp/"
BUSY_LOG_WINDOW = 10.0  # s: at most one ocpp.auth_busy line per window
REJECTED_LOG_WINDOW = 60.0  # s: one ocpp.rejected line per address and window ...
REJECTED_LOG_BUDGET = 100  # ... and at most this many per window in all
BASIC_CHALLENGE = 'Basic realm="OCPP", charset="UTF-8"'


def charge_point_id_from_path(path: str) -> str | None:
    """``/ocpp/RDAM%20123`` → ``RDAM 123``; None if the path is not ``/ocpp/{id}``."""
    route = urlsplit(path).path
    if not route.startswith(PATH_PREFIX):
        return None
    raw = route[len(PATH_PREFIX) :].rstrip("/")
    if not raw or "/" in raw:
        return None
    cp_id = unquote(raw)
    if not cp_id or len(cp_id) > 48 or not cp_id.isprintable():  # OCPP identity: ≤48 chars
        return None
    return cp_id


def format_peer(address: Any) -> str:
    """``host:port`` of a socket address tuple, ``?`` if there is none."""
    return f"{address[0]}:{address[1]}" if address else "?"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the handshake knows about one connection."""

    path: str
    address: str  # the peer's IP address
    peer: str  # address:port, for logs
    authorization: list[str] = field(default_factory=list)  # Authorization header values
    #: The verified client certificate (``SSLObject.getpeercert()``), None without one.
    peercert: Mapping[str, Any] | None = None
    #: Whether that certificate is in the CRLs loaded after its TLS handshake finished.
    revoked: Callable[[], bool] = lambda: False


@dataclass(frozen=True, slots=True)
class Refusal:
    """The HTTP answer to a refused handshake."""

    status: HTTPStatus
    body: str
    headers: dict[str, str] = field(default_factory=dict)


NOT_FOUND = Refusal(HTTPStatus.NOT_FOUND, "Unknown charge point\n")
NOT_OCPP = Refusal(HTTPStatus.NOT_FOUND, "Not an OCPP path: use /ocpp/{chargePointId}\n")


class Handshake:
    """The handshake decision for the OCPP port, with its throttle and log lines."""

    def __init__(
        self,
        security: OcppSecuritySettings,
        registry: Registry,
        authenticator: auth.Authenticator,
    ) -> None:
        self.security = security
        self.registry = registry
        self.auth = authenticator
        self.throttle = FailureThrottle(security.auth_failure_limit, security.auth_failure_window)
        #: Called with a Failure label on every refused login (metrics hook).
        self.on_auth_failure: Callable[[str], None] | None = None
        self._busy_refused, self._busy_logged_at = 0, -math.inf
        #: ``ocpp.rejected`` lines for requests that are not OCPP: per address and window.
        self.rejected_lines = LogLimiter(REJECTED_LOG_WINDOW, REJECTED_LOG_BUDGET)

    async def decide(self, attempt: Attempt) -> Refusal | None:
        """None: the charger may connect; else the answer that refuses it."""
        cp_id = charge_point_id_from_path(attempt.path)
        if cp_id is None:
            # Scanners try thousands of paths: one line per address and window.
            left_out = self.rejected_lines.admit(network_key(attempt.address))
            if left_out is not None:
                log.warning("ocpp.rejected", status=404, path=urlsplit(attempt.path).path[:120],
                            peer=attempt.peer, reason="not an OCPP path /ocpp/{chargePointId}",
                            repeated=left_out,
                            others_left_out=self.rejected_lines.take_over_budget())  # fmt: skip
            return NOT_OCPP
        address, peer = attempt.address, attempt.peer
        if self.throttle.retry_after(address) > 0:
            self.refused(address, peer, cp_id, Failure.THROTTLED, status=429)
            return self._throttled(address)
        profile = self.auth.profile_for(cp_id)
        known = self.registry.knows(cp_id)
        failure: Failure | None
        if profile in (1, 2):
            # Unknown IDs get the same 401 as a wrong password: no enumeration of IDs.
            failure, counted, exhausted = await self._check_basic(cp_id, attempt, known=known)
            if failure is Failure.BUSY:
                if exhausted:
                    self._announce(address, peer)
                return self.busy()
            if failure is Failure.THROTTLED:
                self.refused(address, peer, cp_id, failure, status=429, counted=counted)
                return self._throttled(address)
            if failure is not None:
                self.refused(address, peer, cp_id, failure, status=401, profile=profile,
                             counted=counted, exhausted=exhausted)  # fmt: skip
                return Refusal(
                    HTTPStatus.UNAUTHORIZED,
                    "Unauthorized\n",
                    {"WWW-Authenticate": BASIC_CHALLENGE},
                )
            return self._unlisted(cp_id, address, peer, profile)
        if profile == 3:
            failure = check_client_cert(cp_id, attempt.peercert)
            detail = None
            if failure is None and attempt.revoked():
                # Its TLS handshake finished before a CRL that lists it was loaded.
                failure, detail = Failure.CLIENT_CERT_REJECTED, "certificate revoked"
            if failure is not None:
                self.refused(address, peer, cp_id, failure, status=403, profile=profile,
                             detail=detail)  # fmt: skip
                return Refusal(HTTPStatus.FORBIDDEN, "Forbidden\n")
        if not known:
            # Profile 0 (no secret to protect) or 3 (the peer proved it is this ID): say so.
            self.refused(
                address, peer, cp_id, Failure.UNKNOWN_CHARGE_POINT, status=404, profile=profile
            )
            return NOT_FOUND
        return self._unlisted(cp_id, address, peer, profile)

    def _unlisted(self, cp_id: str, address: str, peer: str, profile: int) -> Refusal | None:
        """Unlisted chargers (``allow_unlisted``): only EvseIDs of their own, and not too many."""
        taken = self.registry.taken_evse_id(cp_id)
        if taken is not None:
            self.refused(address, peer, cp_id, Failure.EVSE_ID_TAKEN, status=403, profile=profile,
                         detail=f"its EvseID {taken} belongs to another charger")  # fmt: skip
            return Refusal(HTTPStatus.FORBIDDEN, "Forbidden\n")
        if not self.registry.admit(cp_id):
            self.refused(address, peer, cp_id, Failure.UNLISTED_LIMIT, status=403, profile=profile,
                         detail=f"{self.registry.max_unlisted} unlisted chargers connected "
                         "since the start (ocpp.max_unlisted_chargers)")  # fmt: skip
            return Refusal(HTTPStatus.FORBIDDEN, "Forbidden\n")
        return None

    async def _check_basic(
        self, cp_id: str, attempt: Attempt, *, known: bool
    ) -> tuple[Failure | None, bool, bool]:
        """Basic auth with the password check paid from the address's failed-login budget.

        Returns (failure, counted: the budget has counted it already, exhausted: it used the
        budget up). The check's token is taken before it starts, so a login in progress counts;
        a right password gives it back.
        """
        address = attempt.address
        reserved = False

        async def reserve() -> Failure | None:
            nonlocal reserved
            refused = await self.throttle.reserve(address, self.auth.checks.limit)
            reserved = refused is None
            return refused

        failure: Failure | None = Failure.BUSY
        try:
            failure = await self.auth.check_basic(
                cp_id, attempt.authorization, known=known, reserve=reserve
            )
        finally:  # also when the handshake is abandoned: the reservation must end
            exhausted = reserved and self.throttle.settle(address, ok=failure is None)
        return failure, reserved or failure is Failure.THROTTLED, exhausted

    def _throttled(self, address: str) -> Refusal:
        wait = max(1.0, self.throttle.retry_after(address))
        return Refusal(
            HTTPStatus.TOO_MANY_REQUESTS,
            "Too many failed logins; try again later\n",
            {"Retry-After": str(math.ceil(wait))},
        )

    def refused(
        self,
        address: str,
        peer: str,
        charge_point_id: str | None,
        failure: Failure,
        *,
        status: int | None,
        profile: int | None = None,
        detail: str | None = None,
        counted: bool = False,
        exhausted: bool = False,
    ) -> None:
        """One log line per refused login (no credential in it), count it, call the hook.

        ``counted``: the throttle has counted it already (a reserved password check, whose
        settling said whether it ``exhausted`` the budget).
        """
        fields: dict[str, Any] = {
            "reason": failure.value, "status": status, "peer": peer,
            "charge_point_id": charge_point_id, "profile": profile,
        }  # fmt: skip
        if detail is not None:
            fields["detail"] = detail
        blocked = failure is Failure.THROTTLED or (
            not counted and self.throttle.retry_after(address) > 0
        )
        if blocked:
            log.debug("ocpp.auth_failed", **fields)  # announced once by ocpp.auth_throttled
        else:
            log.warning("ocpp.auth_failed", **fields)
        # Refusals count too: an address that keeps trying while blocked stays blocked.
        if exhausted if counted else self.throttle.failed(address):
            self._announce(address, peer)
        self.notify(failure)

    def _announce(self, address: str, peer: str) -> None:
        log.warning("ocpp.auth_throttled", address=self.throttle.key(address), peer=peer,
                    limit=int(self.throttle.limit),
                    retry_after=round(self.throttle.retry_after(address), 1),
                    window_s=self.security.auth_failure_window)  # fmt: skip

    def busy(self) -> Refusal:
        """HTTP 503 + Retry-After: the password check did not start in time (a login storm).

        A login refused so after its password check was reserved has spent that token of
        its address's failed-login budget. Logged at most once per ``BUSY_LOG_WINDOW`` with
        the number refused since the previous line.
        """
        checks = self.auth.checks
        retry_after = checks.retry_after()
        self._busy_refused += 1
        now = time.monotonic()
        if now - self._busy_logged_at >= BUSY_LOG_WINDOW:
            log.warning("ocpp.auth_busy", refused=self._busy_refused, waited_s=checks.limit,
                        queued_s=round(checks.wait(), 1), retry_after=retry_after)  # fmt: skip
            self._busy_refused, self._busy_logged_at = 0, now
        self.notify(Failure.BUSY)
        return Refusal(
            HTTPStatus.SERVICE_UNAVAILABLE,
            "Too many logins at once; try again later\n",
            {"Retry-After": str(retry_after)},
        )

    def notify(self, failure: Failure) -> None:
        if self.on_auth_failure is not None:
            try:
                self.on_auth_failure(failure.value)
            except Exception:  # a metrics bug must not break the handshake
                log.exception("ocpp.hook_failed", hook="on_auth_failure")
