"""The read-only status API: OCPI-style envelope, paging, filters, clear answers to bad input."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiohttp import web

from bridge.api.paging import MAX_LIMIT
from bridge.api.routes import CONTEXT, api_middleware
from bridge.api.status import PREFIX as API_PREFIX
from bridge.api.tokens import Tokens, hash_token
from bridge.app import Bridge
from bridge.config import ApiToken
from bridge.hubsim import HubSimulator
from tests.conftest import AUTH, WRITE_TOKEN, charger, eventually, pushes


@pytest.fixture
async def api(bridge: Bridge) -> AsyncIterator[httpx.AsyncClient]:
    assert bridge.ops_server is not None
    base = f"http://127.0.0.1:{bridge.ops_server.port}{API_PREFIX}"
    async with httpx.AsyncClient(base_url=base, timeout=5, headers=AUTH) as client:
        yield client


def parse_time(value: str) -> dt.datetime:
    assert value.endswith("Z"), value
    return dt.datetime.fromisoformat(value)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def ok(api: httpx.AsyncClient, path: str, **params: Any) -> tuple[Any, httpx.Response]:
    response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status_code"] == 1000, body
    return body["data"], response


async def refused(api: httpx.AsyncClient, path: str, **params: Any) -> str:
    """A refused request: HTTP 200 (OCPI), status 2001, no data; returns the message."""
    response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status_code"] == 2001, body
    assert body["data"] is None
    assert isinstance(body["status_message"], str)
    return str(body["status_message"])


async def scenario(bridge: Bridge, hub: HubSimulator) -> None:
    """CP16 (1.6) charging on connector 2, available on 1; CP201 (2.0.1) never connected."""
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.boot()
        await cp.status(1, "Available")
        await cp.status(2, "Charging")
        await eventually(lambda: len(pushes(hub)) == 2 and not bridge.outbox)


# -- envelope -------------------------------------------------------------------------------------
async def test_envelope(api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    response = await api.get("/evses")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"data", "status_code", "status_message", "timestamp"}
    assert body["status_code"] == 1000 and body["status_message"] == "Success"
    assert before <= parse_time(body["timestamp"]) <= dt.datetime.now(dt.UTC)
    assert [e["evse_id"] for e in body["data"]] == sorted(
        ["DE*ABC*E16*1", "DE*ABC*E16*2", "DE*ABC*E201*1", "DE*ABC*E201*2"]
    )


async def test_evse_object(api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator) -> None:
    await scenario(bridge, hub)
    evse, _ = await ok(api, "/evses/DE*ABC*E16*2")
    assert evse["evse_id"] == "DE*ABC*E16*2" and evse["charge_point_id"] == "CP16"
    assert evse["connectors"] == [{"evse_key": 2, "connector_id": 2, "ocpp_status": "Charging"}]
    assert evse["status"] == "Occupied"  # OICP now
    assert evse["hub_status"] == "Occupied"  # what the hub acknowledged
    assert evse["pending"] is False and evse["pending_since"] is None
    assert evse["parked"] is None
    assert evse["last_push"]["outcome"] == "ok" and evse["last_push"]["code"] == "000"
    parse_time(evse["hub_acked_at"])
    parse_time(evse["last_updated"])

    never, _ = await ok(api, "/evses/DE*ABC*E201*1")
    assert never["status"] == "Unknown" and never["hub_status"] is None
    assert never["connectors"] == [] and never["last_push"] is None
    assert never["last_updated"] is None


async def test_charge_point_objects(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.boot()
        await cp.status(1, "Available")
        cp16, _ = await ok(api, "/charge-points/CP16")
        assert cp16["connected"] is True and cp16["protocol"] == "1.6"
        assert cp16["boot"]["charge_point_vendor"] == "V"
        assert cp16["boot"]["charge_point_model"] == "M1"
        assert cp16["evse_ids"] == ["DE*ABC*E16*1", "DE*ABC*E16*2"]
        assert cp16["configured"] is True and cp16["offline"] is False
        parse_time(cp16["last_seen"])
        connected, _ = await ok(api, "/charge-points", connected="true")
        assert [c["charge_point_id"] for c in connected] == ["CP16"]
    await eventually(lambda: not bridge.ingest.charge_points["CP16"].connected)
    cp16, _ = await ok(api, "/charge-points/CP16")
    assert cp16["connected"] is False
    parse_time(cp16["disconnected_at"])
    cp201, _ = await ok(api, "/charge-points/CP201")
    assert cp201["connected"] is False and cp201["protocol"] is None and cp201["boot"] is None
    assert (await ok(api, "/charge-points", connected="true"))[0] == []
    by_protocol, _ = await ok(api, "/charge-points", protocol="1.6")
    assert [c["charge_point_id"] for c in by_protocol] == ["CP16"]


async def test_delivery_summary(api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator) -> None:
    await scenario(bridge, hub)
    summary, _ = await ok(api, "/delivery")
    assert summary["hub"] == hub.base_url and summary["operator_id"] == "DE*ABC"
    assert summary["pending"] == 0 and summary["paused"] is False
    assert summary["evses_by_hub_status"] == {"Available": 1, "Occupied": 1, "none": 2}


# -- paging -------------------------------------------------------------------------------------
async def test_paging_headers_and_link(api: httpx.AsyncClient, bridge: Bridge) -> None:
    first, response = await ok(api, "/evses", limit=3)
    assert len(first) == 3
    assert response.headers["X-Total-Count"] == "4"
    assert response.headers["X-Limit"] == "3"
    link = response.headers["Link"]
    assert link.endswith('>; rel="next"')
    follow = link[1 : link.index(">")]
    assert "offset=3" in follow and "limit=3" in follow
    last = await api.get(follow)
    assert [e["evse_id"] for e in last.json()["data"]] == ["DE*ABC*E201*2"]
    assert "Link" not in last.headers  # nothing after the last page
    assert [e["evse_id"] for e in first] + ["DE*ABC*E201*2"] == [
        e["evse_id"] for e in (await ok(api, "/evses"))[0]
    ]


async def test_paging_keeps_filters_and_caps_limit(api: httpx.AsyncClient, bridge: Bridge) -> None:
    _, response = await ok(api, "/evses", status="Unknown", limit=1)
    assert "status=Unknown" in response.headers["Link"]
    everything, response = await ok(api, "/evses", limit=MAX_LIMIT * 10)
    assert response.headers["X-Limit"] == str(MAX_LIMIT) and len(everything) == 4
    nothing, response = await ok(api, "/evses", limit=0)  # only the count
    assert nothing == [] and response.headers["X-Total-Count"] == "4"
    beyond, response = await ok(api, "/evses", offset=10)
    assert beyond == [] and "Link" not in response.headers


# -- filters ------------------------------------------------------------------------------------
async def test_evse_filters(api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator) -> None:
    await scenario(bridge, hub)

    async def ids(**params: Any) -> list[str]:
        data, response = await ok(api, "/evses", **params)
        assert response.headers["X-Total-Count"] == str(len(data))
        return [e["evse_id"] for e in data]

    assert await ids(status="Occupied") == ["DE*ABC*E16*2"]
    assert await ids(status="occupied,AVAILABLE") == ["DE*ABC*E16*1", "DE*ABC*E16*2"]
    assert await ids(status="Unknown") == ["DE*ABC*E201*1", "DE*ABC*E201*2"]
    assert await ids(ocpp_status="Charging") == ["DE*ABC*E16*2"]
    assert await ids(hub_status="none") == ["DE*ABC*E201*1", "DE*ABC*E201*2"]
    assert await ids(charge_point_id="CP16", status="Available") == ["DE*ABC*E16*1"]
    assert await ids(pending="true") == []

    hub.faults.fail_http(503)  # the next change cannot be delivered: it stays pending
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Faulted")
        await eventually(lambda: any(p.http_status == 503 for p in hub.received))
    assert await ids(pending="true") == ["DE*ABC*E16*1"]
    evse, _ = await ok(api, "/evses/DE*ABC*E16*1")
    assert evse["status"] == "OutOfService" and evse["hub_status"] == "Available"
    assert evse["last_push"]["outcome"] == "retry" and evse["last_push"]["code"] is None
    assert "HTTP 503" in evse["last_push"]["info"]  # no OICP code in a bare HTTP error
    parse_time(evse["pending_since"])
    assert await ids(pending="false", status="Occupied") == ["DE*ABC*E16*2"]


async def test_parked_evse_shows_the_refusal(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    hub.faults.answer_code("018", count=1)
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await eventually(lambda: any(p.code == "018" for p in hub.received))
    await eventually(lambda: not bridge.outbox)
    parked, _ = await ok(api, "/evses", parked="true")
    assert [e["evse_id"] for e in parked] == ["DE*ABC*E16*1"]
    assert parked[0]["parked"] == "018"
    assert parked[0]["last_push"]["outcome"] == "park"
    assert parked[0]["pending"] is False and parked[0]["hub_status"] is None


async def test_date_filters(api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator) -> None:
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=2)
    await scenario(bridge, hub)
    recent, _ = await ok(api, "/evses", date_from=iso(start))
    assert [e["evse_id"] for e in recent] == ["DE*ABC*E16*1", "DE*ABC*E16*2"]  # updated ones
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert (await ok(api, "/evses", date_from=iso(later)))[0] == []
    assert (await ok(api, "/evses", date_to=iso(start)))[0] == []
    offset_form, _ = await ok(api, "/evses", date_from=start.astimezone(
        dt.timezone(dt.timedelta(hours=2))).isoformat())  # fmt: skip
    assert len(offset_form) == 2  # +02:00 survives the query string
    cps, _ = await ok(api, "/charge-points", date_from=iso(start), date_to=iso(later))
    assert [c["charge_point_id"] for c in cps] == ["CP16"]


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"limit": "abc"}, ["limit", "'abc'", "integer"]),
        ({"offset": "-1"}, ["offset", "at least 0"]),
        ({"date_from": "yesterday"}, ["date_from", "RFC 3339"]),
        ({"date_from": "2026-01-02T00:00:00Z", "date_to": "2026-01-01T00:00:00Z"},
         ["date_from", "date_to"]),
        ({"status": "Bogus"}, ["status", "'Bogus'", "Available", "OutOfService"]),
        ({"ocpp_status": "Charging,Sleeping"}, ["ocpp_status", "'Sleeping'"]),
        ({"pending": "maybe"}, ["pending", "'maybe'", "true or false"]),
        ({"colour": "red"}, ["unknown parameter colour", "allowed:", "status"]),
        ({"limit": ["1", "2"]}, ["limit", "given 2 times"]),
    ],
)  # fmt: skip
async def test_bad_evse_list_parameters(
    api: httpx.AsyncClient, bridge: Bridge, params: dict[str, Any], names: list[str]
) -> None:
    message = await refused(api, "/evses", **params)
    for name in names:
        assert name in message, message


async def test_bad_charge_point_parameters(api: httpx.AsyncClient, bridge: Bridge) -> None:
    assert "protocol" in await refused(api, "/charge-points", protocol="1.5")
    assert "connected" in await refused(api, "/charge-points", connected="perhaps")
    assert "unknown parameter status" in await refused(api, "/charge-points", status="x")
    assert "unknown parameter limit" in await refused(api, "/evses/DE*ABC*E16*1", limit="1")


async def test_unknown_objects_and_endpoints(api: httpx.AsyncClient, bridge: Bridge) -> None:
    for path, code, words in [
        ("/evses/DE*ABC*E99*1", 2003, "DE*ABC*E99*1"),
        ("/charge-points/CP-nope", 2003, "CP-nope"),
        ("/stations", 2000, "no such endpoint"),
    ]:
        response = await api.get(path)
        assert response.status_code == 404
        body = response.json()
        assert body["status_code"] == code and words in body["status_message"]
        assert body["data"] is None
    response = await api.post("/evses", json={})
    assert response.status_code == 405
    assert response.json()["status_code"] == 2000
    assert "read-only" in response.json()["status_message"]


async def test_server_errors_answer_3000() -> None:
    """A bug in a handler still gets an envelope (unit test of the middleware)."""

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    app = web.Application(middlewares=[api_middleware])
    tokens = Tokens([ApiToken(name="t", hash=hash_token(WRITE_TOKEN), scope="write")])
    app[CONTEXT] = SimpleNamespace(tokens=tokens)  # type: ignore[assignment]
    app.router.add_get(f"{API_PREFIX}/broken", broken)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            response = await client.get(f"http://127.0.0.1:{port}{API_PREFIX}/broken", headers=AUTH)
    finally:
        await runner.cleanup()
    assert response.status_code == 500
    body = response.json()
    assert body["status_code"] == 3000 and "RuntimeError" in body["status_message"]
    assert "boom" not in body["status_message"]  # internals stay in the log
