"""OCPP security profiles: who may open a connection, decided during the opening handshake.

* Profile 0: any registered charge point ID, no credentials (development only).
* Profile 1: HTTP Basic auth; the username must be the charge point ID of the URL.
* Profile 2: as 1, over TLS (wss).
* Profile 3: TLS with a client certificate that chains to the charger CA and whose subject CN is
  the charge point ID, so one charger cannot log in as another.

Passwords are kept only as salted scrypt hashes (``scrypt:N:r:p:salt:digest``, made by
``oicp-bridge hash-password``) and compared in constant time. They are machine secrets of at
least 16 random characters (OCPP), so their entropy, not the hash cost, is what resists
guessing; the default cost is kept low because every charger pays it on its first login after
a start (docs/security.md, "Why the default cost is low").

This module decides the profile and checks Basic credentials. The failed-login throttle
(:mod:`bridge.ocpp.throttle`), the profile 3 certificate checks (:mod:`bridge.ocpp.client_cert`)
and the refusal reasons (:mod:`bridge.ocpp.failure`) have modules of their own; the names the
handshake's callers use stay importable from here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import math
import os
import random
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from bridge.errors import ConfigError
from bridge.ocpp.client_cert import check_client_cert
from bridge.ocpp.failure import Failure
from bridge.ocpp.throttle import FailureThrottle
from bridge.passwords import (
    DEFAULT_N,
    DEFAULT_P,
    DEFAULT_R,
    MIN_PASSWORD_LENGTH,
    SCHEME,
    PasswordHash,
)

if TYPE_CHECKING:
    from bridge.config import ChargerSettings, OcppSecuritySettings

__all__ = [
    "Authenticator",
    "CheckQueue",
    "Failure",
    "FailureThrottle",
    "check_client_cert",
    "load_password_hash",
    "parse_basic",
]

log = structlog.get_logger("bridge.ocpp")

_CHECKS_IN_PARALLEL = 2  # hashlib.scrypt releases the GIL: two threads use two cores
_NOMINAL_CHECK_S = 0.0015  # a default-cost check, until checks have been timed
_QUEUE_SHARE = 0.5  # of handshake_timeout a login may wait for its password check
_RETRY_AFTER_MAX = 120  # s


Reserve = Callable[[], Awaitable[Failure | None]]


def parse_basic(values: list[str]) -> tuple[str, bytes] | None:
    """(username, password bytes) from the Authorization header(s), None if unusable.

    The password stays bytes: OCPP 1.6 AuthorizationKeys need not be UTF-8.
    """
    if len(values) != 1:
        return None
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = raw.partition(b":")
    if not colon:
        return None
    try:
        return user.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


# -- who may connect ---------------------------------------------------------------------------
class CheckQueue:
    """Password checks in worker threads, ``parallel`` at a time, first come first served.

    A login whose check has not started within ``limit`` seconds gets None, and the server
    answers HTTP 503 with ``retry_after()``, instead of waiting on until its handshake times
    out: the charger gets an answer in time, and no check is spent on a connection its charger
    has already given up. Logins are not refused sooner on a guess of the queue's length:
    chargers that ignore Retry-After come straight back, and each refusal costs as much as a
    handshake (bench/RESULTS.md, "Basic auth after a restart").
    """

    def __init__(self, limit: float, *, parallel: int = _CHECKS_IN_PARALLEL) -> None:
        self.limit = limit
        self.parallel = parallel
        #: Seconds per unit of ``PasswordHash.work``: measured, moving average.
        self.seconds_per_work = _NOMINAL_CHECK_S / (DEFAULT_N * DEFAULT_R * DEFAULT_P)
        self._queued_work = 0  # waiting or running
        self.done = 0  #: checks run since the start (scrypt runs, for metrics)
        self._slots = asyncio.Semaphore(self.parallel)  # binds to a loop on first use

    def wait(self) -> float:
        """Estimated seconds until the checks waiting or running now are done."""
        return self._queued_work * self.seconds_per_work / self.parallel

    def retry_after(self) -> int:
        """Seconds for Retry-After: when today's queue should be done, spread out."""
        return min(_RETRY_AFTER_MAX, max(1, math.ceil(self.wait() * random.uniform(1.0, 2.0))))

    async def run(self, stored: PasswordHash, password: bytes) -> bool | None:
        """Whether ``password`` matches ``stored``; None if the check did not start in time."""
        work = stored.work
        self._queued_work += work
        try:
            try:
                async with asyncio.timeout(self.limit):
                    await self._slots.acquire()
            except TimeoutError:
                return None
            try:
                ok, seconds = await asyncio.to_thread(stored.timed_verify, password)
            finally:
                self._slots.release()
                self.done += 1
        finally:
            self._queued_work -= work
        self.seconds_per_work += (seconds / work - self.seconds_per_work) * 0.2
        return ok


