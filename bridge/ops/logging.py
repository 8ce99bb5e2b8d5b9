"""Logging: structlog events, JSON lines on stdout (or a console renderer), one format.

The bridge's own events are rendered by structlog and written straight to the stream: one
event per StatusNotification and per push is on the hot path, and the detour through the
standard library (LogRecord, caller lookup, handler filters) cost a fifth of the CPU per
message. Standard-library loggers (websockets, asyncio, aiohttp, ocpp) go through a handler
with the same processors, so an operator's log stack sees one JSON object per line whatever
produced it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

from bridge import hotlog

# Libraries that log a line per frame or per request at INFO; we keep that at DEBUG.
_CHATTY = ("ocpp", "websockets", "aiohttp.access", "httpx", "httpcore")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _Level:
    value = logging.INFO  # shared by structlog's filter and the standard-library handler


Tap = Callable[[dict[str, Any]], None]
_taps: list[Tap] = []


def set_level(level: str | int) -> None:
    """Change the level of the bridge's own events and of library loggers at run time."""
    _Level.value = logging.getLevelName(level) if isinstance(level, str) else level
    logging.getLogger().setLevel(_Level.value)


def add_tap(tap: Tap) -> None:
    """Also hand every event dict (before rendering) to ``tap``; for tests and tooling."""
    _taps.append(tap)


def remove_tap(tap: Tap) -> None:
    _taps.remove(tap)


