"""The hub lane's rate limit: no 60-second window carries more than the configured number."""

from __future__ import annotations

from bisect import bisect_left
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.app import Bridge
from bridge.ratelimit import PacedWindow, SlidingWindow
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
    st.floats(1, 10),
)
@example(1, [1.0230335008104365, 1.0230335008104365], 1.0)  # now + (at - now) rounds below at
def test_no_window_carries_more_than_the_limit(limit: int, gaps: list[float], burst: float) -> None:
    arrivals, t = [], 0.0
    for gap in gaps:
        t += gap
        arrivals.append(t)
    assert busiest_window(admitted_times(SlidingWindow(limit, 60.0), arrivals)) <= limit
    paced = admitted_times(PacedWindow(limit, 60.0, burst=burst), arrivals)
    assert busiest_window(paced) <= limit
    # Nothing is held back longer than the window and the pace require.
    assert all(s >= a for s, a in zip(paced, arrivals, strict=True))


def test_a_sliding_window_lets_a_burst_up_to_the_limit_go_at_once() -> None:
    assert admitted_times(SlidingWindow(50, 60.0), [0.0] * 51) == [0.0] * 50 + [60.0]


def test_the_paced_window_spreads_requests_at_the_average_rate() -> None:
    """2000 a minute: a second's worth at once, then one every 30 ms; never 2001 a minute."""
    sent = admitted_times(PacedWindow(2000, 60.0), [0.0] * 2100)
    assert sent[:33] == [0.0] * 33
    assert sent[34] - sent[33] == pytest.approx(0.03)
    assert busiest_window(sent) == 2000