class Authenticator:
    """Per-charger security profile and Basic-auth check for the handshake."""

    def __init__(
        self, security: OcppSecuritySettings, chargers: Mapping[str, ChargerSettings]
    ) -> None:
        self.default_profile = security.profile
        self._profiles = {
            cp: c.security_profile for cp, c in chargers.items() if c.security_profile is not None
        }
        self._hashes: dict[str, PasswordHash] = {}
        for cp_id, charger in chargers.items():
            text = load_password_hash(cp_id, charger)
            if text is not None:
                self._hashes[cp_id] = PasswordHash.parse(text)
        # Unknown IDs cost one scrypt run too, so timing does not tell which IDs exist: at the
        # cost most hashes have (old and new hashes may differ).
        costs = Counter((h.n, h.r, h.p) for h in self._hashes.values())
        n, r, p = costs.most_common(1)[0][0] if costs else (DEFAULT_N, DEFAULT_R, DEFAULT_P)
        self._decoy = PasswordHash.decoy(n, r, p)
        # After one successful scrypt check a reconnect is checked against a keyed digest
        # (random per process), so flapping chargers do not cost a scrypt run each time.
        self._cache_key = os.urandom(32)
        self._verified: dict[str, tuple[PasswordHash, bytes]] = {}
        # A check must start early enough to leave time for the rest of the handshake.
        self.checks = CheckQueue(security.handshake_timeout * _QUEUE_SHARE)
        #: Whether the CSMS checks a charger's password (a proxy passing credentials through):
        #: then the bridge holds no hash for it and only checks the username.
        self.checked_upstream: Callable[[str], bool] = lambda charge_point_id: False

    def set_station(
        self, charge_point_id: str, profile: int | None, password_hash: str | None
    ) -> None:
        """A charge station of the catalog was created or changed: use its profile and hash
        from the next handshake on (a connection already open stays)."""
        if profile is None:
            self._profiles.pop(charge_point_id, None)
        else:
            self._profiles[charge_point_id] = profile
        if password_hash is None:
            self._hashes.pop(charge_point_id, None)
        else:
            self._hashes[charge_point_id] = PasswordHash.parse(password_hash)
        self._verified.pop(charge_point_id, None)

    def has_password(self, charge_point_id: str) -> bool:
        return charge_point_id in self._hashes

    def profile_for(self, charge_point_id: str) -> int:
        return self._profiles.get(charge_point_id, self.default_profile)

    def profiles_in_use(self) -> set[int]:
        return {self.default_profile, *self._profiles.values()}

    def hash_costs(self) -> dict[str, int]:
        """How many chargers have a hash of each cost (``scrypt:N:r:p``), for the start log."""
        costs = Counter(f"{SCHEME}:{h.n}:{h.r}:{h.p}" for h in self._hashes.values())
        return dict(sorted(costs.items()))

    def client_cert_mode(self) -> ssl.VerifyMode:
        """CERT_REQUIRED if every charger uses profile 3, OPTIONAL if some do, else NONE."""
        in_use = self.profiles_in_use()
        if 3 not in in_use:
            return ssl.CERT_NONE
        return ssl.CERT_REQUIRED if in_use == {3} else ssl.CERT_OPTIONAL

    async def check_basic(
        self,
        charge_point_id: str,
        authorization: list[str],
        *,
        known: bool,
        reserve: Reserve | None = None,
    ) -> Failure | None:
        """None if the Basic credentials are right for ``charge_point_id``, else why not.

        ``reserve`` is awaited before a password check starts (the failed-login budget of the
        peer's address): a Failure from it is returned without checking anything.
        ``Failure.BUSY`` (before anything is checked) when a full check would wait too long.
        """
        if not authorization:
            return Failure.MISSING_CREDENTIALS
        credentials = parse_basic(authorization)
        if credentials is None:
            return Failure.MALFORMED_CREDENTIALS
        username, password = credentials
        stored = self._hashes.get(charge_point_id) if known else None
        if stored is None and known and self.checked_upstream(charge_point_id):
            if hmac.compare_digest(username.encode("utf-8"), charge_point_id.encode("utf-8")):
                return None  # the password goes to the CSMS, whose 401 the charger gets
            return Failure.WRONG_USERNAME
        # Every failing path below that can be reached with a plausible ID runs scrypt once
        # (in the same queue, so it is refused alike when the queue is too long).
        if stored is None:
            match await self._check(self._decoy, password, reserve):
                case Failure() as refused:
                    return refused
            if not known:
                return Failure.UNKNOWN_CHARGE_POINT
            return Failure.NO_PASSWORD_CONFIGURED
        if not hmac.compare_digest(username.encode("utf-8"), charge_point_id.encode("utf-8")):
            match await self._check(self._decoy, password, reserve):
                case Failure() as refused:
                    return refused
            return Failure.WRONG_USERNAME
        keyed = hmac.new(self._cache_key, password, hashlib.sha256).digest()
        cached = self._verified.get(charge_point_id)
        if cached is not None and cached[0] is stored and hmac.compare_digest(cached[1], keyed):
            return None
        match await self._check(stored, password, reserve):
            case Failure() as refused:
                return refused
            case False:
                return Failure.WRONG_PASSWORD
        self._verified[charge_point_id] = (stored, keyed)
        if len(password) < MIN_PASSWORD_LENGTH:  # once per start: later logins hit the cache
            log.warning("ocpp.weak_password", charge_point_id=charge_point_id,
                        min_length=MIN_PASSWORD_LENGTH,
                        reason="shorter than OCPP allows: set a new random password on the "
                        "charger and its new hash here")  # fmt: skip
        return None

    async def _check(
        self, stored: PasswordHash, password: bytes, reserve: Reserve | None
    ) -> bool | Failure:
        """One scrypt check in the queue, after the address's budget allowed it."""
        if reserve is not None and (refused := await reserve()) is not None:
            return refused
        ok = await self.checks.run(stored, password)
        return Failure.BUSY if ok is None else ok


def load_password_hash(charge_point_id: str, charger: ChargerSettings) -> str | None:
    """The charger's hash from ``password_hash`` or ``password_hash_file``; ConfigError if bad."""
    if charger.password_hash is not None:
        return charger.password_hash.get_secret_value().strip()
    if charger.password_hash_file is None:
        return None
    where = f"chargers.{charge_point_id}.password_hash_file"
    try:
        text = Path(charger.password_hash_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(where, f"cannot read {charger.password_hash_file}: {exc}") from None
    try:
        PasswordHash.parse(text)
    except ValueError as exc:
        raise ConfigError(where, f"{charger.password_hash_file}: {exc}") from None
    return text