def _filter(_: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _LEVELS.get(method, logging.INFO) < _Level.value:
        raise structlog.DropEvent
    return event


def _add_level_and_name(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event["level"] = "error" if method == "exception" else method
    event["logger"] = getattr(logger, "name", None)
    return event


def _tap(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for tap in _taps:
        tap(dict(event))
    return event


#: How long lines logged on the event loop may wait to be written together (s).
GATHER_S = 0.001
#: Lines that are written at once, whatever the wait (a burst does not pile up).
GATHER_LINES = 256


class _Lines:
    """Where rendered lines go: the stream, written together once a millisecond at most.

    A busy bridge logs a line per StatusNotification and per push, thousands a second; one
    write() each was a tenth of a push's CPU, and the push lane logs one line per event-loop
    iteration. Lines logged on a thread that runs an event loop are gathered for ``GATHER_S``
    (or ``GATHER_LINES``) and written (and flushed: containers read pipes) by a callback of
    that loop; anywhere else, at exit, and for warnings and errors (with what was gathered
    before them) they are written at once. Both paths share one lock (reentrant: a finalizer
    may log while a line is written) and one buffer, so no line is lost or written twice and the
    lines of one thread keep their order. A process killed outright, or a loop that blocks,
    keeps the INFO lines of its last millisecond unwritten. A stream that fails (a closed pipe)
    costs the lines of that write, reported once on stderr, and is tried again with the next.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.RLock()
        #: Rendered lines, or events of the hot path (``info_fields``) rendered when written.
        self._pending: list[str | dict[str, Any]] = []
        self._failed = False  # a failed write of the loop's callback was reported
        #: The loop (of thread ``_thread``) whose callback writes what is pending; None: none.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0

    def write(self, line: str | dict[str, Any], *, at_once: bool = False) -> None:
        """Write ``line`` with the next gathered write, or now (``at_once``: warnings, errors).

        A dict is an event of the hot path, rendered when it is written (``_render_deferred``)."""
        if at_once:
            with self._lock:
                self._pending.append(line)
                self._write_pending()
            return
        with self._lock:
            gathering = self._loop
            if gathering is not None and threading.get_ident() == self._thread:
                if gathering.is_running():
                    self._pending.append(line)
                    if len(self._pending) >= GATHER_LINES:
                        self._write_pending()
                    return
                self._loop = None  # it stopped before its callback ran: write what it held
                self._write_pending()
        loop = asyncio._get_running_loop()  # None on a thread without a running loop
        with self._lock:
            if loop is None or self._loop is not None:  # no loop here, or another's gathering
                self._pending.append(line)
                self._write_pending()
                return
            self._pending.append(line)
            self._loop, self._thread = loop, threading.get_ident()
        try:
            loop.call_later(GATHER_S, self.flush)
        except RuntimeError:  # the loop is closing: write now
            self.flush()

    def flush(self) -> None:
        """Write what was gathered (the loop's callback; also at exit and on a new set-up)."""
        with self._lock:
            self._loop = None
            try:
                self._write_pending()
            except Exception as exc:  # raised in the callback it would be logged, and fail again
                if not self._failed:
                    self._failed = True
                    print(f"log lines lost: cannot write to the log stream: {exc!r}",
                          file=sys.__stderr__)  # fmt: skip

    def _write_pending(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []  # a line logged while writing goes next
        texts = [line if isinstance(line, str) else _render_deferred(line) for line in pending]
        self._stream.write("\n".join(texts) + "\n")
        self._stream.flush()


class _Writer:
    """structlog's final logger: one rendered line per event."""

    def __init__(self, name: str | None, lines: _Lines) -> None:
        self.name = name
        self._lines = lines

    def msg(self, message: str | dict[str, Any]) -> None:
        self._lines.write(message)

    def urgent(self, message: str) -> None:
        self._lines.write(message, at_once=True)

    debug = info = msg
    warning = warn = error = exception = critical = urgent


class _LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The standard library's records, into the same lines (and the same order)."""

    def __init__(self, lines: _Lines) -> None:
        super().__init__()
        self._lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.write(self.format(record), at_once=record.levelno >= logging.WARNING)
        except Exception:
            self.handleError(record)


class _DemoteToDebug(logging.Filter):
    """Turn the libraries' INFO lines into DEBUG (dropped unless the level is DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.name.startswith(_CHATTY):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return _Level.value <= logging.DEBUG
        return record.levelno >= _Level.value


class _TapForeign(logging.Filter):
    """Library records reach the taps too (tests watch for errors from anywhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _taps:
            event = {"event": record.getMessage(), "level": record.levelname.lower(),
                     "logger": record.name}  # fmt: skip
            for tap in _taps:
                tap(event)
        return True


# C0 and C1 control characters and DEL: a terminal acts on them (escape sequences can move
# the cursor, rewrite earlier lines, set the window title), so none reaches it raw.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS_KEEP_LINES = {c: e for c, e in _CONTROLS.items() if c not in (0x0A, 0x09)}


def _escape_controls(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Console format: escape control characters in every text (JSON escapes them itself).

    Paths, charge point IDs and BootNotification fields come from strangers. Tracebacks keep
    their line breaks.
    """
    for key, value in list(event.items()):
        if isinstance(value, str):
            table = _CONTROLS_KEEP_LINES if key == "exception" else _CONTROLS
            event[key] = value.translate(table)
        safe_key = key.translate(_CONTROLS) if isinstance(key, str) else key
        if safe_key != key:
            event[safe_key] = event.pop(key)
    return event


class _Stamp:
    """The second of the last timestamp and its text (one strftime per second, not per line),
    as one tuple: threads stamp lines too, and two fields could be read half updated."""

    last: tuple[int, str] = (-1, "")


def _iso_now() -> str:
    """UTC now as ``datetime.now(UTC).isoformat()`` writes it, with ``Z`` (as structlog's
    ``TimeStamper(fmt="iso", utc=True)``: microseconds, left out when they are zero)."""
    return _iso_at(time.time_ns() // 1000)


def _iso_at(microseconds: int) -> str:
    """:func:`_iso_now` for a moment in microseconds since the epoch."""
    second, micro = divmod(microseconds, 1_000_000)
    last_second, text = _Stamp.last
    if second != last_second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _Stamp.last = (second, text)
    return f"{text}.{micro:06d}Z" if micro else f"{text}Z"


def _timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["timestamp"] = _iso_now()
    return event


def _fallback(value: Any) -> Any:
    """What structlog's JSONRenderer does with a value JSON cannot hold."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


# One encoder for every line: json.dumps with a ``default`` builds a new encoder per call.
_encode = json.JSONEncoder(default=_fallback).encode
_merge_contextvars = structlog.contextvars.merge_contextvars
_format_exc_info = structlog.processors.format_exc_info


def _json_line(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
    """The JSON format's whole chain in one call (a line per StatusNotification and per push
    is on the hot path): level filter, context variables, level and logger name, timestamp,
    taps, exception text, rendering; the same line the separate processors made."""
    if _LEVELS.get(method, logging.INFO) < _Level.value:
        raise structlog.DropEvent
    event = _merge_contextvars(logger, method, event)
    event["level"] = "error" if method == "exception" else method
    event["logger"] = getattr(logger, "name", None)
    event["timestamp"] = _iso_now()
    for tap in _taps:
        tap(dict(event))
    if "exc_info" in event:
        event = _format_exc_info(logger, method, event)
    return _encode(event)


def _render_deferred(event: dict[str, Any]) -> str:
    """A hot-path event gathered unrendered: its timestamp (microseconds, taken when it was
    logged) as text, then the line; a value that cannot be rendered costs itself, not the
    lines written with it."""
    event["timestamp"] = _iso_at(event["timestamp"])
    try:
        return _encode(event)
    except Exception:  # the names and the event stay as they are, values become text
        return _encode({key: value if key in _KEPT else _safe_repr(value)
                        for key, value in event.items()})  # fmt: skip


_KEPT = frozenset(("event", "level", "logger", "timestamp"))


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}: unprintable>"


def _contextvars_bound() -> bool:
    """Whether structlog's context variables may hold anything (none bound yet: nothing to
    merge; if structlog stops keeping its registry where we look, always merge)."""
    return bool(getattr(structlog.contextvars, "_CONTEXT_VARS", True))


_BoundLogger: Any = structlog.make_filtering_bound_logger(logging.DEBUG)


class _JsonBoundLogger(_BoundLogger):  # type: ignore[misc]
    """The JSON format's logger: what structlog's ``_process_event`` does for a chain that
    renders to text (context, keywords, ``event``), without its generic dispatch."""

    def _proxy_to_logger(self, method_name: str, event: str | None = None, **kw: Any) -> None:
        if _LEVELS.get(method_name, logging.INFO) < _Level.value:
            return  # dropped before any work
        event_dict = self._context.copy()
        event_dict.update(kw)
        if event is not None:
            event_dict["event"] = event
        try:
            line = _json_line(self._logger, method_name, event_dict)
        except structlog.DropEvent:
            return
        if method_name in ("debug", "info"):
            self._logger.msg(line)
        else:
            self._logger.urgent(line)

    def info_fields(self, event: str, fields: dict[str, Any]) -> None:
        """``info(event, **fields)`` with the keywords already in a dict (taken over: the
        caller changes neither it nor its values afterwards); what ``bridge.hotlog.HotLogger``
        calls. The line is rendered when it is written, with the lines gathered with it:
        rendering one line per push between two pushes cost twice as much CPU as a burst."""
        if _Level.value > logging.INFO:
            return
        if self._context:
            fields = {**self._context, **fields}
        fields["event"] = event
        if _taps or "exc_info" in fields or _contextvars_bound():
            try:  # the general way: taps see the event as logged, exceptions are formatted now
                line = _json_line(self._logger, "info", fields)
            except structlog.DropEvent:
                return
            self._logger.msg(line)
            return
        fields["level"] = "info"
        fields["logger"] = self._logger.name
        fields["timestamp"] = time.time_ns() // 1000  # as text when rendered
        self._logger.msg(fields)


class _Current:
    lines: _Lines | None = None  # the current set-up's; what it still holds is written at exit


@atexit.register
def _flush_at_exit() -> None:
    lines = _Current.lines
    if lines is not None:  # a stream closed by now has no reader left to tell
        with lines._lock, contextlib.suppress(ValueError, OSError):
            lines._write_pending()


def setup_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    if _Current.lines is not None:
        _Current.lines.flush()  # what the previous set-up gathered goes to its stream first
    lines = _Current.lines = _Lines(stream or sys.stdout)
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=lambda event, **_: _encode(event))
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    # Values that are not text are rendered with repr(), which escapes control characters.
    escape: list[Any] = [] if fmt == "json" else [_escape_controls]
    timestamper = _timestamp
    chain: list[Any] = [
        _filter,
        structlog.contextvars.merge_contextvars,
        _add_level_and_name,
        timestamper,
        _tap,
        structlog.processors.format_exc_info,
        *escape,
        renderer,
    ]
    structlog.configure(
        processors=[_json_line] if fmt == "json" else chain,
        logger_factory=lambda name=None, *_: _Writer(name, lines),
        wrapper_class=_JsonBoundLogger if fmt == "json" else _BoundLogger,
        cache_logger_on_first_use=True,
    )
    hotlog.reconfigured()  # after configure: a hot logger looks the new logger up
    handler = _LineHandler(lines)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
                structlog.stdlib.ExtraAdder(),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                *escape,
                renderer,
            ],
        )
    )
    handler.addFilter(_DemoteToDebug())
    handler.addFilter(_TapForeign())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_level(level)
