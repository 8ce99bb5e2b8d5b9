"""The hub's answers to a push, read into a :class:`PushOutcome` or a HubRejectedError.

No I/O: the client hands over what came back (HTTP status, Retry-After, body), and the
EVSE assignment client (``bridge.oicp.networks``) reads its answers with the same parts. Every
rejection carries what the lane needs to decide (OICP code, HTTP status, Retry-After) and a
message that quotes the hub.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import ValidationError

from bridge.errors import HubRejectedError
from bridge.oicp.models import Acknowledgment

SUCCESS_CODE = "000"
_SNIPPET = 200  # characters of an unexpected body quoted in error messages


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """A push the hub accepted (HTTP 200, Result true, code 000)."""

    code: str
    http_status: int
    duration_ms: float
    acknowledgment: Acknowledgment


def push_outcome(
    status: int,
    retry_after_header: str | None,
    content: bytes,
    duration_ms: float,
    known: tuple[bytes, Acknowledgment] | None,
) -> PushOutcome:
    """PushOutcome of an accepted push, else HubRejectedError; ``known``: a success seen before."""
    if known is not None and status == 200 and content == known[0]:
        return PushOutcome(SUCCESS_CODE, status, duration_ms, known[1])
    retry_after = parse_retry_after(retry_after_header)
    body = json_or_none(content)

    if status == 200:
        try:
            ack = Acknowledgment.model_validate(body)
        except ValidationError:
            raise HubRejectedError(
                f"hub answered HTTP 200 without an OICP acknowledgment: {_snippet(content)}",
                http_status=status,
                retry_after=retry_after,
            ) from None
        if ack.Result is True and ack.StatusCode.Code == SUCCESS_CODE:
            return PushOutcome(ack.StatusCode.Code, status, duration_ms, ack)
        sc = ack.StatusCode
        raise HubRejectedError(
            rejection_message(status, sc.Code, sc.Description, sc.AdditionalInfo, ack.Result),
            code=sc.Code,
            http_status=status,
            description=sc.Description,
            additional_info=sc.AdditionalInfo,
            retry_after=retry_after,
        )

    # Not 200: Hubject sends OicpERoamingFault (401/017, 404/300), FaultBody (400, 500) or HTML.
    code, description, info = fault_fields(body)
    if body is None and content:
        info = info or _snippet(content)
    error = HubRejectedError(
        rejection_message(status, code, description, info, None),
        code=code,
        http_status=status,
        description=description,
        additional_info=info,
        retry_after=retry_after,
    )
    error.field_errors = _field_errors(body)
    raise error


def json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:  # includes UnicodeDecodeError
        return None


def fault_fields(body: Any) -> tuple[str | None, str | None, str | None]:
    """(code, description, additional info) from a non-200 JSON body, whatever its shape."""
    if not isinstance(body, dict):
        return None, None, None
    code = description = info = None
    status_code = body.get("StatusCode")
    if isinstance(status_code, dict):
        code = _str_or_none(status_code.get("Code"))
        description = _str_or_none(status_code.get("Description"))
        info = _str_or_none(status_code.get("AdditionalInfo"))
    description = description or _str_or_none(body.get("message"))
    errors = body.get("validationErrors")
    if isinstance(errors, list) and errors and info is None:
        info = "; ".join(
            f"{e.get('fieldReference')}: {e.get('errorMessage')}" if isinstance(e, dict) else str(e)
            for e in errors
        )
    return code, description, info


def _field_errors(body: Any) -> tuple[tuple[str, str], ...]:
    """Hubject's ``validationErrors`` as (fieldReference, errorMessage) pairs."""
    errors = body.get("validationErrors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return ()
    return tuple(
        (str(e.get("fieldReference", "")), str(e.get("errorMessage", "")))
        for e in errors
        if isinstance(e, dict)
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def rejection_message(
    status: int,
    code: str | None,
    description: str | None,
    info: str | None,
    result: bool | None,
) -> str:
    parts = [f"hub answered HTTP {status}"]
    if code is not None:
        parts.append(f"code {code}")
    if result is not None:
        parts.append(f"Result {str(result).lower()}")
    message = ", ".join(parts)
    detail = ": ".join(x for x in (description, info) if x)
    return f"{message}: {detail}" if detail else message


def _snippet(content: bytes) -> str:
    text = re.sub(r"\s+", " ", content.decode("utf-8", "replace")).strip()
    if not text:
        return "(empty body)"
    return repr(text[:_SNIPPET] + ("…" if len(text) > _SNIPPET else ""))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit() alone also accepts e.g. "²"
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
