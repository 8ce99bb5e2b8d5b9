"""Charger passwords: salted scrypt hashes (``scrypt:N:r:p:salt:digest``), no I/O.

Passwords are machine secrets of at least 16 random characters (OCPP), so their entropy, not
the hash cost, is what resists guessing; the default cost is kept low because every charger
pays it on its first login after a start (docs/security.md, "Why the default cost is low").
Used by the configuration (to check a hash's format), the catalog, the CLI and the OCPP
handshake.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from dataclasses import dataclass, field, replace

__all__ = [
    "DEFAULT_COST",
    "DEFAULT_N",
    "DEFAULT_P",
    "DEFAULT_R",
    "MAX_COST",
    "MIN_COST",
    "MIN_PASSWORD_LENGTH",
    "SCHEME",
    "PasswordHash",
    "hash_password",
    "password_problem",
]

SCHEME = "scrypt"
# Cost = log2(N). 10: ~1.5 ms and 1 MiB per check on one core, so 10,000 chargers logging in
# again after a restart need ~15 s of CPU instead of ~5 min at 14, the former default.
DEFAULT_COST, MIN_COST, MAX_COST = 10, 10, 20
DEFAULT_N, DEFAULT_R, DEFAULT_P = 1 << DEFAULT_COST, 8, 1
# OCPP: a 1.6 AuthorizationKey is 16-20 random bytes, a 2.0.1 BasicAuthPassword 16-40 characters.
MIN_PASSWORD_LENGTH = 16
_DKLEN = 32
_SALT_BYTES = 16
_MIN_MEMORY = 2**20  # 128·N·r bytes: refuse hashes cheaper than N = 2^10, r = 8 (1 MiB)
_MAX_N = 1 << MAX_COST  # refuse hashes that would need more than 1 GiB per check


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
        if _too_cheap(n, r):
            raise ValueError("password hash too cheap (scrypt needs 128·N·r ≥ 1 MiB)")
        if len(salt) < 8 or len(digest) < 16:
            raise ValueError("password hash salt or digest too short")
        return cls(n, r, p, salt, digest)

    @classmethod
    def decoy(cls, n: int, r: int, p: int) -> PasswordHash:
        """A hash no password matches, at the given cost (checked for unknown IDs, so that the
        time of an answer does not tell which IDs exist)."""
        return cls(n, r, p, os.urandom(_SALT_BYTES), os.urandom(_DKLEN))

    @property
    def work(self) -> int:
        """Relative cost of one check (scrypt time grows with N·r·p)."""
        return self.n * self.r * self.p

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

    def timed_verify(self, password: bytes) -> tuple[bool, float]:
        """``verify`` and the seconds it took (run in a worker thread)."""
        started = time.perf_counter()
        return self.verify(password), time.perf_counter() - started

    def __str__(self) -> str:
        return ":".join(
            (SCHEME, str(self.n), str(self.r), str(self.p), _b64(self.salt), _b64(self.digest))
        )


def hash_password(
    password: bytes | str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """A new salted hash of ``password`` (str is taken as UTF-8).

    The length rule (``password_problem``) is for new charger passwords and is applied by
    ``oicp-bridge hash-password``; this function only refuses a cost below the floor.
    """
    if _too_cheap(n, r):
        raise ValueError("scrypt cost too low (needs 128·N·r ≥ 1 MiB)")
    secret = password.encode("utf-8") if isinstance(password, str) else password
    salted = PasswordHash(n, r, p, os.urandom(_SALT_BYTES), bytes(_DKLEN))
    return str(replace(salted, digest=salted.derive(secret)))


def _too_cheap(n: int, r: int) -> bool:
    return 128 * n * r < _MIN_MEMORY  # scrypt's memory: below 1 MiB it is not memory-hard


def password_problem(password: str | bytes) -> str | None:
    """Why ``password`` must not become a charger password (None: it may).

    Characters for text, bytes for a binary 1.6 AuthorizationKey. Only the length can be
    checked here; that the password is random is up to whoever makes it (docs/security.md,
    "Charger passwords").
    """
    unit = "characters" if isinstance(password, str) else "bytes"
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"the password has {len(password)} {unit}; charger passwords need at least "
            f"{MIN_PASSWORD_LENGTH} random {unit} (OCPP: BasicAuthPassword 16-40 characters, "
            f"AuthorizationKey 16-20 bytes). Set a new random one on the charger, e.g. from "
            f"`openssl rand -hex 20`"
        )
    return None


def _maxmem(n: int, r: int, p: int) -> int:
    return 128 * n * r * (p + 1) + 2**20


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("empty or non-ASCII base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
