"""OCPP security profiles: who may open a connection, decided during the opening handshake.

* Profile 0: any registered charge point ID, no credentials (development only).
* Profile 1: HTTP Basic auth; the username must be the charge point ID of the URL.
* Profile 2: as 1, over TLS (wss).
* Profile 3: TLS with a client certificate that chains to the charger CA and whose subject CN is
  the charge point ID, so one charger cannot log in as another.

Passwords are kept only as salted scrypt hashes (``scrypt:N:r:p:salt:digest``, made by
``bridge hash-password``) and compared in constant time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.config import ChargerSettings, OcppSecuritySettings

SCHEME = "scrypt"
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**14, 8, 1  # ~45 ms and 16 MiB per check on one core
_DKLEN = 32
_SALT_BYTES = 16
_MAX_N = 2**20  # refuse hashes that would need more than 1 GiB per check
_CHECKS_IN_PARALLEL = 2  # scrypt runs in threads; more would only queue on 2 cores


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


# -- passwords ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed ``scrypt:N:r:p:salt:digest`` (salt and digest URL-safe base64, unpadded)."""

    n: int
    r: int
    p: int
    salt: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Raise ValueError (never quoting ``text``) unless it is a hash we can check."""
        parts = text.strip().split(":")
        if len(parts) != 6 or parts[0] != SCHEME:
            raise ValueError(f"not a password hash: expected {SCHEME}:N:r:p:salt:digest")
        try:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, digest = _b64decode(parts[4]), _b64decode(parts[5])
        except (ValueError, binascii.Error):
            raise ValueError("malformed password hash (N, r, p, salt or digest)") from None
        if n < 2 or n & (n - 1) or n > _MAX_N or not 1 <= r <= 64 or not 1 <= p <= 16:
            raise ValueError("password hash parameters out of range (N power of 2 ≤ 2^20)")
        if len(salt) < 8 or len(digest) < 16:
            raise ValueError("password hash salt or digest too short")
        return cls(n, r, p, salt, digest)

    def derive(self, password: bytes) -> bytes:
        return hashlib.scrypt(
            password,
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=_maxmem(self.n, self.r, self.p),
            dklen=len(self.digest),
        )

    def verify(self, password: bytes) -> bool:
        return hmac.compare_digest(self.derive(password), self.digest)

    def __str__(self) -> str:
        return ":".join(
            (SCHEME, str(self.n), str(self.r), str(self.p), _b64(self.salt), _b64(self.digest))
        )


def hash_password(
    password: bytes | str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """A new salted hash of ``password`` (str is taken as UTF-8)."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    salt = os.urandom(_SALT_BYTES)
    digest = hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r, p), dklen=_DKLEN)
    return str(PasswordHash(n, r, p, salt, digest))


