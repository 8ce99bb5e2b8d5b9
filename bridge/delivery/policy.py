"""What to do after a failed push: pure classification, backoff and the client-side rate limit."""

from __future__ import annotations

import random
from enum import StrEnum

from bridge.errors import HubError, HubTransportError

#: OICP codes that mean "the hub had a passing problem": try the same push again later.
RETRYABLE_CODES = frozenset({"001", "002", "009", "021", "310", "320"})
#: Codes that mean our set-up is wrong (certificate / OperatorID): stop pushing, alert, keep all.
CONFIG_CODES = frozenset({"017", "210", "300"})
RETRYABLE_HTTP = frozenset({408, 425, 429})
CONFIG_HTTP = frozenset({401, 403})


class Verdict(StrEnum):
    RETRY = "retry"  # transient: back off, then send the same EVSE's newest status again
    FLIP = "flip"  # 022 on insert/update: the hub's view differs, switch insert <-> update
    PAUSE = "pause"  # configuration error: stop all pushes, retry slowly, not ready
    PARK = "park"  # this record is refused: set it aside, go on with the others


def classify(error: HubError, action: str) -> Verdict:
    if isinstance(error, HubTransportError):
        return Verdict.RETRY
    code, http = error.code, error.http_status
    if code in CONFIG_CODES or http in CONFIG_HTTP:
        return Verdict.PAUSE
    if code in RETRYABLE_CODES or http in RETRYABLE_HTTP or (http is not None and http >= 500):
        return Verdict.RETRY
    if code == "022" and action in ("insert", "update"):
        return Verdict.FLIP
    return Verdict.PARK


def backoff(attempt: int, initial: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; a hub's Retry-After is a lower bound."""
    delay = random.uniform(0, min(cap, initial * 2 ** max(0, attempt - 1)))
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay
