"""The event loop the service runs on (``runtime.event_loop``).

uvloop runs the same asyncio code with its loop, transports and TLS in C: per charger message
and per hub push the bridge spends markedly less CPU on it (bench/RESULTS.md), which is what
keeps the push lane's latency flat at high rates. ``auto`` uses it when it can be imported
(it ships with the bridge where it builds), so a platform without it still runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from bridge.errors import ConfigError

__all__ = ["loop_factory", "loop_name", "run"]

T = TypeVar("T")
Choice = Literal["auto", "uvloop", "asyncio"]


def loop_factory(choice: Choice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``choice`` names (None: asyncio's default)."""
    if choice == "asyncio":
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


def run(main: Coroutine[Any, Any, T], choice: Choice) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()  # never awaited
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what the running loop is (for the start-up log line)."""
    module = type(asyncio.get_running_loop()).__module__
    return module.split(".", 1)[0]
