"""The hub simulator's faults (HTTP failures, codes, hangs, late application, drops) and its
answers in the OICP acknowledgment shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

if TYPE_CHECKING:  # the simulator owns its faults; only its type is needed here
    from bridge.hubsim.simulator import HubSimulator

Endpoint = Literal["status", "data", "network"]
_Summary = tuple[str | None, tuple[tuple[str, str | None], ...]]  # (ActionType, records)

# Descriptions as in the OICP CodeType table.
_DESCRIPTIONS = {
    "000": "Success.",
    "001": "Hubject system error.",
    "002": "Hubject database error.",
    "009": "Data transaction error.",
    "017": "Unauthorized Access.",
    "018": "Inconsistent EvseID.",
    "021": "System error.",
    "022": "Data error.",
    "300": "Partner not found.",
    "320": "Service not available.",
}
# Codes Hubject sends with a non-200 HTTP status (observed: 401/017, 404/300).
_CODE_HTTP_STATUS = {"017": 401, "300": 404}


@dataclass(slots=True)
class _Fault:
    count: int | None  # None: until cleared
    status: int = 0
    retry_after: float | str | None = None
    code: str = ""
    seconds: float = 0.0
    round_trip: bool = False  # hang: ``seconds`` after arrival, the simulator's work included
    action: str | None = None  # only requests with this ActionType
    evse_id: str | None = None  # only requests with a record of this EvseID

    def matches(self, summary: _Summary) -> bool:
        action, records = summary
        if self.action is not None and action != self.action:
            return False
        return self.evse_id is None or any(evse_id == self.evse_id for evse_id, _ in records)

    def describe(self) -> dict[str, Any]:
        fields = {k: getattr(self, k) for k in self.__slots__ if k != "count"}
        shown = {k: v for k, v in fields.items() if v not in ("", 0, None, False)}
        return {"count": self.count} | shown


class Faults:
    """Fault injection. Each kind has one slot; setting it again replaces the previous one.

    Per request: ``late`` or ``drop`` (below), ``hang`` (sleep first), then ``fail_http``
    (answer that HTTP status), else ``answer_code`` (answer that OICP code). Each applied fault
    uses up one of its ``count``. Every fault may be limited to requests of one ``action``
    (e.g. ``fullLoad``) and/or with a record of one ``evse_id``; others pass untouched.

    ``late`` and ``drop`` make outcomes the client cannot know: ``late`` applies the request
    ``seconds`` after it arrived whether or not the client is still waiting (a client that
    timed out earlier never learns that it was applied); ``drop`` closes the connection
    without an answer, after applying the request or not.
    """

    _KINDS = ("late", "drop", "hang", "fail_http", "answer_code")

    def __init__(self, simulator: HubSimulator) -> None:
        self._sim = simulator
        self._active: dict[str, _Fault] = {}

    def fail_http(
        self,
        status: int,
        count: int | None = None,
        retry_after: float | str | None = None,
        *,
        action: str | None = None,
        evse_id: str | None = None,
    ) -> None:
        """Answer HTTP ``status`` (with Retry-After if given) to the next ``count`` pushes."""
        if not 400 <= status <= 599:
            raise ValueError(f"fail_http needs a 4xx/5xx status, got {status}")
        self._active["fail_http"] = _Fault(
            _count(count), status=status, retry_after=retry_after, action=action, evse_id=evse_id
        )

    def answer_code(
        self,
        code: str,
        count: int | None = None,
        *,
        action: str | None = None,
        evse_id: str | None = None,
    ) -> None:
        """Answer OICP ``code`` (Result false; 017 as HTTP 401, 300 as HTTP 404 like Hubject)."""
        if not (len(code) == 3 and code.isdigit()) or code == "000":
            raise ValueError(f"answer_code needs a 3-digit error code, got {code!r}")
        self._active["answer_code"] = _Fault(
            _count(count), code=code, action=action, evse_id=evse_id
        )

    def hang(
        self,
        seconds: float,
        count: int | None = None,
        *,
        round_trip: bool = False,
        action: str | None = None,
        evse_id: str | None = None,
    ) -> None:
        """Sleep ``seconds`` before handling the next ``count`` pushes (client timeouts).

        ``round_trip``: answer ``seconds`` after each request arrived instead, the simulator's
        own reading, checking and applying done first and included: a hub whose round trip is
        ``seconds`` (benchmarks; a plain hang answers that much later than its own work
        takes, and applies the push after the wait)."""
        if seconds < 0:
            raise ValueError("hang needs seconds >= 0")
        self._active["hang"] = _Fault(
            _count(count), seconds=float(seconds), round_trip=round_trip, action=action,
            evse_id=evse_id,
        )  # fmt: skip

    def late(
        self,
        seconds: float,
        count: int | None = None,
        *,
        action: str | None = None,
        evse_id: str | None = None,
    ) -> None:
        """Apply the next ``count`` pushes ``seconds`` after they arrived, even if the client
        gave up before; they count as in flight until then."""
        if seconds < 0:
            raise ValueError("late needs seconds >= 0")
        self._active["late"] = _Fault(
            _count(count), seconds=float(seconds), action=action, evse_id=evse_id
        )

    def drop(
        self,
        count: int | None = None,
        apply: bool = True,
        *,
        action: str | None = None,
        evse_id: str | None = None,
    ) -> None:
        """Close the connection of the next ``count`` pushes without answering, after applying
        them (``apply``) or not."""
        self._active["drop"] = _Fault(
            _count(count), code="apply" if apply else "", action=action, evse_id=evse_id
        )

    def forget(self, evse_id: str) -> bool:
        """Drop ``evse_id`` from the status state, as if the hub lost it; True if it was there."""
        return self._sim._forget(evse_id)

    def clear(self) -> None:
        self._active.clear()

    def describe(self) -> dict[str, Any]:
        return {kind: fault.describe() for kind, fault in self._active.items()}

    def apply(self, spec: dict[str, Any]) -> None:
        """Set a fault from its JSON form, e.g. ``{"fault": "fail_http", "status": 503}``."""
        kind = spec.get("fault")
        args = {k: v for k, v in spec.items() if k != "fault"}
        actions: dict[str, Callable[..., Any]] = {
            "fail_http": self.fail_http,
            "answer_code": self.answer_code,
            "hang": self.hang,
            "late": self.late,
            "drop": self.drop,
            "forget": self.forget,
            "clear": self.clear,
        }
        if kind not in actions:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(actions)}")
        try:
            actions[kind](**args)
        except TypeError as exc:
            raise ValueError(f"{kind}: {exc}") from exc

    def _summary(self, endpoint: Endpoint, body: dict[str, Any] | None) -> _Summary:
        """What faults match on; not worked out while none is set (the benchmark's hub)."""
        return _summary(endpoint, body) if self._active else (None, ())

    def _take(self, kind: str, summary: _Summary = (None, ())) -> _Fault | None:
        fault = self._active.get(kind)
        if fault is None or not fault.matches(summary):
            return None
        if fault.count is not None:
            fault.count -= 1
            if fault.count <= 0:
                del self._active[kind]
        return fault


def _count(count: int | None) -> int | None:
    if count is not None and count < 1:
        raise ValueError("count must be >= 1 (or None for 'until cleared')")
    return count


@dataclass
class _Answer:
    status: int
    body: Any
    code: str | None
    headers: dict[str, str] = field(default_factory=dict)
    html: bool = False

    def response(self) -> web.Response:
        if self.html:
            return web.Response(
                status=self.status, text=self.body, content_type="text/html", headers=self.headers
            )
        return web.json_response(self.body, status=self.status, headers=self.headers)


def _fault_body(status: int, message: str, errors: list[dict[str, Any]] | None = None) -> _Answer:
    return _Answer(status, {"message": message, "validationErrors": errors or []}, None)


def _http_failure(fault: _Fault) -> _Answer:
    headers = {}
    if fault.retry_after is not None:
        value = fault.retry_after
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        headers["Retry-After"] = str(value)
    if fault.status == 403:  # Hubject's firewall answers with an nginx HTML page
        html = "<html><head><title>403 Forbidden</title></head><body>403 Forbidden</body></html>"
        return _Answer(403, html, None, headers, html=True)
    return _Answer(fault.status, {"message": f"simulated HTTP {fault.status}"}, None, headers)


def _summary(endpoint: Endpoint, body: dict[str, Any] | None) -> _Summary:
    """Best-effort (ActionType, [(EvseID, EvseStatus)]) of any body, valid or not."""
    if body is None:
        return None, ()
    if endpoint == "network":
        groups = body.get("GroupsAssignments")
        evses: list[tuple[str, str | None]] = []
        for group in groups if isinstance(groups, list) else []:
            listed = group.get("Evses") if isinstance(group, dict) else None
            evses += [(str(e), None) for e in listed] if isinstance(listed, list) else []
        return "network", tuple(evses)
    action = body.get("ActionType")
    outer, inner = (
        ("OperatorEvseStatus", "EvseStatusRecord")
        if endpoint == "status"
        else ("OperatorEvseData", "EvseDataRecord")
    )
    container = body.get(outer)
    raw_records = container.get(inner) if isinstance(container, dict) else None
    records: list[tuple[str, str | None]] = []
    for rec in raw_records if isinstance(raw_records, list) else []:
        if isinstance(rec, dict):
            status = rec.get("EvseStatus") if endpoint == "status" else None
            records.append((str(rec.get("EvseID")), None if status is None else str(status)))
    return (action if isinstance(action, str) else None), tuple(records)


def acknowledgment(code: str, additional_info: str | None) -> _Answer:
    description = _DESCRIPTIONS.get(code)
    http_status = _CODE_HTTP_STATUS.get(code)
    if http_status is not None:
        # Hubject answers these with an OicpERoamingFault, not an acknowledgment.
        fault = {"Code": code, "Description": description, "AdditionalInfo": additional_info}
        return _Answer(http_status, {"StatusCode": fault}, code)
    body = {
        "Result": code == "000",
        "StatusCode": {"Code": code, "Description": description, "AdditionalInfo": additional_info},
        "SessionID": None,
        "CPOPartnerSessionID": None,
        "EMPPartnerSessionID": None,
    }
    return _Answer(200, body, code)
