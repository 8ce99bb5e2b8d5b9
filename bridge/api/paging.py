"""Query parameters of the API: paging (offset, limit, date_from, date_to) and filters.

Unknown or repeated parameters are refused by name (2001), as are values that do not parse.
Lists answer with ``X-Total-Count``, ``X-Limit`` and, when there is more, ``Link: <…>;
rel="next"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from bridge.api.envelope import INVALID_PARAMETERS, envelope
from bridge.errors import OpsRequestError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # larger limits are lowered to this; X-Limit tells the client
PAGING = ("offset", "limit", "date_from", "date_to")


@dataclass(frozen=True, slots=True)
class Page:
    offset: int
    limit: int
    date_from: float | None
    date_to: float | None

    def window(self, last_updated: float | None) -> bool:
        """Whether an object with this ``last_updated`` falls inside date_from/date_to."""
        if self.date_from is None and self.date_to is None:
            return True
        if last_updated is None:
            return False
        if self.date_from is not None and last_updated < self.date_from:
            return False
        return not (self.date_to is not None and last_updated >= self.date_to)

    @property
    def dated(self) -> bool:
        return self.date_from is not None or self.date_to is not None


def bad(message: str) -> OpsRequestError:
    return OpsRequestError(INVALID_PARAMETERS, message)


def single(query: MultiMapping[str], allowed: Sequence[str]) -> dict[str, str]:
    """The query as a plain dict; unknown or repeated parameters are refused by name."""
    unknown = sorted({k for k in query if k not in allowed})
    if unknown:
        raise bad(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    values: dict[str, str] = {}
    for key in query:
        got = query.getall(key)
        if len(got) > 1:
            raise bad(f"{key}: given {len(got)} times; give it once")
        values[key] = got[0]
    return values


def integer(values: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = values.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad(f"{name}: {raw!r} is not an integer") from None
    if value < minimum:
        raise bad(f"{name}: must be at least {minimum}, got {value}")
    return value


def date_time(values: Mapping[str, str], name: str) -> float | None:
    raw = values.get(name)
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw.strip().replace(" ", "+"))
        if when.tzinfo is None:  # OCPI date-times are UTC
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (ValueError, OverflowError, OSError):
        raise bad(
            f"{name}: {raw!r} is not an RFC 3339 date-time (e.g. 2026-01-31T12:00:00Z)"
        ) from None


def page(values: Mapping[str, str]) -> Page:
    result = Page(
        offset=integer(values, "offset", 0, 0),
        limit=min(integer(values, "limit", DEFAULT_LIMIT, 0), MAX_LIMIT),
        date_from=date_time(values, "date_from"),
        date_to=date_time(values, "date_to"),
    )
    if (
        result.date_from is not None
        and result.date_to is not None
        and result.date_from >= result.date_to
    ):
        raise bad("date_from must be earlier than date_to")
    return result


def boolean(values: Mapping[str, str], name: str) -> bool | None:
    raw = values.get(name)
    if raw is None:
        return None
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise bad(f"{name}: {raw!r} is not a boolean; use true or false")


def choice(values: Mapping[str, str], name: str, allowed: Sequence[str]) -> set[str] | None:
    """A comma-separated subset of ``allowed`` (matched case-insensitively)."""
    raw = values.get(name)
    if raw is None:
        return None
    by_lower = {a.lower(): a for a in allowed}
    chosen: set[str] = set()
    for part in raw.split(","):
        item = by_lower.get(part.strip().lower())
        if item is None:
            raise bad(f"{name}: {part.strip()!r} is not one of {', '.join(allowed)}")
        chosen.add(item)
    return chosen


def paged(
    request: web.Request, window: Page, items: Sequence[Any], total: int | None = None
) -> web.Response:
    """One page of ``items`` (all matches, or just this page when ``total`` is given)."""
    if total is None:
        total = len(items)
        chunk = list(items[window.offset : window.offset + window.limit])
    else:
        chunk = list(items)
    return envelope(chunk, headers=page_headers(request, window, len(chunk), total))


def page_headers(request: web.Request, window: Page, count: int, total: int) -> dict[str, str]:
    """``X-Total-Count``, ``X-Limit`` and ``Link: <…>; rel="next"`` of a page of ``count``."""
    headers = {"X-Total-Count": str(total), "X-Limit": str(window.limit)}
    following = window.offset + count
    if window.limit > 0 and following < total:
        url = request.url.update_query(offset=str(following), limit=str(window.limit))
        headers["Link"] = f'<{url}>; rel="next"'
    return headers
