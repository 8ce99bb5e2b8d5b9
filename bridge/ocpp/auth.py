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
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import os
import random
import ssl
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from bridge.errors import ConfigError
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

log = structlog.get_logger("bridge.ocpp")

_CHECKS_IN_PARALLEL = 2  # hashlib.scrypt releases the GIL: two threads use two cores
_NOMINAL_CHECK_S = 0.0015  # a default-cost check, until checks have been timed
_QUEUE_SHARE = 0.5  # of handshake_timeout a login may wait for its password check
_RETRY_AFTER_MAX = 120  # s
_WAKE_BATCH = 64  # logins waiting for an address's checks that are woken per event-loop turn


Reserve = Callable[[], Awaitable["Failure | None"]]


class Failure(StrEnum):
    """Why a connection was refused; stable labels for logs and metrics."""

    MISSING_CREDENTIALS = "missing_credentials"
    MALFORMED_CREDENTIALS = "malformed_credentials"
    WRONG_USERNAME = "wrong_username"
    WRONG_PASSWORD = "wrong_password"
    UNKNOWN_CHARGE_POINT = "unknown_charge_point"
    NO_PASSWORD_CONFIGURED = "no_password_configured"
    CLIENT_CERT_MISSING = "client_cert_missing"
    CLIENT_CERT_MISMATCH = "client_cert_mismatch"
    CLIENT_CERT_REJECTED = "client_cert_rejected"
    THROTTLED = "throttled"
    EVSE_ID_TAKEN = "evse_id_taken"  # an unlisted ID whose EvseIDs belong to another charger
    UNLISTED_LIMIT = "unlisted_limit"  # ocpp.max_unlisted_chargers reached
    BUSY = "busy"  # too many password checks queued: HTTP 503, try again later
    UPSTREAM_REFUSED = "upstream_refused"  # proxy: the CSMS answered 401, 403 or 404


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


def common_names(peercert: Mapping[str, Any] | None) -> list[str]:
    """Every subject CN of a certificate as returned by ``SSLObject.getpeercert()``."""
    if not peercert:
        return []
    names = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(str(value))
    return names


def check_client_cert(charge_point_id: str, peercert: Mapping[str, Any] | None) -> Failure | None:
    """Profile 3: the (already chain-verified) certificate must name exactly this charger."""
    if not peercert:
        return Failure.CLIENT_CERT_MISSING
    if common_names(peercert) != [charge_point_id]:
        return Failure.CLIENT_CERT_MISMATCH
    return None


# -- TLS ---------------------------------------------------------------------------------------
def tls_failure(exc: BaseException) -> Failure | None:
    """Which TLS handshake errors are a refused client certificate (an auth failure).

    Others (a charger that does not trust our certificate, plain http, timeouts) are not.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):  # chain, validity or purpose
        return Failure.CLIENT_CERT_REJECTED
    if isinstance(exc, ssl.SSLError) and exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return Failure.CLIENT_CERT_MISSING
    return None


# -- throttling --------------------------------------------------------------------------------
def network_key(address: str) -> str:
    """The unit of per-address limits: the IP address; IPv6 per /64 (what one subscriber holds)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    pending: int = 0  # password checks reserved and not yet settled
    announced: bool = False  # ocpp.auth_throttled logged for this exhaustion
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


class FailureThrottle:
    """Failed logins per address: a token bucket of ``limit`` failures refilled over ``window``.

    While an address has no token left every attempt from it is refused (HTTP 429) before any
    credential is looked at, and the refusal is counted too: the bucket goes into debt (down to
    ``-limit``), so an address that keeps trying stays refused. A password check takes its token
    *before* it starts (``reserve``) and gives it back only when the password was right, so
    logins sent all at once cannot run more checks than the budget: those beyond it wait for
    the address's checks in progress and are refused if those fail. IPv6 addresses count per
    /64, which one subscriber usually holds.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = 100_000,
    ) -> None:
        self.limit = float(limit)
        self.rate = limit / window
        self.clock = clock
        self.max_tracked = max_tracked
        self._buckets: dict[str, _Bucket] = {}

    key = staticmethod(network_key)

    def _bucket(self, key: str, now: float) -> _Bucket:
        """The refilled bucket of ``key`` (new buckets are not stored until they change)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return _Bucket(self.limit, now)
        bucket.tokens = min(self.limit, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.announced = False
        return bucket

    def _store(self, key: str, bucket: _Bucket) -> None:
        self._buckets.pop(key, None)  # re-insert: dict order = least recently failed first
        self._buckets[key] = bucket
        if len(self._buckets) > self.max_tracked:
            self._prune(bucket.stamp)

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now).

        0 too while checks of the address are in progress: their outcome decides (``reserve``
        waits for it), a budget they hold is not used up.
        """
        key = self.key(address)
        if key not in self._buckets:
            return 0.0
        bucket = self._bucket(key, self.clock())
        if bucket.tokens >= 1 or bucket.pending > 0:
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def failed(self, address: str) -> bool:
        """Count one failure or refusal; True if the address's budget is now used up and that
        was not announced yet (log ``ocpp.auth_throttled`` once)."""
        key = self.key(address)
        bucket = self._bucket(key, self.clock())
        bucket.tokens = max(-self.limit, bucket.tokens - 1)
        self._store(key, bucket)
        return self._announce(bucket)

    def _announce(self, bucket: _Bucket) -> bool:
        if bucket.tokens >= 1 or bucket.announced:
            return False
        bucket.announced = True
        return True

    async def reserve(self, address: str, timeout: float) -> Failure | None:
        """Take a token for a password check about to start (None), or say why not.

        ``Failure.THROTTLED``: the budget is used up (answer 429; the refusal is counted).
        ``Failure.BUSY``: this address's checks in progress kept the budget for ``timeout``
        seconds (answer 503; not counted, nothing was checked). Settle with ``settle``.
        """
        key = self.key(address)
        deadline = self.clock() + timeout
        while True:
            bucket = self._bucket(key, self.clock())
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                bucket.pending += 1
                self._store(key, bucket)
                return None
            if bucket.pending == 0:
                self.failed(address)
                return Failure.THROTTLED
            # Checks of this address are running: their outcome decides whether this one may.
            waiter = asyncio.get_running_loop().create_future()
            bucket.waiters.append(waiter)
            try:
                async with asyncio.timeout(max(0.0, deadline - self.clock())):
                    await waiter
            except TimeoutError:
                return Failure.BUSY
            finally:
                if waiter in bucket.waiters:
                    bucket.waiters.remove(waiter)

    def settle(self, address: str, *, ok: bool) -> bool:
        """End a reservation: a right password gets its token back; else it stays spent.

        True, like ``failed``, when the budget is used up and was not announced yet.
        """
        key = self.key(address)
        bucket = self._bucket(key, self.clock())
        bucket.pending = max(0, bucket.pending - 1)
        if ok:
            bucket.tokens = min(self.limit, bucket.tokens + 1)
        self._wake(key, bucket)
        self._store(key, bucket)
        return not ok and self._announce(bucket)

    def _wake(self, key: str, bucket: _Bucket) -> None:
        """Wake the waiters that can now decide: one per token given back (first come, first
        served; thousands of chargers behind one NAT may wait), or all of them when nothing is
        in progress any more (they are refused). Many are woken ``_WAKE_BATCH`` per event-loop
        turn: each answer takes a fraction of a millisecond, and thousands at once would stall
        every other connection for about a second."""
        waiters = bucket.waiters
        due = len(waiters) if bucket.pending == 0 else max(0, math.floor(bucket.tokens))
        for _ in range(min(due, _WAKE_BATCH, len(waiters))):
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if waiters and due > _WAKE_BATCH:
            asyncio.get_running_loop().call_soon(self._wake_later, key)

    def _wake_later(self, key: str) -> None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            self._wake(key, self._bucket(key, self.clock()))

    def _prune(self, now: float) -> None:
        def idle(bucket: _Bucket) -> bool:
            return bucket.pending == 0 and not bucket.waiters

        for key in [k for k, b in self._buckets.items() if idle(b)]:
            if self._bucket(key, now).tokens >= self.limit:
                del self._buckets[key]
        for key in [k for k, b in self._buckets.items() if idle(b)]:
            if len(self._buckets) <= self.max_tracked:
                break
            del self._buckets[key]
