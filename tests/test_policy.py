"""Retry classification, backoff bounds and the token bucket (unit tests of one module)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.delivery.policy import Verdict, backoff, classify, is_ambiguous
from bridge.errors import HubRejectedError, HubTransportError
from bridge.ratelimit import TokenBucket


def rejected(code: str | None = None, http: int | None = 200) -> HubRejectedError:
    return HubRejectedError("x", code=code, http_status=http)


@pytest.mark.parametrize("code", ["001", "002", "009", "021", "310", "320"])
def test_transient_oicp_codes_defer_that_request(code: str) -> None:
    """The hub answered, for this request: it waits, the others go on."""
    assert classify(rejected(code), "update") is Verdict.DEFER
    assert classify(rejected(code), "fullLoad") is Verdict.DEFER


@pytest.mark.parametrize("http", [408, 429, 500, 502, 503, 504])
def test_transient_http_statuses_retry(http: int) -> None:
    assert classify(rejected(None, http), "update") is Verdict.RETRY


def test_network_errors_and_timeouts_retry() -> None:
    assert classify(HubTransportError("timeout"), "insert") is Verdict.RETRY


def test_what_may_have_reached_the_hub_is_ambiguous() -> None:
    assert is_ambiguous(HubTransportError("timeout", maybe_applied=True))
    assert not is_ambiguous(HubTransportError("connection refused"))
    assert is_ambiguous(rejected(None, 504)) and is_ambiguous(rejected(None, 502))
    assert not is_ambiguous(rejected(None, 503)) and not is_ambiguous(rejected("009"))


def test_022_to_delete_means_the_record_is_gone() -> None:
    assert classify(rejected("022"), "delete") is Verdict.ABSENT


@pytest.mark.parametrize(
    ("code", "http"),
    [("017", 401), ("017", 200), ("300", 404), (None, 401), (None, 403), ("210", 200)],
)
def test_configuration_errors_pause(code: str | None, http: int) -> None:
    assert classify(rejected(code, http), "update") is Verdict.PAUSE


def test_022_flips_insert_and_update_only() -> None:
    assert classify(rejected("022"), "update") is Verdict.FLIP
    assert classify(rejected("022"), "insert") is Verdict.FLIP
    assert classify(rejected("022"), "fullLoad") is Verdict.PARK


@pytest.mark.parametrize(("code", "http"), [("018", 200), ("603", 200), (None, 400), ("604", 200)])
def test_data_errors_park(code: str | None, http: int) -> None:
    assert classify(rejected(code, http), "update") is Verdict.PARK


@given(st.integers(1, 60), st.floats(0.01, 5), st.floats(5, 600))
def test_backoff_is_bounded(attempt: int, initial: float, cap: float) -> None:
    assert 0 <= backoff(attempt, initial, cap) <= min(cap, initial * 2 ** (attempt - 1))


def test_retry_after_is_a_lower_bound_capped_by_the_maximum() -> None:
    assert backoff(1, 0.1, 60, retry_after=5) >= 5
    assert backoff(1, 0.1, 2, retry_after=30) == 2


def test_token_bucket_allows_burst_then_asks_to_wait() -> None:
    now = [0.0]
    bucket = TokenBucket.per_minute(120, burst=2)  # 2 per second, burst of 2
    bucket.clock, bucket._stamp = (lambda: now[0]), 0.0
    assert [bucket.take(), bucket.take()] == [0, 0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 1.5  # 3 tokens' worth later: one pays the debt, the burst caps the rest
    assert [bucket.take(), bucket.take(), bucket.take()] == [0, 0, pytest.approx(0.5)]
