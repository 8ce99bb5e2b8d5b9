"""How many connections the OCPP port holds open, overall and per address, before any HTTP.

Every TCP connection costs a descriptor and memory before its charger has said who it is; a TLS
handshake in progress ~100 KiB (asyncio's TLS objects). So the port keeps counts and refuses the
excess at once (the socket is reset, nothing is read):

* open connections per address (IPv6: per /64), ``max_connections_per_address``: chargers
  behind one carrier NAT or VPN gateway share an address, so this is generous by default;
* TLS handshakes in progress, overall (``max_tls_handshakes``) and per address
  (``max_tls_handshakes_per_address``): a flood of connections that never finish their
  handshake cannot hold more than that much memory, and one address not all of it.

Refusals are counted per reason (metrics) and logged at most once per ``LOG_WINDOW`` with
the numbers since the previous line (``ocpp.connections_refused``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from enum import StrEnum

import structlog

from bridge.ocpp.throttle import network_key

log = structlog.get_logger("bridge.ocpp")

LOG_WINDOW = 10.0  # s


class Refused(StrEnum):
    """Why a connection was refused before its handshake; stable labels for logs and metrics."""

    ADDRESS_LIMIT = "address_limit"
    HANDSHAKE_LIMIT = "handshake_limit"
    ADDRESS_HANDSHAKE_LIMIT = "address_handshake_limit"


class Admission:
    """Counts of open connections and TLS handshakes in progress; refuses beyond the caps."""

    def __init__(
        self,
        *,
        per_address: int,
        handshakes: int,
        handshakes_per_address: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_address = per_address
        self.handshakes = handshakes
        self.handshakes_per_address = handshakes_per_address
        self.clock = clock
        self._open: Counter[str] = Counter()  # network key → open connections
        self._handshaking: Counter[str] = Counter()  # network key → TLS handshakes running
        self.handshaking = 0
        #: Called with a Refused label for every refused connection (metrics hook).
        self.on_refused: Callable[[str], None] | None = None
        self._refused: Counter[str] = Counter()  # since the last log line
        self._logged_at = -float("inf")

    def open(self, address: str) -> str | None:
        """Count a new connection from ``address``; its key, or None if it must be refused."""
        key = network_key(address)
        if self._open[key] >= self.per_address:
            self._refuse(Refused.ADDRESS_LIMIT, key)
            return None
        self._open[key] += 1
        return key

    def close(self, key: str) -> None:
        """A connection counted by ``open`` is gone."""
        _decrement(self._open, key)

    def start_handshake(self, key: str) -> bool:
        """Count a TLS handshake about to start; False if it must be refused."""
        if self.handshaking >= self.handshakes:
            self._refuse(Refused.HANDSHAKE_LIMIT, key)
            return False
        if self._handshaking[key] >= self.handshakes_per_address:
            self._refuse(Refused.ADDRESS_HANDSHAKE_LIMIT, key)
            return False
        self._handshaking[key] += 1
        self.handshaking += 1
        return True

    def end_handshake(self, key: str) -> None:
        """A handshake counted by ``start_handshake`` finished or failed."""
        _decrement(self._handshaking, key)
        self.handshaking -= 1

    def open_from(self, address: str) -> int:
        return self._open.get(network_key(address), 0)

    def _refuse(self, reason: Refused, key: str) -> None:
        self._refused[reason.value] += 1
        now = self.clock()
        if now - self._logged_at >= LOG_WINDOW:
            log.warning("ocpp.connections_refused", refused=dict(self._refused), last_address=key,
                        open_from_address=self._open.get(key, 0), handshakes=self.handshaking,
                        window_s=LOG_WINDOW)  # fmt: skip
            self._refused.clear()
            self._logged_at = now
        if self.on_refused is not None:
            try:
                self.on_refused(reason.value)
            except Exception:  # a metrics bug must not break accepting
                log.exception("ocpp.hook_failed", hook="on_connection_refused")


def _decrement(counter: Counter[str], key: str) -> None:
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]  # no entry per address that ever connected
