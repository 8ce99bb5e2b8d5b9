"""OCPP-J framing: parse incoming frames, build CALLRESULT / CALLERROR frames, per version.

We parse frames ourselves instead of using the ``ocpp`` package's ``ChargePoint`` router: the
router sends no CALLERROR for unparseable frames, validates in a thread pool with
``inspect.signature`` per message, and does not check date-time formats. The ``ocpp``
package's JSON schemas are still the source of truth (see ``schemas.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CALL, CALLRESULT, CALLERROR = 2, 3, 4
UNREADABLE_ID = "-1"  # OCPP-J §4.2.3: the id to use when the frame's own id cannot be read


@dataclass(frozen=True, slots=True)
class Dialect:
    """The parts of OCPP-J that differ between 1.6 and 2.0.1 (error code spellings, schemas)."""

    version: str
    subprotocol: str
    schema_package: str  # ocpp.v16 / ocpp.v201
    request_suffix: str  # schema file of a request: "StatusNotification" / "...Request"
    format_violation: str
    occurrence_violation: str
    rpc_framework_error: str
    message_type_not_supported: str

    @property
    def property_violation(self) -> str:
        return "PropertyConstraintViolation"

    @property
    def type_violation(self) -> str:
        return "TypeConstraintViolation"


OCPP16 = Dialect(
    version="1.6",
    subprotocol="ocpp1.6",
    schema_package="ocpp.v16",
    request_suffix="",
    format_violation="FormationViolation",
    occurrence_violation="OccurenceConstraintViolation",  # sic, OCPP 1.6 spelling
    rpc_framework_error="FormationViolation",  # 1.6 has no RpcFrameworkError
    message_type_not_supported="ProtocolError",  # 1.6 has no MessageTypeNotSupported
)
OCPP201 = Dialect(
    version="2.0.1",
    subprotocol="ocpp2.0.1",
    schema_package="ocpp.v201",
    request_suffix="Request",
    format_violation="FormatViolation",
    occurrence_violation="OccurrenceConstraintViolation",
    rpc_framework_error="RpcFrameworkError",
    message_type_not_supported="MessageTypeNotSupported",
)
DIALECTS = {d.subprotocol: d for d in (OCPP201, OCPP16)}  # server preference order


@dataclass(frozen=True, slots=True)
class Call:
    unique_id: str
    action: str
    payload: dict[str, Any]


class FrameError(Exception):
    """A frame that cannot be a CALL: answer with a CALLERROR (or ignore if ``reply`` is False)."""

    def __init__(self, unique_id: str, code: str, description: str, *, reply: bool = True):
        super().__init__(description)
        self.unique_id = unique_id
        self.code = code
        self.description = description
        self.reply = reply


def parse(frame: str | bytes, dialect: Dialect) -> Call | None:
    """Parse one frame. Returns the CALL, None for CALLRESULT/CALLERROR, raises FrameError."""
    try:
        message = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        raise FrameError(UNREADABLE_ID, dialect.rpc_framework_error, "Frame is not JSON") from None
    if not isinstance(message, list) or not message:
        raise FrameError(
            UNREADABLE_ID, dialect.rpc_framework_error, "Frame is not a non-empty JSON array"
        )
    unique_id = message[1] if len(message) > 1 and isinstance(message[1], str) else None
    if unique_id is not None and not 0 < len(unique_id) <= 36:
        unique_id = None  # OCPP-J: at most 36 characters; not a usable id
    reply_id = unique_id if unique_id is not None else UNREADABLE_ID
    kind = message[0]
    if kind in (CALLRESULT, CALLERROR) and type(kind) is int:
        # We never send CALLs, so any result is for nobody: OCPP-J says ignore it.
        raise FrameError(reply_id, "", "Unexpected CALLRESULT/CALLERROR", reply=False)
    if kind != CALL or type(kind) is not int:
        raise FrameError(
            reply_id, dialect.message_type_not_supported, f"Message type {kind!r} not supported"
        )
    if unique_id is None:
        raise FrameError(reply_id, dialect.rpc_framework_error, "MessageId could not be read")
    if len(message) != 4:
        raise FrameError(reply_id, dialect.rpc_framework_error, "A CALL has exactly 4 elements")
    action, payload = message[2], message[3]
    if not isinstance(action, str) or not action:
        raise FrameError(reply_id, dialect.rpc_framework_error, "Action is not a string")
    if not isinstance(payload, dict):
        raise FrameError(reply_id, dialect.format_violation, "Payload is not a JSON object")
    return Call(unique_id, action, payload)


def call_result(unique_id: str, payload: dict[str, Any]) -> str:
    return json.dumps([CALLRESULT, unique_id, payload], separators=(",", ":"))


def call_error(
    unique_id: str, code: str, description: str, details: dict[str, Any] | None = None
) -> str:
    return json.dumps(
        [CALLERROR, unique_id, code, description[:255], details or {}], separators=(",", ":")
    )
