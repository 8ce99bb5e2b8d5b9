"""The hub lane's rate limit: no 60-second window carries more than the configured number."""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.app import Bridge
from tests.conftest import settings_for


def admitted_times(limiter: object, arrivals: list[float]) -> list[float]:
    """Drive ``limiter`` with a fake clock: each caller arrives, waits as told, then sends."""
    now = [0.0]
    limiter.clock = lambda: now[0]  # type: ignore[attr-defined]
    sent = []
    for arrival in arrivals:
        now[0] = max(now[0], arrival)
        now[0] += limiter.take()  # type: ignore[attr-defined]
        sent.append(now[0])
    return sent


def busiest_window(times: list[float], window: float = 60.0) -> int:
    times = sorted(times)
    return max((bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def test_the_push_lane_admits_no_more_than_the_limit_in_the_first_minute(tmp_path: Path) -> None:
    bridge = Bridge(settings_for(tmp_path, "http://127.0.0.1:1",
                                 delivery={"rate_limit_per_minute": 2000}))  # fmt: skip
    limiter = bridge.make_worker(client=None).limiter  # type: ignore[arg-type]
    sent = admitted_times(limiter, [0.0] * 2100)
    assert sum(1 for t in sent if t < 60.0) == 2000
    assert busiest_window(sent) == 2000


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40),
    st.lists(st.floats(0, 30, allow_nan=False), min_size=1, max_size=200),
)
def test_no_window_carries_more_than_the_limit(limit: int, gaps: list[float]) -> None:
    from bridge.ratelimit import SlidingWindow

    arrivals, t = [], 0.0
    for gap in gaps:
        t += gap
        arrivals.append(t)
    limiter = SlidingWindow(limit, 60.0)
    sent = admitted_times(limiter, arrivals)
    assert busiest_window(sent) <= limit
    # ...and it does not hold back what the window allows: a burst up to the limit goes at once.
    burst = admitted_times(SlidingWindow(limit, 60.0), [0.0] * limit)
    assert burst == [0.0] * limit
