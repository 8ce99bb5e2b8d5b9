"""The JSON log format's one-call chain writes the lines structlog's processors wrote."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import threading
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
    lines = bridge_logging._Lines(stream)
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
        logger_factory=lambda name=None, *_: bridge_logging._Writer(name, lines),
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


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_lines_on_the_loop_are_gathered_and_written_in_order() -> None:
    stream = CountingStream()
    lines = bridge_logging._Lines(stream)
    for n in range(50):
        lines.write(f"line {n}")
    assert stream.getvalue() == ""  # gathered, not yet written
    done = threading.Event()
    threading.Thread(target=lambda: (lines.write("from a thread"), done.set())).start()
    done.wait(5)
    # A thread without a loop writes at once, and what the loop gathered goes first.
    assert stream.getvalue().splitlines() == [*(f"line {n}" for n in range(50)), "from a thread"]
    lines.write("after")
    await asyncio.sleep(bridge_logging.GATHER_S * 5)
    assert stream.getvalue().splitlines()[-1] == "after"
    assert stream.writes == 2
    for n in range(bridge_logging.GATHER_LINES):  # a burst is written without waiting
        lines.write(f"burst {n}")
    assert stream.writes == 3 and stream.getvalue().endswith(f"burst {n}\n")


def test_lines_a_finished_loop_gathered_go_out_with_the_next_line() -> None:
    stream = CountingStream()
    lines = bridge_logging._Lines(stream)

    async def log_and_end() -> None:
        lines.write("last of the loop")  # its loop ends before the gathering callback runs

    asyncio.run(log_and_end())
    lines.write("after the loop")
    assert stream.getvalue() == "last of the loop\nafter the loop\n"

    async def log_again() -> None:  # a later loop on the same thread gathers anew
        lines.write("next loop")
        await asyncio.sleep(bridge_logging.GATHER_S * 5)

    asyncio.run(log_again())
    assert stream.getvalue().endswith("after the loop\nnext loop\n")


def test_lines_without_a_loop_are_written_at_once() -> None:
    stream = CountingStream()
    lines = bridge_logging._Lines(stream)
    lines.write("a")
    lines.write("b")
    assert stream.getvalue() == "a\nb\n"
    assert stream.writes == 2


def test_lines_still_gathered_at_exit_are_written() -> None:
    script = (
        "import asyncio, structlog\n"
        "from bridge.ops.logging import setup_logging\n"
        "async def main():\n"
        "    setup_logging('INFO', 'json')\n"
        "    structlog.get_logger('t').info('last.words', n=1)\n"
        "    raise SystemExit(0)\n"  # leaves the loop before it runs the flush
        "asyncio.new_event_loop().run_until_complete(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    assert json.loads(out.stdout)["event"] == "last.words"


class FailingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def write(self, text: str) -> int:
        self.attempts += 1
        raise BrokenPipeError("the log reader is gone")


async def test_a_failing_stream_costs_the_lines_once_not_a_loop_of_errors(
    capfd: pytest.CaptureFixture[str],
) -> None:
    stream = FailingStream()
    lines = bridge_logging._Lines(stream)
    lines.write("lost")
    await asyncio.sleep(bridge_logging.GATHER_S * 50)
    assert stream.attempts == 1  # the callback failed once and did not schedule itself again
    lines.write("lost too")
    await asyncio.sleep(bridge_logging.GATHER_S * 50)
    assert stream.attempts == 2  # the next line tries again
    assert capfd.readouterr().err.count("log lines lost") == 1


async def test_warnings_go_out_at_once_with_what_was_gathered_before_them() -> None:
    stream = CountingStream()
    lines = bridge_logging._Lines(stream)
    lines.write("info")
    lines.write("warning", at_once=True)
    assert stream.getvalue() == "info\nwarning\n" and stream.writes == 1


def test_a_line_logged_while_a_line_is_written_does_not_hang() -> None:
    """A finalizer that logs may run inside the write (the lock is reentrant)."""
    lines: Any = None

    class Reentrant(CountingStream):
        def write(self, text: str) -> int:
            if self.writes == 0:
                self.writes += 1
                lines.write("from inside", at_once=True)
                return super().write(text)
            return super().write(text)

    stream = Reentrant()
    lines = bridge_logging._Lines(stream)
    done = threading.Event()
    threading.Thread(target=lambda: (lines.write("outer"), done.set()), daemon=True).start()
    assert done.wait(5)
    assert sorted(stream.getvalue().splitlines()) == ["from inside", "outer"]


def test_a_hot_logger_writes_the_lines_structlogs_logger_writes(restore_console: None) -> None:
    from bridge.hotlog import HotLogger

    hot = HotLogger("bridge.push")
    fields: dict[str, Any] = {"hub_code": "000", "duration_ms": 0.4, "pending": 3,
                              "ocpp_status": ["Charging"], "text": "ä\x1b",
                              "custom": Custom()}  # fmt: skip
    tapped: list[dict[str, Any]] = []
    bridge_logging.add_tap(tapped.append)
    try:
        for fmt in ("json", "console"):
            ours, theirs = io.StringIO(), io.StringIO()
            setup_logging("INFO", fmt, stream=ours)
            hot.info("push.ok", **fields)
            setup_logging("INFO", fmt, stream=theirs)  # a new set-up: looked up again
            structlog.get_logger("bridge.push").info("push.ok", **fields)
            hot.info("status.received", n=1)
            bridge_logging.set_level("WARNING")
            hot.info("not.shown")
            setup_logging("INFO", fmt, stream=io.StringIO())  # writes what was gathered
            assert ours.getvalue().count("\n") == 1
            first, second = theirs.getvalue().splitlines()
            stamp = re.compile(r'"timestamp": "[^"]*"|^\S+Z ')
            assert stamp.sub("T", ours.getvalue().strip()) == stamp.sub("T", first)
            assert "status.received" in second
    finally:
        bridge_logging.remove_tap(tapped.append)
    # Taps see hot lines as any other event.
    assert [e["event"] for e in tapped].count("push.ok") == 4


HOT_SCRIPT = """
import asyncio, io, json, sys, threading
import structlog
from bridge.hotlog import HotLogger
from tests.test_log_format import Custom
from bridge.ops import logging as bridge_logging
from bridge.ops.logging import setup_logging

