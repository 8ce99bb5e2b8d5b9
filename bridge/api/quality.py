"""``GET /api/v2/data-quality``: the catalog's data-quality report, paged like every list.

The report is computed from the catalog in memory (``bridge.catalog.quality``) in a worker
thread, so that a large catalog does not hold up chargers and pushes (about 65 µs of CPU per
EVSE), and kept per station until the station, its location or the operator defaults change:
a repeated request only assesses what changed (the kept reports are the bridge's, shared with
the data-quality gauges of /metrics). Filters narrow the EVSEs, and the summary describes
exactly the EVSEs that match (all of them without filters: the operator's summary); paging
applies to the EVSE list only.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from bridge.api.context import ApiContext
from bridge.api.envelope import envelope
from bridge.api.paging import PAGING, choice, page, page_headers, single
from bridge.catalog.checks import Severity
from bridge.catalog.quality import CODES, Report, assess_kept, stations_of, summarise

QUERY = (*PAGING, "location_id", "station_id", "evse_id", "code", "severity")


async def data_quality(ctx: ApiContext, request: web.Request) -> web.Response:
    values = single(request.query, QUERY)
    window = page(values)
    codes = choice(values, "code", CODES)
    severities = choice(values, "severity", [s.value for s in Severity])
    location, station, evse_id = (values.get(k) for k in ("location_id", "station_id", "evse_id"))
    stations = stations_of(ctx.catalog)  # on the loop: the catalog's dicts change there
    assessed = await asyncio.to_thread(assess_kept, stations, ctx.operator_defaults,
                                       ctx.quality_cache)  # fmt: skip
    items = [
        i for i in assessed
        if (location is None or i.location_id == location)
        and (station is None or i.station_id == station)
        and (evse_id is None or i.evse_id == evse_id)
        and (codes is None or any(f.code in codes for f in i.findings))
        and (severities is None or any(f.severity.value in severities for f in i.findings))
        and window.window(i.last_updated.timestamp() if i.last_updated else None)
    ]  # fmt: skip
    chunk = items[window.offset : window.offset + window.limit]
    report = Report(summary=summarise(items), evses=chunk)
    headers = page_headers(request, window, len(chunk), len(items))
    return envelope(report.model_dump(mode="json"), headers=headers)