def _maxmem(n: int, r: int, p: int) -> int:
    return 128 * n * r * (p + 1) + 2**20


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("empty or non-ASCII base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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
        # Unknown IDs cost one scrypt run too, so timing does not tell which IDs exist.
        self._decoy = PasswordHash(
            DEFAULT_N, DEFAULT_R, DEFAULT_P, os.urandom(_SALT_BYTES), os.urandom(_DKLEN)
        )
        # After one successful scrypt check a reconnect is checked against a keyed digest
        # (random per process), so flapping chargers do not cost a scrypt run each time.
        self._cache_key = os.urandom(32)
        self._verified: dict[str, tuple[PasswordHash, bytes]] = {}
        self._slots: asyncio.Semaphore | None = None

    def profile_for(self, charge_point_id: str) -> int:
        return self._profiles.get(charge_point_id, self.default_profile)

    def profiles_in_use(self) -> set[int]:
        return {self.default_profile, *self._profiles.values()}

    def client_cert_mode(self) -> ssl.VerifyMode:
        """CERT_REQUIRED if every charger uses profile 3, OPTIONAL if some do, else NONE."""
        in_use = self.profiles_in_use()
        if 3 not in in_use:
            return ssl.CERT_NONE
        return ssl.CERT_REQUIRED if in_use == {3} else ssl.CERT_OPTIONAL

    async def check_basic(
        self, charge_point_id: str, authorization: list[str], *, known: bool
    ) -> Failure | None:
        """None if the Basic credentials are right for ``charge_point_id``, else why not."""
        if not authorization:
            return Failure.MISSING_CREDENTIALS
        credentials = parse_basic(authorization)
        if credentials is None:
            return Failure.MALFORMED_CREDENTIALS
        username, password = credentials
        stored = self._hashes.get(charge_point_id) if known else None
        # Every failing path below that can be reached with a plausible ID runs scrypt once.
        if stored is None:
            await self._run(self._decoy.verify, password)
            if not known:
                return Failure.UNKNOWN_CHARGE_POINT
            return Failure.NO_PASSWORD_CONFIGURED
        if not hmac.compare_digest(username.encode("utf-8"), charge_point_id.encode("utf-8")):
            await self._run(self._decoy.verify, password)
            return Failure.WRONG_USERNAME
        keyed = hmac.new(self._cache_key, password, hashlib.sha256).digest()
        cached = self._verified.get(charge_point_id)
        if cached is not None and cached[0] is stored and hmac.compare_digest(cached[1], keyed):
            return None
        if not await self._run(stored.verify, password):
            return Failure.WRONG_PASSWORD
        self._verified[charge_point_id] = (stored, keyed)
        return None

    async def _run(self, check: Callable[[bytes], bool], password: bytes) -> bool:
        if self._slots is None:
            self._slots = asyncio.Semaphore(_CHECKS_IN_PARALLEL)
        async with self._slots:
            return await asyncio.to_thread(check, password)


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
def server_tls_context(
    security: OcppSecuritySettings, client_certs: ssl.VerifyMode
) -> ssl.SSLContext | None:
    """The OCPP port's TLS context (None for plain ws); ConfigError names the bad file."""
    if security.tls_cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # OCPP security profiles require TLS 1.2 or newer.
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if security.tls_min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.options |= ssl.OP_NO_RENEGOTIATION
    key = str(security.tls_key) if security.tls_key is not None else None
    try:
        context.load_cert_chain(str(security.tls_cert), key)
    except (OSError, ssl.SSLError) as exc:
        # The exception text names the file, not its content.
        raise ConfigError("ocpp.security.tls_cert", f"cannot load certificate/key: {exc}") from None
    if client_certs != ssl.CERT_NONE:
        if security.charger_ca is None:
            raise ConfigError("ocpp.security.charger_ca", "profile 3 needs a charger CA bundle")
        try:
            context.load_verify_locations(cafile=str(security.charger_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "ocpp.security.charger_ca", f"cannot load {security.charger_ca}: {exc}"
            ) from None
        context.verify_mode = client_certs
    return context


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
class FailureThrottle:
    """Failed logins per address: a token bucket of ``limit`` failures refilled over ``window``.

    While an address has no token left every attempt from it is refused (HTTP 429) before any
    credential is looked at, so guessing costs the guesser time, not us CPU. IPv6 addresses
    count per /64, which one subscriber usually holds.
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
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, stamp)

    @staticmethod
    def key(address: str) -> str:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return address
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        return str(ip)

    def _tokens(self, key: str, now: float) -> float:
        tokens, stamp = self._buckets.get(key, (self.limit, now))
        return min(self.limit, tokens + (now - stamp) * self.rate)

    def retry_after(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        key = self.key(address)
        if key not in self._buckets:
            return 0.0
        tokens = self._tokens(key, self.clock())
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def failed(self, address: str) -> bool:
        """Count one failure; True if this one used up the address's last token."""
        key, now = self.key(address), self.clock()
        before = self._tokens(key, now)
        tokens = max(0.0, before - 1)
        self._buckets.pop(key, None)  # re-insert: dict order = least recently failed first
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_tracked:
            self._prune(now)
        return before >= 1 > tokens

    def _prune(self, now: float) -> None:
        for key in [k for k in self._buckets if self._tokens(k, now) >= self.limit]:
            del self._buckets[key]
        while len(self._buckets) > self.max_tracked:
            del self._buckets[next(iter(self._buckets))]
