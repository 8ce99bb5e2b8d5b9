"""The hub requests' counter and duration histogram, tallied in plain numbers.

``bridge_pushes_total`` and ``bridge_push_duration_seconds`` grow by one push at a time, at
thousands a second on a busy lane. prometheus_client's labelled children take a lock per
value and check their state on every ``inc``/``observe``, a measurable share of a push's CPU
(bench/RESULTS.md, push lane). Here a push adds to two dicts on the event loop; the collector
turns them into the same series at scrape time (a scrape may see a push's count before its
duration: the same as with two children).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from bridge.ops.metric_table import BY_NAME

__all__ = ["PushTally"]


class PushTally:
    """Counts per (action, outcome, code) and durations per action; a registry collector."""

    def __init__(self, buckets: Iterable[float]) -> None:
        # As prometheus_client's Histogram: the bounds sorted, +Inf always the last bucket.
        self.bounds = tuple(sorted(float(b) for b in buckets if float(b) != math.inf))
        self._labels = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self.counts: dict[tuple[str, str, str], int] = {}
        #: Per action: a count per bucket (the last one above every bound) and the sum.
        self.durations: dict[str, tuple[list[int], list[float]]] = {}

    def add(self, action: str, outcome: str, code: str | None, seconds: float) -> None:
        key = (action, outcome, code or "none")
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        per = self.durations.get(action)
        if per is None:
            per = self.durations[action] = ([0] * (len(self.bounds) + 1), [0.0])
        seconds = max(0.0, seconds)
        per[0][bisect_left(self.bounds, seconds)] += 1  # le: a value on a bound is in it
        per[1][0] += seconds

    def describe(self) -> Iterable[Metric]:
        return []  # the names are fixed in metric_table; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        doc = BY_NAME["bridge_pushes_total"]
        pushes = CounterMetricFamily("bridge_pushes", doc.help, labels=list(doc.labels))
        for labels, count in list(self.counts.items()):
            pushes.add_metric(list(labels), float(count))
        yield pushes
        doc = BY_NAME["bridge_push_duration_seconds"]
        durations = HistogramMetricFamily(
            "bridge_push_duration_seconds", doc.help, labels=list(doc.labels)
        )
        for action, (counts, total) in list(self.durations.items()):
            cumulative, buckets = 0, []
            for label, n in zip(self._labels, list(counts), strict=True):
                cumulative += n
                buckets.append((label, float(cumulative)))
            durations.add_metric([action], buckets, total[0])
        yield durations