def run(stream):
    setup_logging("INFO", "json", stream=stream)
    hot, log = HotLogger("bridge.push"), structlog.get_logger("bridge.push")
    async def main():
        for n in range(5):
            hot.info("push.ok", n=n, ocpp_status=["Charging"], text="ä\\x1b")
            log.info("other", n=n)
        log.warning("push.retry", n=5)  # written at once, after what was gathered
        hot.info("push.ok", n=6, custom=Custom())
        threading.Thread(target=hot.info, args=("from.thread",), kwargs={"n": 7}).start()
        await asyncio.sleep(0.05)
        hot.info("push.ok", n=8)
    asyncio.run(main())

deferred = io.StringIO()
run(deferred)  # no taps, no context variables: hot lines are rendered when written
bridge_logging.add_tap(lambda event: None)
general = io.StringIO()
run(general)  # with a tap: every line rendered when logged
setup_logging("INFO", "json", stream=io.StringIO())  # writes what the last loop gathered
print(json.dumps([deferred.getvalue(), general.getvalue()]))
"""


def test_hot_lines_rendered_when_written_are_the_lines_rendered_at_once() -> None:
    out = subprocess.run([sys.executable, "-c", HOT_SCRIPT], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    deferred, general = json.loads(out.stdout)
    assert TIMESTAMP.sub("T", deferred) == TIMESTAMP.sub("T", general)
    events = [json.loads(line) for line in deferred.splitlines()]
    assert [(e["event"], e.get("n")) for e in events] == [
        *[(name, n) for n in range(5) for name in ("push.ok", "other")],
        ("push.retry", 5), ("push.ok", 6), ("from.thread", 7), ("push.ok", 8),
    ]  # fmt: skip
    assert events[11]["custom"] == "custom!" and events[0]["text"] == "ä\x1b"
    for event in events:
        when = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        assert abs((datetime.now(UTC) - when).total_seconds()) < 30


async def test_a_hot_line_waits_unrendered_and_keeps_the_moment_it_was_logged(
    monkeypatch: pytest.MonkeyPatch, restore_console: None
) -> None:
    from bridge.hotlog import HotLogger

    monkeypatch.setattr(structlog.contextvars, "_CONTEXT_VARS", {})  # none bound in this process
    stream = io.StringIO()
    setup_logging("INFO", "json", stream=stream)
    hot = HotLogger("bridge.push")
    at = 1_764_610_000_123_456_789
    with monkeypatch.context() as patched:
        patched.setattr(bridge_logging.time, "time_ns", lambda: at)
        hot.info("push.ok", n=1)
    lines = bridge_logging._Current.lines
    assert lines is not None and [type(p) for p in lines._pending] == [dict]  # not rendered yet
    await asyncio.sleep(0.05)  # the gathering callback writes it
    event = json.loads(stream.getvalue())
    assert event == {"n": 1, "event": "push.ok", "level": "info", "logger": "bridge.push",
                     "timestamp": "2025-12-01T17:26:40.123456Z"}  # fmt: skip
