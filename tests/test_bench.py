"""The benchmark's own arithmetic: how StatusNotifications are matched to hub pushes, and
the attack phase's table of figures.

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


def test_attack_table_shows_the_issues_figures() -> None:
    from bench.attack import AttackSizes, table

    ok = {"ok": True, "s": 0.02}
    result: dict[str, Any] = {
        "sizes": AttackSizes().__dict__,
        "idle_tls": {
            "rss_start_mib": 67.0, "rss_end_mib": 110.0,
            "waves": [{"rss_during_mib": 100.0 + i, "rss_after_mib": 100.0 + i,
                       "logins": [ok, {"ok": False, "s": 30.0}]} for i in range(5)],
            "refused": {'{reason="address_handshake_limit"}': 29500.0},
        },
        "login_flood": {
            "burst": {"answers": {"401": 10, "429": 2990}, "password_checks": 10.0,
                      "legit": [ok]},
            "sustained": {"seconds": 20.0, "answers": {"429": 100}, "password_checks": 0.0,
                          "legit": [ok]},
        },
        "ops_flood": {"held": [{"opened": 10000}, {"opened": 10000}], "logins": [ok],
                      "healthz": 200, "healthz_s": 0.03, "refused": {}, "log_bytes": 100},
        "unlisted": {"takeover": {"1": "403"}, "made_up": {"101": 1000}, "evses_created": 1000.0},
        "other_paths": {"requests": 20000, "log_lines": 1, "log_bytes": 272},
        "tls_bridge_log_bytes": 1, "plain_bridge_log_bytes": 2,
        "cpu": {"idle_tls": {"bridge_cores": 0.03, "machine_cores": 1.4}},
    }  # fmt: skip
    text = table(result)
    assert "67 → 100 → 101 → 102 → 103 → 104" in text and "+43" in text
    assert "median 0.02, max 0.02 (n=5), 5 failed" in text  # failures are shown, not hidden
    assert "20,000 idle sockets to the ops port" in text
    assert "| 20,000 requests for other paths: ocpp.rejected lines / bytes | 1 / 272 |" in text
