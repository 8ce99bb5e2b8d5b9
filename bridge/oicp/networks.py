"""HTTP client of Hubject's eRoamingEVSEAssignment: EVSEs assigned to the groups of a network.

``POST {base_url}{oicp.network_path}`` with ``{"NetworkName", "GroupsAssignments": [{"GroupName",
"Evses": [...]}]}``. The service has no OpenAPI document; its guide says the answer echoes the
body and that ``000`` is success, any other code an error. So an echo (or a StatusCode 000) is
success and everything else is a :class:`~bridge.errors.HubRejectedError` carrying the code and
HTTP status, classified by the lane like every other hub answer. Sent over the status client's
connections and client certificate (:meth:`bridge.oicp.client.OicpClient.post`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from bridge.config import OicpSettings
from bridge.errors import HubRejectedError
from bridge.oicp.answers import (
    SUCCESS_CODE,
    fault_fields,
    json_or_none,
    parse_retry_after,
    rejection_message,
)


class Poster(Protocol):
    async def post(
        self, url: str, content: bytes, *, timeout: float | None = None
    ) -> httpx.Response: ...


@dataclass(frozen=True, slots=True)
class AssignOutcome:
    code: str
    http_status: int
    duration_ms: float


def network_url(settings: OicpSettings) -> str:
    # Hubject expects the OperatorID as is (``DE*ABC``), as for the status service.
    return settings.base_url + settings.network_path.format(
        operator=quote(settings.operator_id, safe="*+")
    )


class NetworkClient:
    def __init__(self, settings: OicpSettings, poster: Poster) -> None:
        self.url = network_url(settings)
        self.poster = poster

    async def assign(
        self, body: Mapping[str, Any], *, timeout: float | None = None
    ) -> AssignOutcome:
        """Send one assignment; raise HubTransportError or HubRejectedError."""
        content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        started = time.monotonic()
        response = await self.poster.post(self.url, content, timeout=timeout)
        duration_ms = (time.monotonic() - started) * 1000.0
        return outcome(response, body, duration_ms)


def outcome(response: httpx.Response, sent: Mapping[str, Any], duration_ms: float) -> AssignOutcome:
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    answer = json_or_none(response.content)
    if status == 200 and isinstance(answer, dict):
        code, description, info = fault_fields(answer)
        if code in (None, SUCCESS_CODE) and answer.get("NetworkName") == sent["NetworkName"]:
            return AssignOutcome(SUCCESS_CODE, status, duration_ms)
        if code == SUCCESS_CODE:
            return AssignOutcome(SUCCESS_CODE, status, duration_ms)
        if code is not None:
            raise HubRejectedError(
                rejection_message(status, code, description, info, None), code=code,
                http_status=status, description=description, additional_info=info,
                retry_after=retry_after,
            )  # fmt: skip
    if status == 200:
        raise HubRejectedError(
            f"hub answered HTTP 200 without the assignment's echo or a status code: "
            f"{response.content[:200]!r}", http_status=status, retry_after=retry_after,
        )  # fmt: skip
    code, description, info = fault_fields(answer)
    raise HubRejectedError(
        rejection_message(status, code, description, info, None), code=code, http_status=status,
        description=description, additional_info=info, retry_after=retry_after,
    )  # fmt: skip
