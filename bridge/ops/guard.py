"""Descriptors are shared by both ports: the ops port must never take the OCPP port's.

Every connection is an open file, and the process has a fixed number (RLIMIT_NOFILE). Idle
connections to the ops port once took them all, and then chargers could not connect. So the
ops port

* holds at most ``ops.max_connections`` connections, ``ops.max_connections_per_address`` of
  them from one address (so one client cannot lock the probes out), and closes idle ones after
  ``ops.keepalive_timeout`` (also those that never send a complete request);
* closes a new connection at once when the process has fewer than ``ops.descriptor_reserve``
  descriptors left (at most an eighth of the limit), which stay for chargers.

And when ``accept()`` fails anyway (EMFILE, ENFILE, ENOBUFS), asyncio logs a line with a
traceback for every attempt; ``summarise_accept_errors`` turns those into one line per
``ACCEPT_LOG_WINDOW`` with the number of failures.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from bridge.ocpp.throttle import network_key

log = structlog.get_logger("bridge")

ACCEPT_LOG_WINDOW = 10.0  # s
_ACCEPT_MESSAGE = "socket.accept() out of system resource"


def open_file_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


class ConnectionGuard:
    """Wraps a protocol factory (aiohttp's ``web.Server``): counts its connections and closes
    those beyond the cap or the descriptor reserve at once."""

    def __init__(
        self,
        factory: Callable[[], asyncio.BaseProtocol],
        *,
        max_connections: int,
        per_address: int,
        descriptor_reserve: int,
        file_limit: Callable[[], int] = open_file_limit,
    ) -> None:
        self.factory = factory
        self.max_connections = max_connections
        self.per_address = per_address
        self.descriptor_reserve = descriptor_reserve
        self.file_limit = file_limit
        self.open = 0
        self._by_address: Counter[str] = Counter()
        #: Called with the reason of every refused connection (metrics hook).
        self.on_refused: Callable[[str], None] | None = None
        self.refused: Counter[str] = Counter()

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open >= self.max_connections:
            return _Refuse(self, "connection_limit")
        self.open += 1
        return _Counted(self, self.factory())

    def _refuse(self, reason: str) -> None:
        self.refused[reason] += 1
        if self.on_refused is not None:
            try:
                self.on_refused(reason)
            except Exception:  # a metrics bug must not break accepting
                log.exception("ops.hook_failed", hook="on_refused")

    def admit(self, transport: asyncio.BaseTransport) -> tuple[str | None, str | None]:
        """(address key counted, None) for a connection it lets in, else (None, why not)."""
        if self.reserve_reached(transport):
            return None, "descriptor_reserve"
        peername = transport.get_extra_info("peername")
        key = network_key(str(peername[0])) if peername else "?"
        if self._by_address[key] >= self.per_address:
            return None, "address_limit"
        self._by_address[key] += 1
        return key, None

    def release(self, key: str | None) -> None:
        self.open -= 1
        if key is not None:
            left = self._by_address[key] - 1
            if left > 0:
                self._by_address[key] = left
            else:
                del self._by_address[key]

    def reserve_reached(self, transport: asyncio.BaseTransport) -> bool:
        """Whether the process is within ``descriptor_reserve`` of its open-file limit.

        The kernel gives a new socket the lowest free descriptor, so its number is a lower
        bound of the files open: no listing of /proc per connection.
        """
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        limit = self.file_limit()
        # Never more than an eighth of a small limit: the probes must get through normally.
        return fd >= limit - min(self.descriptor_reserve, limit // 8)


class _Refuse(asyncio.Protocol):
    def __init__(self, guard: ConnectionGuard, reason: str) -> None:
        self.guard, self.reason = guard, reason

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.guard._refuse(self.reason)
        assert isinstance(transport, asyncio.Transport)
        transport.abort()


class _Counted(asyncio.Protocol):
    """The wrapped protocol, and the count kept right when its connection ends."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.BaseProtocol) -> None:
        self.guard = guard
        self.inner: Any = inner
        self.counted = True
        self.key: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.key, refused = self.guard.admit(transport)
        if refused is not None:
            self._release()
            self.guard._refuse(refused)
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            self.inner = asyncio.Protocol()  # never started: nothing to tell it
            return
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self.inner.connection_lost(exc)

    def _release(self) -> None:
        if self.counted:
            self.counted = False
            self.guard.release(self.key)


def summarise_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """One ``bridge.accept_failed`` line per window instead of a traceback per failed accept."""
    previous = loop.get_exception_handler()
    state = {"failed": 0, "logged_at": -math.inf}

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not str(context.get("message", "")).startswith(_ACCEPT_MESSAGE):
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        state["failed"] += 1
        now = time.monotonic()
        if now - state["logged_at"] >= ACCEPT_LOG_WINDOW:
            error = context.get("exception")
            log.error("bridge.accept_failed", failed=int(state["failed"]),
                      error=f"{type(error).__name__}: {error}" if error else None,
                      open_file_limit=open_file_limit(), window_s=ACCEPT_LOG_WINDOW,
                      reason="out of descriptors or memory: new connections wait (asyncio "
                      "retries each listening socket after 1 s)")  # fmt: skip
            state["failed"], state["logged_at"] = 0, now

    loop.set_exception_handler(handler)
