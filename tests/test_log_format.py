"""The JSON log format's one-call chain writes the lines structlog's processors wrote."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from bridge.ops import logging as bridge_logging
from bridge.ops.logging import setup_logging

TIMESTAMP = re.compile(r'"timestamp": "[^"]*"')


class Custom:
    def __structlog__(self) -> str:
        return "custom!"


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def emit(log: Any) -> None:
    log.info("push.ok", hub_code="000", duration_ms=0.4, pending=3, evse_id="DE*ABC*E1*1",
             ocpp_status={"1": "Charging"}, changed=["DE*ABC*E1*1"], text="ä\x1b")  # fmt: skip
    log.debug("not.shown", x=1)
    log.warning("push.retry", custom=Custom(), opaque=Opaque(), error=ValueError("bad"))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("push.error", retry_in_s=1.5)
    structlog.contextvars.bind_contextvars(request_id="r1")
    try:
        log.info("api.request", status=200)
    finally:
        structlog.contextvars.clear_contextvars()


def structlog_chain(stream: io.StringIO) -> None:
    """The processors the JSON format used before its chain became one call."""
    lock = bridge_logging.threading.Lock()
    structlog.configure(
        processors=[
            bridge_logging._filter,
            structlog.contextvars.merge_contextvars,
            bridge_logging._add_level_and_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            bridge_logging._tap,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=lambda name=None, *_: bridge_logging._Writer(name, stream, lock),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        cache_logger_on_first_use=False,
    )


@pytest.fixture
def restore_console() -> Iterator[None]:
    yield
    setup_logging("INFO", "console")  # what tests/conftest.py set up


def test_json_lines_are_those_of_structlogs_processors(restore_console: None) -> None:
    ours, theirs = io.StringIO(), io.StringIO()
    tapped: list[dict[str, Any]] = []
    bridge_logging.add_tap(tapped.append)
    try:
        setup_logging("INFO", "json", stream=ours)
        emit(structlog.get_logger("bridge.push"))
        ours_tapped = list(tapped)
        tapped.clear()
        structlog_chain(theirs)
        emit(structlog.get_logger("bridge.push"))
    finally:
        bridge_logging.remove_tap(tapped.append)
    lines = ours.getvalue().splitlines()
    assert len(lines) == 4  # the DEBUG line dropped
    assert TIMESTAMP.sub("T", ours.getvalue()) == TIMESTAMP.sub("T", theirs.getvalue())
    # Taps get the same events (keys in order; values are the objects logged, made anew).
    assert [list(e) for e in ours_tapped] == [list(e) for e in tapped]
    assert [e["event"] for e in ours_tapped] == ["push.ok", "push.retry", "push.error",
                                                 "api.request"]  # fmt: skip
    for line in lines:
        stamp = json.loads(line)["timestamp"]
        assert stamp.endswith("Z")
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert abs((datetime.now(UTC) - when).total_seconds()) < 5


def test_timestamps_as_datetime_isoformat_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for ns in (1_764_610_000_000_000_000, 1_764_610_000_123_456_789, 1_764_610_001_000_999_999):
        monkeypatch.setattr(bridge_logging.time, "time_ns", lambda ns=ns: ns)
        expected = datetime.fromtimestamp(ns // 1000 / 1e6, UTC).isoformat()
        assert bridge_logging._iso_now() == expected.replace("+00:00", "Z")
