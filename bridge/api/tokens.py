"""API tokens: ``Authorization: Token <token>``, configured as hashes with a scope.

Tokens are random secrets of 256 bits made by ``oicp-bridge api-token``, so a plain SHA-256 is
enough to keep them out of the configuration: no guessing can invert it, and unlike a password hash
it costs nothing per request. The presented token is hashed and looked up (a dict lookup of a
hash tells an attacker nothing about other tokens). OCPI 2.2.1 clients send the token base64
encoded, OCPI 2.1.1 clients send it plain: both are accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from bridge.config import ApiToken

TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    scope: str

    def may_write(self) -> bool:
        return self.scope == "write"


class Tokens:
    def __init__(self, tokens: Iterable[ApiToken]) -> None:
        self._by_hash = {t.hash: Client(t.name, t.scope) for t in tokens}

    def __len__(self) -> int:
        return len(self._by_hash)

    def client(self, authorization: str | None) -> Client | None:
        """The client an ``Authorization`` header belongs to; None if none does."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "token" or not token or len(token) > 512:
            return None
        found = self._by_hash.get(hash_token(token))
        if found is not None:
            return found
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        return self._by_hash.get(hash_token(decoded))
