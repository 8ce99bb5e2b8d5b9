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
    """The parts of OCPP-J that differ between 1.6 and 2.0.1 (error code spellings, schemas).

    CALLERROR codes (OCPP-J 1.6 §4.2.3, OCPP 2.0.1 Part 4 §4.3):

    * frame not JSON, not an array, wrong element count, unreadable MessageId, action not a
      string: RpcFrameworkError (2.0.1) / FormationViolation (1.6, "not conform the PDU
      structure"; 1.6 has no RpcFrameworkError);
    * message type other than 2, 3, 4: MessageTypeNotSupported (2.0.1) / ProtocolError (1.6,
      which has no MessageTypeNotSupported);
    * payload not an object or with unknown properties: FormatViolation / FormationViolation;
    * schema rules: Occurrence- (required), Type- (type, date-time, 32-bit integer) and
      PropertyConstraintViolation (enum, length, pattern, range);
    * action not defined by the version: NotImplemented; defined but not handled here:
      NotSupported.
    """

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
PROTOCOLS = tuple(sorted({d.version for d in DIALECTS.values()}))  # "1.6", "2.0.1"


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
    framework = dialect.rpc_framework_error
    if isinstance(frame, bytes):  # OCPP-J uses text frames; accept UTF-8 binary ones alike
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(UNREADABLE_ID, framework, "Frame is not UTF-8 text") from None
    try:
        message = _DECODER.decode(frame)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise FrameError(UNREADABLE_ID, framework, "Frame is not JSON") from None
    if not isinstance(message, list) or not message:
        raise FrameError(UNREADABLE_ID, framework, "Frame is not a non-empty JSON array")
    # Lone surrogates (\ud800) are valid JSON escapes but not text; only look when present.
    suspicious = "\\ud" in frame or "\\uD" in frame
    unique_id = message[1] if len(message) > 1 and isinstance(message[1], str) else None
    if unique_id is not None and not (0 < len(unique_id) <= 36 and _is_text(unique_id)):
        unique_id = None  # OCPP-J: at most 36 characters; not a usable id
    reply_id = unique_id if unique_id is not None else UNREADABLE_ID
    kind = message[0]
    if type(kind) is int and kind in (CALLRESULT, CALLERROR):
        # We never send CALLs, so any result is for nobody: OCPP-J says ignore it.
        raise FrameError(reply_id, "", "Unexpected CALLRESULT/CALLERROR", reply=False)
    if type(kind) is not int or kind != CALL:
        raise FrameError(
            reply_id,
            dialect.message_type_not_supported,
            f"Message type {clip(repr(kind), 40)} not supported",
        )
    if unique_id is None:
        raise FrameError(reply_id, framework, "MessageId could not be read")
    if len(message) != 4:
        raise FrameError(reply_id, framework, "A CALL has exactly 4 elements")
    action, payload = message[2], message[3]
    if not isinstance(action, str) or not action or (suspicious and not _is_text(action)):
        raise FrameError(reply_id, framework, "Action is not a string")
    if not isinstance(payload, dict):
        raise FrameError(reply_id, dialect.format_violation, "Payload is not a JSON object")
    if suspicious and not _is_text(json.dumps(payload, ensure_ascii=False)):
        raise FrameError(reply_id, dialect.format_violation, "Payload holds invalid Unicode")
    return Call(unique_id, action, payload)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN/Infinity; JSON does not


# Built once: json.loads/json.dumps with options build a new decoder/encoder on every call,
# which was a visible share of a StatusNotification's CPU.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (an ellipsis marks the cut) for error messages."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def call_result(unique_id: str, payload: dict[str, Any]) -> str:
    return _ENCODE([CALLRESULT, unique_id, payload])


def call_error(
    unique_id: str, code: str, description: str, details: dict[str, Any] | None = None
) -> str:
    return json.dumps(
        [CALLERROR, unique_id, code, description[:255], details or {}], separators=(",", ":")
    )
