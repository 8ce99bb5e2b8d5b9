"""The management API over real HTTP, with real chargers and the hub simulator: live effects."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from bridge.app import Bridge
from bridge.hubsim import HubSimulator
from tests.conftest import AUTH, READ_AUTH, Events, charger, eventually, pushes

PASSWORD = "0123456789abcdef0123"

LOCATION = {
    "id": "LOC-1",
    "name": "Depot",
    "address": "Main Street 1",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DEU",
    "coordinates": {"latitude": "52.520008", "longitude": "13.404954"},
    "time_zone": "Europe/Berlin",
}
CONNECTOR = {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET",
             "power_type": "AC_3_PHASE", "max_voltage": 230, "max_amperage": 32,
             "max_electric_power": 22000}  # fmt: skip


def station(
    cp_id: str = "CP-NEW", *, evse_id: str = "DE*ABC*E900*1", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": cp_id,
        "location_id": "LOC-1",
        "deployment_state": "production",
        "evses": [{"uid": f"{cp_id}-1", "evse_id": evse_id, "ocpp_ids": [1],
                   "connectors": [CONNECTOR]}],
    }  # fmt: skip
    body.update(extra)
    return body


@pytest.fixture
async def api(bridge: Bridge) -> AsyncIterator[httpx.AsyncClient]:
    assert bridge.ops_server is not None
    base = f"http://127.0.0.1:{bridge.ops_server.port}/api/v2"
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH) as client:
        yield client


async def ok(response: Awaitable[httpx.Response]) -> tuple[Any, httpx.Response]:
    r = await response
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status_code"] == 1000, body
    return body["data"], r


async def refused(response: Awaitable[httpx.Response], code: int = 2001) -> str:
    r = await response
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status_code"] == code, body
    assert body["data"] is None
    return str(body["status_message"])


async def with_location(api: httpx.AsyncClient) -> None:
    await ok(api.post("/locations", json=LOCATION))


# -- create and connect --------------------------------------------------------------------------
async def test_created_station_connects_at_once(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator, events: Events
) -> None:
    await with_location(api)
    body = station(security_profile=1, password=PASSWORD)
    data, response = await ok(api.post("/chargestations", json=body))
    assert response.headers["ETag"] == '"1"'
    assert "password" not in data and data["has_password"] is True
    assert data["source"] == "api" and data["evses"][0]["status"] == "UNKNOWN"
    assert PASSWORD not in response.text
    # The password is only stored as its scrypt hash.
    assert bridge.catalog.stations["CP-NEW"].password_hash.startswith("scrypt:")  # type: ignore[union-attr]
    writes = events.named("api.write")
    assert writes and writes[-1]["client"] == "crm" and PASSWORD not in str(events.records)

    url = f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP-NEW"
    with pytest.raises(InvalidStatus) as refused_login:
        await websockets.connect(url, subprotocols=[Subprotocol("ocpp1.6")])
    assert refused_login.value.response.status_code == 401
    basic = base64.b64encode(f"CP-NEW:{PASSWORD}".encode()).decode()
    async with websockets.connect(
        url,
        subprotocols=[Subprotocol("ocpp1.6")],
        additional_headers={"Authorization": f"Basic {basic}"},
    ) as ws:
        await ws.send('[2,"1","StatusNotification",{"connectorId":1,"errorCode":"NoError",'
                      '"status":"Charging"}]')  # fmt: skip
        assert '"1"' in str(await ws.recv())
        # Nothing known before its first report: that is its first push.
        await eventually(lambda: ("insert", "DE*ABC*E900*1", "Occupied") in pushes(hub))
        assert [p for p in pushes(hub) if p[1] == "DE*ABC*E900*1"] == [
            ("insert", "DE*ABC*E900*1", "Occupied")
        ]
    one, _ = await ok(api.get("/chargestations/CP-NEW"))
    assert one["evses"][0]["status"] == "CHARGING" and one["evses"][0]["oicp_status"] == "Occupied"
    location, _ = await ok(api.get("/locations/LOC-1"))
    assert location["last_updated"] >= one["evses"][0]["last_updated"]  # cascade


async def test_refusals_name_the_field(api: httpx.AsyncClient, bridge: Bridge) -> None:
    missing = {k: v for k, v in LOCATION.items() if k != "city"}
    assert "city" in await refused(api.post("/locations", json=missing))
    for field, value, words in [
        ("country", "DE", "country"), ("country", "XYZ", "alpha-3"),
        ("coordinates", {"latitude": "52.5", "longitude": "13.404954"}, "latitude"),
        ("coordinates", {"latitude": "95.000000", "longitude": "13.404954"}, "range"),
        ("time_zone", "Mars/Olympus", "IANA"), ("parking_type", "ROOF", "parking_type"),
        ("operator", {"hotline_phone": "0800"}, "hotline_phone"),
        ("operator", {"payment_options": ["No Payment", "Direct"]}, "No Payment"),
        ("colour", "red", "unknown field"),
    ]:  # fmt: skip
        message = await refused(api.post("/locations", json={**LOCATION, field: value}))
        assert words in message, (field, message)
    assert "location_id" in await refused(api.post("/chargestations", json=station()))
    await with_location(api)
    for body, words in [
        (station(evse_id="DE*XYZ*E1*1"), ["evses[0].evse_id", "operator prefix"]),
        (station(evse_id="not an id"), ["evses[0].evse_id", "EvseID"]),
        (station("CP16", evse_id="DE*ABC*E900*9"), ["configuration file"]),
        (station("CP-X", evse_id="DE*ABC*E16*1"), ["evses[0].evse_id", "CP16"]),
        (station(deployment_state="sold"), ["deployment_state"]),
        (station(security_profile=1), ["password", "security profile 1"]),
        (station(evses=[], charge_station_template_id="nope"), ["template", "'nope'"]),
        (station(evses=[]), ["evses", "at least one EVSE"]),
        ({**station(), "evses": [{**station()["evses"][0], "connectors": [
            {**CONNECTOR, "max_electric_power": 90000}]}]}, ["max_electric_power", "22080"]),
        ({**station(), "evses": [{**station()["evses"][0], "connectors": [
            {**CONNECTOR, "max_voltage": 99999}]}]}, ["max_voltage"]),
    ]:  # fmt: skip
        code = 2000 if "configuration file" in words else 2001
        message = await refused(api.put(f"/chargestations/{body['id']}", json=body), code)
        for word in words:
            assert word in message, (word, message)
    assert set(bridge.catalog.stations) == {"CP16", "CP201"}  # nothing half-applied
    r = await api.get("/chargestations/CP-nope")
    assert r.status_code == 404 and r.json()["status_code"] == 2003


async def test_if_match(api: httpx.AsyncClient, bridge: Bridge) -> None:
    await with_location(api)
    _, response = await ok(api.get("/locations/LOC-1"))
    etag = response.headers["ETag"]
    _, changed = await ok(api.patch("/locations/LOC-1", json={"name": "A"},
                                    headers={"If-Match": etag}))  # fmt: skip
    r = await api.patch("/locations/LOC-1", json={"name": "B"}, headers={"If-Match": etag})
    assert r.status_code == 412
    body = r.json()
    assert body["status_code"] == 2000 and "out of date" in body["status_message"]
    assert body["data"]["name"] == "A" and r.headers["ETag"] == changed.headers["ETag"] != etag
    assert bridge.catalog.locations["LOC-1"].body.name == "A"  # not applied


async def test_tokens_and_scopes(bridge: Bridge) -> None:
    assert bridge.ops_server is not None
    base = f"http://127.0.0.1:{bridge.ops_server.port}"
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        for path in ("/api/v1/evses", "/api/v2/locations", "/api/v2/nothing"):
            r = await client.get(path)
            assert r.status_code == 401 and r.json()["status_code"] == 2000, path
            r = await client.get(path, headers={"Authorization": "Token wrong"})
            assert r.status_code == 401
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/api/v2/openapi.json")).json()["openapi"] == "3.1.0"
        r = await client.get("/api/v2/locations", headers=READ_AUTH)
        assert r.status_code == 200
        r = await client.post("/api/v2/locations", json=LOCATION, headers=READ_AUTH)
        assert r.status_code == 403 and not bridge.catalog.locations
        token = AUTH["Authorization"].split()[1]
        b64 = base64.b64encode(token.encode()).decode()  # OCPI 2.2.1 sends it base64-encoded
        r = await client.get("/api/v2/locations", headers={"Authorization": f"Token {b64}"})
        assert r.status_code == 200


async def test_body_limits(api: httpx.AsyncClient, bridge: Bridge) -> None:
    r = await api.post("/locations", content=b"[" + b" " * (1024 * 1024 + 10) + b"]",
                       headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 413 and r.json()["status_code"] == 2001
    items = [{"action": "create", "body": LOCATION}] * 1001
    message = await refused(api.post("/locations/batch", json=items))
    assert "1001 items" in message and "1000" in message
    r = await api.post(
        "/locations", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["status_code"] == 2001
    assert not bridge.catalog.locations


async def test_batch_answers_per_item(api: httpx.AsyncClient, bridge: Bridge) -> None:
    await with_location(api)
    items = [
        {"action": "create", "body": station("CP-A", evse_id="DE*ABC*EA*1")},
        {"action": "create", "body": station("CP-B", evse_id="DE*XYZ*EB*1")},  # wrong prefix
        {"action": "create", "body": station("CP-C", evse_id="DE*ABC*EA*1")},  # duplicate
        {"action": "patch", "id": "CP-A", "body": {"deployment_state": "stock"}},
        {"action": "explode", "body": {}},
    ]
    results, _ = await ok(api.post("/chargestations/batch", json=items))
    assert [r["status_code"] for r in results] == [1000, 2001, 2001, 1000, 2001]
    assert "operator prefix" in results[1]["status_message"]
    assert "CP-A" in results[2]["status_message"]
    assert results[3]["etag"] == '"2"'
    assert set(bridge.catalog.stations) == {"CP16", "CP201", "CP-A"}
    assert bridge.catalog.stations["CP-A"].body.deployment_state.value == "stock"


# -- live effects --------------------------------------------------------------------------------
async def test_deprecated_station_is_disconnected_and_leaves_the_hub(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    await with_location(api)
    await ok(api.post("/chargestations", json=station()))
    async with charger(bridge.ocpp.port, "CP-NEW") as cp:
        await cp.status(1, "Available")
        await eventually(lambda: ("insert", "DE*ABC*E900*1", "Available") in pushes(hub))
        await ok(api.patch("/chargestations/CP-NEW", json={"deployment_state": "deprecated"}))
        await eventually(lambda: cp.ws.state.name == "CLOSED")
    assert cp.ws.close_code == 1008
    # Its record leaves the hub with a delete push, and it is never pushed again.
    await eventually(lambda: "DE*ABC*E900*1" not in hub.state)
    assert [p[0] for p in pushes(hub) if p[1] == "DE*ABC*E900*1"] == ["insert", "delete"]
    assert bridge.outbox.rows["DE*ABC*E900*1"].removed
    with pytest.raises(InvalidStatus) as again:
        async with charger(bridge.ocpp.port, "CP-NEW"):
            pass
    assert again.value.response.status_code == 404
    data, _ = await ok(api.get("/chargestations/CP-NEW"))  # history stays readable
    assert data["deployment_state"] == "deprecated"


async def test_stock_is_not_shared_until_production(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    await with_location(api)
    await ok(api.post("/chargestations", json=station(deployment_state="stock")))
    async with charger(bridge.ocpp.port, "CP-NEW") as cp:  # an installer tests it
        await cp.status(1, "Charging")
        data, _ = await ok(api.get("/chargestations/CP-NEW"))
        assert data["evses"][0]["status"] == "CHARGING"
        assert "DE*ABC*E900*1" not in bridge.engine.evse_ids() and not bridge.outbox
        await ok(api.patch("/chargestations/CP-NEW", json={"deployment_state": "production"}))
        await eventually(lambda: ("insert", "DE*ABC*E900*1", "Occupied") in pushes(hub))
    assert [p for p in pushes(hub) if p[1] == "DE*ABC*E900*1"] == [
        ("insert", "DE*ABC*E900*1", "Occupied")
    ]


async def test_new_evse_id_replaces_the_old_at_the_hub(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    await with_location(api)
    await ok(api.post("/chargestations", json=station()))
    async with charger(bridge.ocpp.port, "CP-NEW") as cp:
        await cp.status(1, "Charging")
        await eventually(lambda: ("insert", "DE*ABC*E900*1", "Occupied") in pushes(hub))
        data, response = await ok(api.get("/chargestations/CP-NEW"))
        evse = data["evses"][0]
        evse["evse_id"] = "DE*ABC*E901*1"
        await ok(api.put("/chargestations/CP-NEW", json=data,
                         headers={"If-Match": response.headers["ETag"]}))  # fmt: skip
        await eventually(lambda: not bridge.outbox)
    # The old record leaves with a delete, the new one is inserted once with the current status.
    assert [p for p in pushes(hub) if p[1] == "DE*ABC*E900*1"][1:] == [
        ("delete", "DE*ABC*E900*1", "Occupied")
    ]
    assert [p for p in pushes(hub) if p[1] == "DE*ABC*E901*1"] == [
        ("insert", "DE*ABC*E901*1", "Occupied")
    ]
    assert hub.state["DE*ABC*E901*1"] == "Occupied" and "DE*ABC*E900*1" not in hub.state


async def test_status_feed_over_the_api(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    await with_location(api)
    await ok(api.post("/chargestations", json=station(status_source="api")))
    data, response = await ok(api.patch("/chargestations/CP-NEW/evses/CP-NEW-1",
                                        json={"status": "BLOCKED"}))  # fmt: skip
    assert data["evses"][0]["status"] == "BLOCKED" and data["evses"][0]["oicp_status"] == "Occupied"
    # Durable before the answer: the outbox row is committed with the change.
    row = bridge.outbox.rows["DE*ABC*E900*1"]
    assert row.status == "Occupied"
    await eventually(lambda: ("Occupied") in [p[2] for p in pushes(hub) if p[1] == row.evse_id])
    await ok(api.patch("/chargestations/CP-NEW/evses/CP-NEW-1", json={"status": "AVAILABLE"},
                       headers={"If-Match": response.headers["ETag"]}))  # fmt: skip
    await eventually(lambda: ("update", "DE*ABC*E900*1", "Available") in pushes(hub))
    message = await refused(api.patch("/chargestations/CP-NEW/evses/CP-NEW-1",
                                      json={"status": "SLEEPING"}))  # fmt: skip
    assert "status" in message
    with pytest.raises((InvalidStatus, ConnectionClosed)):  # its chargers talk to another system
        async with charger(bridge.ocpp.port, "CP-NEW"):
            pass
    # OCPP-fed stations: the status is computed, only REMOVED may be written.
    message = await refused(api.patch("/chargestations/CP16/evses/DE*ABC*E16*1",
                                      json={"status": "AVAILABLE"}), 2000)  # fmt: skip
    assert "configuration file" in message


async def test_removed_evse_leaves_the_hub(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    await with_location(api)
    body = station()
    body["evses"].append({"uid": "CP-NEW-2", "evse_id": "DE*ABC*E900*2", "ocpp_ids": [2],
                          "connectors": [CONNECTOR]})  # fmt: skip
    await ok(api.post("/chargestations", json=body))
    async with charger(bridge.ocpp.port, "CP-NEW") as cp:
        await cp.status(2, "Available")
        await eventually(lambda: ("insert", "DE*ABC*E900*2", "Available") in pushes(hub))
    data, _ = await ok(api.patch("/chargestations/CP-NEW/evses/CP-NEW-2",
                                 json={"status": "REMOVED"}))  # fmt: skip
    assert data["evses"][1]["status"] == "REMOVED"
    await eventually(lambda: "DE*ABC*E900*2" not in hub.state)
    message = await refused(api.put("/chargestations/CP-NEW", json=station()))
    assert "CP-NEW-2" in message and "REMOVED" in message  # no silent delete
    assert "REMOVED" in await refused(api.patch("/chargestations/CP-NEW/evses/CP-NEW-2",
                                                json={"status": "AVAILABLE"}))  # fmt: skip


async def test_templates(api: httpx.AsyncClient, bridge: Bridge) -> None:
    await with_location(api)
    template = {"id": "T-22", "vendor": "V", "model": "Twin", "evses": [
        {"ocpp_ids": [1], "connectors": [CONNECTOR]},
        {"ocpp_ids": [2], "connectors": [CONNECTOR]}]}  # fmt: skip
    await ok(api.put("/templates/T-22", json=template))
    data, _ = await ok(api.post("/chargestations", json=station(
        "CP 7", evses=[], charge_station_template_id="T-22")))  # fmt: skip
    assert [e["evse_id"] for e in data["evses"]] == ["DE*ABC*ECP7*1", "DE*ABC*ECP7*2"]
    template["model"] = "Twin 2"
    await ok(api.put("/templates/T-22", json=template))  # copied, not linked
    listed, response = await ok(api.get("/chargestations", params={"limit": 1}))
    assert response.headers["X-Total-Count"] == "3" and 'rel="next"' in response.headers["Link"]
    assert listed[0]["id"] == "CP 7"


async def test_fullload_command(api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator) -> None:
    preview, _ = await ok(api.post("/commands/fullload", params={"dry_run": "true"}))
    assert preview["state"] == "preview" and preview["records"] == 4
    assert preview["body"]["ActionType"] == "fullLoad"
    assert not any(p.action == "fullLoad" for p in hub.received)
    sent, _ = await ok(api.post("/commands/fullload"))
    assert sent == {"state": "accepted", "records": 4, "detail": None, "body": None}
    assert any(p.action == "fullLoad" for p in hub.received)


async def test_api_on_its_own_tls_port(
    make_bridge: Callable[..., Awaitable[Bridge]], tmp_path: Any
) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    pem = tmp_path / "api.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    bridge = await make_bridge(api={"port": 0, "host": "127.0.0.1", "tls_cert": pem})
    assert bridge.ops_server is not None
    context = ssl.create_default_context()
    ca.configure_trust(context)
    url = bridge.ops_server.api_url
    assert url.startswith("https://")
    async with httpx.AsyncClient(verify=context, timeout=5) as client:
        r = await client.get(f"{url}/api/v1/evses", headers=AUTH)
        assert r.status_code == 200
    async with httpx.AsyncClient(timeout=5) as plain:  # the ops port keeps probes, not the API
        base = f"http://127.0.0.1:{bridge.ops_server.port}"
        assert (await plain.get(f"{base}/healthz")).status_code == 200
        assert (await plain.get(f"{base}/api/v1/evses", headers=AUTH)).status_code == 404


async def test_new_ocpp_address_takes_the_known_status(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    """ocpp_ids [1] → [2]: the EVSE now shows what connector 2 reported (kept while unmapped)."""
    await with_location(api)
    await ok(api.post("/chargestations", json=station()))
    async with charger(bridge.ocpp.port, "CP-NEW") as cp:
        await cp.status(1, "Charging")
        await cp.status(2, "Available")  # no EVSE of this station uses connector 2 yet
        await eventually(lambda: ("insert", "DE*ABC*E900*1", "Occupied") in pushes(hub))
        await ok(api.patch("/chargestations/CP-NEW/evses/CP-NEW-1", json={"ocpp_ids": [2]}))
        await eventually(lambda: ("update", "DE*ABC*E900*1", "Available") in pushes(hub))
        await cp.status(1, "Finishing")  # connector 1 is no EVSE's any more: no push
        await cp.status(2, "Preparing")
        await eventually(lambda: ("update", "DE*ABC*E900*1", "Occupied") in pushes(hub))
    assert [p for p in pushes(hub) if p[1] == "DE*ABC*E900*1"] == [
        ("insert", "DE*ABC*E900*1", "Occupied"),
        ("update", "DE*ABC*E900*1", "Available"),
        ("update", "DE*ABC*E900*1", "Occupied"),
    ]


async def test_status_feed_is_on_disk_before_the_answer(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    import sqlite3

    hub.faults.fail_http(503)  # the hub takes nothing: only the database can have it
    await with_location(api)
    await ok(api.post("/chargestations", json=station(status_source="api")))
    await ok(api.patch("/chargestations/CP-NEW/evses/CP-NEW-1", json={"status": "OUTOFORDER"}))
    db = sqlite3.connect(bridge.settings.state.database)
    try:
        row = db.execute("SELECT status, pending_since FROM evse WHERE evse_id = ?",
                         ("DE*ABC*E900*1",)).fetchone()  # fmt: skip
        (body,) = db.execute("SELECT body FROM catalog_station WHERE id = 'CP-NEW'").fetchone()
    finally:
        db.close()
    assert row[0] == "OutOfService" and row[1] is not None  # pending, committed
    assert '"status":"OUTOFORDER"' in body  # with the catalog change, one transaction


async def test_lists_page_and_filter_by_date(api: httpx.AsyncClient, bridge: Bridge) -> None:
    import datetime as dt

    await with_location(api)
    for n in range(5):
        await ok(api.post("/chargestations", json=station(f"CP-{n}", evse_id=f"DE*ABC*E9{n}*1")))
    first, response = await ok(api.get("/chargestations", params={"limit": 2}))
    assert [s["id"] for s in first] == ["CP-0", "CP-1"]
    assert response.headers["X-Total-Count"] == "7" and response.headers["X-Limit"] == "2"
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    none, response = await ok(api.get("/chargestations", params={"date_from": future}))
    assert none == [] and response.headers["X-Total-Count"] == "0"
    stock, _ = await ok(api.get("/chargestations", params={"deployment_state": "stock"}))
    assert stock == []
    here, _ = await ok(api.get("/chargestations", params={"location_id": "LOC-1"}))
    assert len(here) == 5  # the file's stations have no location
    assert "date_from" in await refused(api.get("/locations", params={"date_from": "soon"}))
    assert "colour" in await refused(api.get("/templates", params={"colour": "red"}))


async def test_operator_facts_default_from_the_configuration(
    make_bridge: Callable[..., Awaitable[Bridge]],
) -> None:
    bridge = await make_bridge(catalog={"operator_defaults": {
        "hotline_phone": "+4930123456", "payment_options": ["Contract"],
        "calibration_law": "Not Available"}})  # fmt: skip
    assert bridge.ops_server is not None
    async with httpx.AsyncClient(base_url=bridge.ops_server.api_url, headers=AUTH) as client:
        body = {**LOCATION, "operator": {"payment_options": ["No Payment"]}}
        data, _ = await ok(client.post("/api/v2/locations", json=body))
    assert data["operator"]["payment_options"] == ["No Payment"]
    assert data["operator_effective"]["payment_options"] == ["No Payment"]
    assert data["operator_effective"]["hotline_phone"] == "+4930123456"
    assert data["operator_effective"]["calibration_law"] == "Not Available"


async def test_evse_patch_keeps_the_station_rules(api: httpx.AsyncClient, bridge: Bridge) -> None:
    await with_location(api)
    body = station()
    body["evses"].append({"uid": "CP-NEW-2", "evse_id": "DE*ABC*E900*2", "ocpp_ids": [2],
                          "connectors": [CONNECTOR]})  # fmt: skip
    await ok(api.post("/chargestations", json=body))
    message = await refused(api.patch("/chargestations/CP-NEW/evses/CP-NEW-2",
                                      json={"evse_id": "DE*ABC*E900*1"}))  # fmt: skip
    assert "DE*ABC*E900*1" in message and "twice" in message
    message = await refused(api.patch("/chargestations/CP-NEW/evses/CP-NEW-2",
                                      json={"ocpp_ids": [1]}))  # fmt: skip
    assert "OCPP number 1" in message
    evse_ids = [e.evse_id for e in bridge.catalog.stations["CP-NEW"].body.evses]
    assert evse_ids == ["DE*ABC*E900*1", "DE*ABC*E900*2"]


async def test_if_match_on_a_missing_object(api: httpx.AsyncClient, bridge: Bridge) -> None:
    r = await api.put("/locations/LOC-1", json=LOCATION, headers={"If-Match": '"1"'})
    assert r.status_code == 412 and r.json()["status_code"] == 2000
    assert not bridge.catalog.locations
    r = await api.put("/locations/LOC-1", json=LOCATION, headers={"If-Match": "*"})
    assert r.status_code == 412
    await ok(api.put("/locations/LOC-1", json=LOCATION))  # without If-Match: created
    await ok(api.put("/locations/LOC-1", json={**LOCATION, "name": "B"}, headers={"If-Match": "*"}))
