"""The benchmark's own arithmetic: how StatusNotifications are matched to hub pushes.

Only the pure parts; the benchmark itself runs with `make bench`, never in the test suite.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.run import match_pushes, summary_ms


def push(at: float, *records: tuple[str, str], code: str = "000") -> dict[str, Any]:
    return {"endpoint": "status", "time": at, "code": code, "records": [list(r) for r in records]}


def test_each_report_is_matched_to_the_first_accepted_push_of_its_status_after_it() -> None:
    sent = [
        [10.0, 10.002, "E1", "Occupied"],
        [11.0, 11.002, "E1", "Available"],
        [12.0, 12.002, "E2", "Occupied"],  # coalesced away: never pushed on its own
    ]
    pushes = [
        push(9.0, ("E1", "Occupied")),  # before the report: not its push
        push(10.004, ("E1", "Occupied")),
        push(11.001, ("E1", "Available"), code="022"),  # refused: does not count
        push(11.010, ("E1", "Available")),
        {"endpoint": "data", "time": 12.5, "code": "000", "records": [["E2", "Occupied"]]},
    ]
    result = match_pushes(sent, pushes)
    assert result["unmatched"] == 1 and result["pushes_refused"] == 1
    assert result["to_hub"]["n"] == 2
    assert result["to_hub"]["max_ms"] == pytest.approx(10.0)
    assert [s["evse_id"] for s in result["to_hub_slowest"]] == ["E1", "E1"]
    assert result["to_hub_slowest"][0]["ms"] == pytest.approx(10.0)


def test_summary_of_no_values_is_empty_not_an_error() -> None:
    assert summary_ms([]) == {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None,
                              "mean_ms": None}  # fmt: skip
    assert summary_ms([0.001, 0.002, 0.003])["p50_ms"] == pytest.approx(2.0)
