"""What to do after a failed hub request: pure classification and backoff."""

from __future__ import annotations

import random
from enum import StrEnum

from bridge.errors import HubError, HubTransportError

#: OICP codes that mean "the hub had a passing problem with this request": try it again later.
RETRYABLE_CODES = frozenset({"001", "002", "009", "021", "310", "320"})
#: Codes that mean our set-up is wrong (certificate / OperatorID): stop pushing, alert, keep all.
CONFIG_CODES = frozenset({"017", "210", "300"})
RETRYABLE_HTTP = frozenset({408, 425, 429})
CONFIG_HTTP = frozenset({401, 403})
#: Gateway answers: the hub behind the gateway may have the request and still apply it.
AMBIGUOUS_HTTP = frozenset({502, 504})
#: Actions whose request carries one EVSE's record.
RECORD_ACTIONS = frozenset({"insert", "update", "delete"})


class Verdict(StrEnum):
    RETRY = "retry"  # the hub is unwell (HTTP 5xx/429, timeout, network): hold every request
    DEFER = "defer"  # this request was refused for now (a retryable code): others go first
    FLIP = "flip"  # 022 on insert/update: the hub's view differs, switch insert <-> update
    ABSENT = "absent"  # 022 on delete: the hub does not hold the record, as we wanted
    PAUSE = "pause"  # configuration error: stop all pushes, retry slowly, not ready
    PARK = "park"  # this record (or fullLoad body) is refused: set it aside, go on


def classify(error: HubError, action: str) -> Verdict:
    if isinstance(error, HubTransportError):
        return Verdict.RETRY
    code, http = error.code, error.http_status
    if code in CONFIG_CODES or http in CONFIG_HTTP:
        return Verdict.PAUSE
    if http in RETRYABLE_HTTP or (http is not None and http >= 500):
        return Verdict.RETRY
    if code in RETRYABLE_CODES:
        # The hub answered, quickly and for this request: the others may well get through.
        return Verdict.DEFER
    if code == "022" and action in ("insert", "update"):
        return Verdict.FLIP
    if code == "022" and action == "delete":
        return Verdict.ABSENT
    return Verdict.PARK


def is_ambiguous(error: HubError) -> bool:
    """Whether the hub may have applied the request (or may still apply it)."""
    return error.maybe_applied or error.http_status in AMBIGUOUS_HTTP


def backoff(attempt: int, initial: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; a hub's Retry-After is a lower bound."""
    delay = random.uniform(0, min(cap, initial * 2 ** max(0, attempt - 1)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def doubling(attempt: int, initial: float, cap: float) -> float:
    """Exponential backoff without jitter (a lower bound someone can rely on)."""
    return float(min(cap, initial * 2 ** max(0, attempt - 1)))


def failure_code(error: HubError) -> str:
    """What the metrics count a failed request under: the hub's OICP code, else its HTTP status,
    else ``transport`` (no answer at all)."""
    if error.code:
        return error.code
    return f"http_{error.http_status}" if error.http_status is not None else "transport"


def failure_detail(
    error: HubError, duration: float, fields: dict[str, object]
) -> dict[str, object]:
    """The fields a failed request is logged with."""
    return {
        "hub_code": error.code,
        "http_status": error.http_status,
        "duration_ms": round(duration * 1000, 1),
        "error": str(error),
        "additional_info": error.additional_info,
        **fields,
    }
