"""The push tally's series are the ones prometheus_client's Counter and Histogram expose."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from bridge.ops.metric_table import BY_NAME
from bridge.ops.metrics import DURATION_BUCKETS
from bridge.ops.push_tally import PushTally

PUSHES = st.lists(
    st.tuples(
        st.sampled_from(["insert", "update", "fullLoad", "data_update"]),
        st.sampled_from(["ok", "retry", "defer"]),
        st.sampled_from(["000", "022", None]),
        st.one_of(st.sampled_from([0.0, *DURATION_BUCKETS, 1e9, -0.5]),
                  st.floats(min_value=-1, max_value=100, allow_nan=False)),
    ),
    max_size=40,
)  # fmt: skip


@given(PUSHES, st.sampled_from([DURATION_BUCKETS, (2e-7, 0.5, 1e7, float("inf"))]))
@example([("update", "ok", "000", 0.025), ("update", "ok", "000", 0.0250001)], DURATION_BUCKETS)
def test_the_series_are_prometheus_clients(
    pushes: list[tuple[str, str, str | None, float]], buckets: tuple[float, ...]
) -> None:
    theirs = CollectorRegistry()
    doc, hdoc = BY_NAME["bridge_pushes_total"], BY_NAME["bridge_push_duration_seconds"]
    counter = Counter("bridge_pushes_total", doc.help, doc.labels, registry=theirs)
    histogram = Histogram("bridge_push_duration_seconds", hdoc.help, hdoc.labels,
                          buckets=buckets, registry=theirs)  # fmt: skip
    ours = CollectorRegistry()
    tally = PushTally(buckets)
    ours.register(tally)
    for action, outcome, code, seconds in pushes:
        counter.labels(action=action, outcome=outcome, code=code or "none").inc()
        histogram.labels(action=action).observe(max(0.0, seconds))
        tally.add(action, outcome, code, seconds)
    # prometheus_client writes series in the order their children were made; ours in the
    # order of first use too, so the texts are equal line for line.
    assert generate_latest(ours).decode() == generate_latest(theirs).decode()
