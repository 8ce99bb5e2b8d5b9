"""What the proxy reads in the frames it relays: status reports and the CSMS's verdict on them.

No I/O. A proxied connection's frames pass through unchanged; the tap only looks at them:

* from the charger, a StatusNotification (1.6, 2.0.1) or a NotifyEvent with a connector
  ``AvailabilityState`` (2.0.1) becomes *pending* under its MessageId, with the reports the
  bridge would record for it in ``csms`` mode (the same handlers extract them, so both modes
  read a report alike). Only the fields the bridge uses must be readable: the CSMS, not the
  bridge, decides whether the message is valid;
* from the CSMS, the CALLRESULT with that MessageId releases the reports (the proxy stores them
  before it relays the CALLRESULT); a CALLERROR drops them: the CSMS did not take the report,
  so the bridge does not either.

Anything the tap cannot read is reported back as a :class:`Note` for the log and relayed anyway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge.errors import OcppCallError
from bridge.ocpp import schemas, v16, v201
from bridge.ocpp.rpc import CALLERROR, CALLRESULT, Dialect, FrameError, clip, parse
from bridge.ocpp.session import Handler, Session
from bridge.status.table import OcppStatus

TAPPED = frozenset({"StatusNotification", "NotifyEvent"})
MAX_PENDING = 32  # unanswered status reports kept per connection; the oldest goes first
_HANDLERS: dict[str, dict[str, Handler]] = {"1.6": v16.HANDLERS, "2.0.1": v201.HANDLERS}


@dataclass(frozen=True, slots=True)
class Report:
    """One connector status, as the status sink takes it."""

    evse_key: int
    connector_id: int
    status: OcppStatus
    error_code: str | None
    reported_at: str | None


@dataclass(frozen=True, slots=True)
class Note:
    """Something about a frame worth a log line; the frame is relayed all the same.

    ``kind``: ``unparsable`` (not an OCPP-J message), ``ignored`` (a status report the bridge
    cannot use, e.g. a schema violation) or ``dropped`` (a pending report pushed out by newer ones).
    """

    kind: str
    reason: str
    action: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The CSMS's answer to a tapped CALL: ``error_code`` None means it confirmed the reports."""

    unique_id: str
    action: str
    reports: tuple[Report, ...]
    error_code: str | None


def _checked(report: Report) -> Report:
    """A report the status engine can take: integer numbers, a readable time or none."""
    for number in (report.evse_key, report.connector_id):
        if type(number) is not int or not 0 <= number < 2**31:
            raise ValueError(f"connector/EVSE number {number!r}")
    error = report.error_code
    if error is not None and not isinstance(error, str):
        raise ValueError(f"error code {error!r}")
    at = report.reported_at
    if at is not None and not (isinstance(at, str) and schemas.is_date_time(at)):
        at = None  # the time of receipt is used instead
    return Report(report.evse_key, report.connector_id, report.status,
                  clip(error, 50) if error else error, at)  # fmt: skip


def _why(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}" if exc.args else "missing field"
    return str(exc) or type(exc).__name__


class _Collector:
    """A status sink that only remembers what the handlers would record."""

    def __init__(self) -> None:
        self.reports: list[Report] = []

    async def status(
        self,
        charge_point_id: str,
        evse_key: int,
        connector_id: int,
        status: OcppStatus,
        *,
        error_code: str | None = None,
        reported_at: str | None = None,
    ) -> None:
        self.reports.append(Report(evse_key, connector_id, status, error_code, reported_at))

    async def boot(self, charge_point_id: str, info: dict[str, Any]) -> None:
        return None

    def seen(self, charge_point_id: str) -> None:
        return None


class Tap:
    """The status reports of one proxied connection that wait for the CSMS's answer."""

    def __init__(self, charge_point_id: str, dialect: Dialect) -> None:
        self.dialect = dialect
        self.pending: dict[str, tuple[str, tuple[Report, ...]]] = {}
        self._collector = _Collector()
        self._session = Session(
            charge_point_id, dialect, _HANDLERS[dialect.version], self._collector,
            heartbeat_interval=0,
        )  # fmt: skip

    async def from_charger(self, frame: str | bytes) -> Note | None:
        """Look at a frame on its way to the CSMS; a status report becomes pending."""
        try:
            call = parse(frame, self.dialect)
        except FrameError as exc:
            if not exc.reply:  # the charger's answer to a CALL of the CSMS
                return None
            return Note("unparsable", exc.description)
        if call is None or call.action not in TAPPED:
            return None
        self._collector.reports.clear()
        try:
            # Only as far as needed: the CSMS judges the message; the schema is not enforced
            # here, or a report the CSMS accepted (say, a timestamp without a time zone) would
            # be confirmed to the charger and never reach the hub.
            await _HANDLERS[self.dialect.version][call.action](self._session, call.payload)
            reports = tuple(_checked(r) for r in self._collector.reports)
        except OcppCallError as exc:
            return Note("ignored", f"{exc.code}: {clip(exc.description, 120)}", call.action)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return Note("ignored", f"no usable status: {clip(_why(exc), 120)}", call.action)
        if not reports:  # e.g. a NotifyEvent about something else
            return None
        self.pending.pop(call.unique_id, None)  # a reused id: the newest CALL is the one answered
        self.pending[call.unique_id] = (call.action, reports)
        if len(self.pending) > MAX_PENDING:
            oldest = next(iter(self.pending))
            action, _ = self.pending.pop(oldest)
            return Note("dropped", f"more than {MAX_PENDING} status reports unanswered", action)
        return None

    def from_csms(self, frame: str | bytes) -> Verdict | Note | None:
        """Look at a frame on its way to the charger: the answer to a pending report?"""
        if not self.pending:
            return None
        try:
            message = json.loads(frame)
        except (ValueError, RecursionError):
            return Note("unparsable", "frame from the CSMS is not JSON")
        if (
            not isinstance(message, list)
            or len(message) < 2
            or type(message[0]) is not int
            or message[0] not in (CALLRESULT, CALLERROR)
            or not isinstance(message[1], str)
        ):
            return None
        entry = self.pending.pop(message[1], None)
        if entry is None:
            return None
        action, reports = entry
        if message[0] == CALLRESULT:
            return Verdict(message[1], action, reports, None)
        code = message[2] if len(message) > 2 and isinstance(message[2], str) else "?"
        return Verdict(message[1], action, reports, clip(code, 60))
