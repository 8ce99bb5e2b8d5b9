"""The event loop the service runs on (``runtime.event_loop``).

uvloop runs the same asyncio code with its loop, transports and TLS in C: per charger message
and per hub push the bridge spends less CPU on it (bench/RESULTS.md), which is what keeps the
push lane's latency flat at high rates. ``auto`` uses it when it can be imported (it ships with
the bridge where it builds) and the configuration needs nothing only the standard loop does:
the OCPP port's own TLS handshake (``ocpp.security.tls_cert``) runs asyncio's TLS protocol on
the accepted socket (smaller read buffers, refused certificates logged as failed logins), which
uvloop's transports do not take, so with TLS on the OCPP port ``auto`` is asyncio.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.config import Settings

__all__ = ["loop_factory", "loop_name", "run", "standard_loop_needed", "tune_gc"]

T = TypeVar("T")
Choice = Literal["auto", "uvloop", "asyncio"]


def standard_loop_needed(settings: Settings) -> str | None:
    """Why this configuration needs asyncio's own loop (None: it does not)."""
    if settings.ocpp.security.tls_cert is not None:
        return "the OCPP port's TLS (ocpp.security.tls_cert) needs asyncio's TLS protocol"
    return None


def loop_factory(
    choice: Choice, *, standard_needed: str | None = None
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``choice`` names (None: asyncio's default)."""
    if choice == "asyncio":
        return None
    if standard_needed is not None:
        if choice == "uvloop":
            raise ConfigError("runtime.event_loop", f"uvloop cannot be used: {standard_needed}; "
                              "use auto or asyncio")  # fmt: skip
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "runtime.event_loop", "uvloop is not installed (use auto or asyncio)"
            ) from None
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: Choice, *, standard_needed: str | None = None) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    try:
        factory = loop_factory(choice, standard_needed=standard_needed)
    except ConfigError:
        main.close()  # never awaited
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the running loop is (for the start-up log line)."""
    module = type(asyncio.get_running_loop()).__module__
    return module.split(".", 1)[0]


def tune_gc() -> None:
    """Keep the cyclic GC off the long-lived start-up objects and collect young ones less often.

    Called once the service has started (and by bench/pushlane.py, which measures the bridge's
    objects as the service runs them). With thousands of connections the default thresholds
    cause ~160 ms stop-the-world generation-2 collections every few seconds; freezing what
    exists after start-up and a larger generation-0 threshold cut GC time by ~80 %
    (bench/RESULTS.md, E5).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
