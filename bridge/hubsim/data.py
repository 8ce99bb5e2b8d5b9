"""The hub simulator's EVSE data service: OICP 2.3 and 2.2 data-records, checked as Hubject
checks them, and the switch that refuses status for EVSEs the hub holds no data for.

Hubject validates a data push against its schema before anything else and answers a violation
with HTTP 400 and ``validationErrors`` naming each field in its own spelling (lower camel case,
``operatorEvseData.evseDataRecord[0].geoCoordinates``); the simulator does the same with the
official schemas (``bridge.oicp.evse_schema``), so the bridge's parsing of such answers is
tested against the real shape.

What the real hub does with a status for an EVSE without data is not documented; with
``require_data_for_status`` on, the simulator refuses such a status push (code 022 naming the
EVSEs) so that a test sees any status that overtook its data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from bridge.oicp.evse_schema import Version, request_errors

DATA_ROUTE_22 = "/api/oicp/evsepush/v22/operators/{operatorID}/data-records"
_SEGMENT = re.compile(r"([A-Za-z_]\w*)")


def data_version(path: str) -> Version:
    return "2.2" if "/v22/" in path else "2.3"


def hubject_reference(path: str) -> str:
    """``OperatorEvseData.EvseDataRecord[0].Address.Street`` as Hubject writes it:
    ``operatorEvseData.evseDataRecord[0].address.street``."""
    return _SEGMENT.sub(lambda m: m[1][:1].lower() + m[1][1:], path)


def validation_errors(body: dict[str, Any], version: Version) -> list[dict[str, str]]:
    """Hubject-style ``validationErrors`` of a data push body (empty: it passes)."""
    return [
        {"fieldReference": hubject_reference(e.field), "errorMessage": e.message}
        for e in request_errors(body, version)
    ]


def without_data(
    data: Mapping[str, Mapping[str, Any]], operator: str, evse_ids: Iterable[str]
) -> list[str]:
    """The EvseIDs among ``evse_ids`` the hub holds no data record for."""
    held = data.get(operator, {})
    return [evse_id for evse_id in evse_ids if evse_id not in held]
