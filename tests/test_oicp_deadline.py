"""Time limits on one shared timer: the outcomes of asyncio.timeout(), on both event loops."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import pytest

from bridge.eventloop import run
from bridge.oicp.deadline import Deadlines

LOOPS = ["asyncio", "uvloop"]


async def limited(deadlines: Deadlines, seconds: float, work: Awaitable[object]) -> object:
    """The pattern of OicpClient._push."""
    limit = deadlines.start(seconds)
    try:
        try:
            return await work
        except asyncio.CancelledError:
            if deadlines.timed_out(limit):
                raise TimeoutError from None
            raise
        finally:
            deadlines.stop(limit)
    except TimeoutError:
        return "timed out"


def on(loop: str, main: Callable[[], Awaitable[None]]) -> None:
    async def wrapped() -> None:
        await main()

    run(wrapped(), loop)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_limit_that_passes_raises_timeout_and_others_are_kept(loop: str) -> None:
    async def main() -> None:
        deadlines = Deadlines()
        started = time.monotonic()
        fast, slow, never = await asyncio.gather(
            limited(deadlines, 5.0, asyncio.sleep(0.05, "fast")),
            # Added after a later limit: the timer is moved forward for it.
            limited(deadlines, 0.1, asyncio.sleep(5, "slow")),
            limited(deadlines, 0.3, asyncio.Event().wait()),
        )
        took = time.monotonic() - started
        assert (fast, slow, never) == ("fast", "timed out", "timed out")
        assert 0.29 <= took < 2.0
        # Nothing left over: a later await in the same task is not cancelled.
        assert await limited(deadlines, 5.0, asyncio.sleep(0.01, "again")) == "again"
        assert deadlines._limits == set()

    on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_cancellation_from_elsewhere_stays_a_cancellation(loop: str) -> None:
    async def main() -> None:
        deadlines = Deadlines()
        task = asyncio.ensure_future(limited(deadlines, 5.0, asyncio.Event().wait()))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert deadlines._limits == set()

    on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_limit_that_passes_while_the_work_swallows_it_leaves_no_cancellation(loop: str) -> None:
    async def stubborn() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # finishes anyway
            await asyncio.sleep(5)
        return "finished"

    async def main() -> None:
        deadlines = Deadlines()
        assert await limited(deadlines, 0.05, stubborn()) == "finished"
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        await asyncio.sleep(0.01)  # not cancelled later either

    on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_many_limits_in_a_row_share_one_timer(loop: str) -> None:
    async def main() -> None:
        deadlines = Deadlines()
        for n in range(200):
            assert await limited(deadlines, 10.0, asyncio.sleep(0, n)) == n
        timer = deadlines._timer
        assert timer is not None and deadlines._limits == set()
        for _ in range(3):
            await limited(deadlines, 10.0, asyncio.sleep(0))
        assert deadlines._timer is timer  # not re-armed: each new limit lies after it

    on(loop, main)
