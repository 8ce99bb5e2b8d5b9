"""EVSE data at the hub, end to end over real sockets: the management API (real HTTP), real
chargers, the hub simulator over HTTPS with mutual TLS (which checks every body against the
official schemas and refuses a status for an EVSE it holds no data for), both state backends."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from bridge.app import Bridge
from bridge.hubsim import HubSimulator, server_ssl_context
from bridge.ops.status_cmd import status
from tests.conftest import AUTH, OPERATOR_FACTS, charger, eventually, pushes, settings_for
from tests.oicp_schema import validate_push_body
from tests.procs import BridgeProcess, RawCharger
from tests.test_catalog_api import CONNECTOR, LOCATION, station
from tests.test_catalog_restart import api_of, process_config


@pytest.fixture
async def tls_hub(tmp_path: Path) -> AsyncIterator[tuple[HubSimulator, dict[str, Any]]]:
    """The hub on https, requiring the bridge's client certificate (trustme PKI); refuses a
    status for an EVSE without data. Yields it and the bridge's ``oicp`` settings for it."""
    ca = trustme.CA()
    files = {
        "ca": ca.cert_pem,
        "hub": ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem,
        "client": ca.issue_cert("bridge.example.com").private_key_and_cert_chain_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(tmp_path / f"{name}.pem"))
    context = server_ssl_context(tmp_path / "hub.pem", None, client_ca=tmp_path / "ca.pem")
    async with HubSimulator(ssl_context=context, body_validator=validate_push_body) as sim:
        sim.require_data_for_status = True
        oicp = {"base_url": sim.base_url, "client_cert": tmp_path / "client.pem",
                "ca_bundle": tmp_path / "ca.pem"}  # fmt: skip
        yield sim, oicp
    assert sim.schema_errors == [], sim.schema_errors


def api_client(bridge: Bridge) -> httpx.AsyncClient:
    assert bridge.ops_server is not None
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{bridge.ops_server.port}/api/v2", headers=AUTH, timeout=10
    )


async def ok(response: Awaitable[httpx.Response]) -> Any:
    r = await response
    assert r.status_code == 200 and r.json()["status_code"] == 1000, r.text
    return r.json()["data"]


def data_pushes(hub: HubSimulator) -> list[tuple[str | None, list[str]]]:
    """(action, EvseIDs) of every accepted data push, in order."""
    return [(p.action, [e for e, _ in p.records]) for p in hub.received
            if p.endpoint == "data" and p.code == "000"]  # fmt: skip


def refused_statuses(hub: HubSimulator) -> list[str]:
    return [(p.body and json.dumps(p.body)) or "" for p in hub.received
            if p.endpoint == "status" and p.code not in ("000", None)]  # fmt: skip


async def test_data_insert_reaches_the_hub_before_the_status(
    tls_hub: tuple[HubSimulator, dict[str, Any]], make_bridge: Callable[..., Awaitable[Bridge]]
) -> None:
    """The newcomer's path: a location and a station over the API; the EVSE's data insert
    reaches the hub, then (once acknowledged) its status insert."""
    hub, oicp = tls_hub
    bridge = await make_bridge(oicp=oicp)
    async with api_client(bridge) as api:
        await ok(api.post("/locations", json=LOCATION))
        await ok(api.post("/chargestations", json=station()))
        async with charger(bridge.ocpp.port, "CP-NEW") as cp:
            await cp.status(1, "Available")
            await eventually(lambda: hub.state == {"DE*ABC*E900*1": "Available"})
        read = await ok(api.get("/chargestations/CP-NEW"))
    kinds = [(p.endpoint, p.action) for p in hub.received if p.code == "000"]
    assert kinds[:2] == [("data", "insert"), ("status", "insert")]
    assert refused_statuses(hub) == []
    record = hub.data_state["DE*ABC*E900*1"]
    assert record["Plugs"] == ["Type 2 Outlet"] and record["Address"]["Street"] == "Main Street"
    assert record["ChargingFacilities"][0]["Power"] == 22
    assert record["DynamicInfoAvailable"] == "auto"
    hub_data = read["evses"][0]["hub_data"]
    assert hub_data["state"] == "acknowledged" and hub_data["hub_acknowledged"] is True
    assert bridge.data is not None and bridge.data.hub_acknowledged("DE*ABC*E900*1")


async def test_a_bad_record_is_held_with_its_field_errors_and_blocks_no_other(
    tls_hub: tuple[HubSimulator, dict[str, Any]], make_bridge: Callable[..., Awaitable[Bridge]]
) -> None:
    """No hotline configured for the operator; one location sets its own: the records of the
    other location fail (HotlinePhoneNumber is required), are never sent, and their statuses
    wait, while the first location's EVSE goes through."""
    hub, oicp = tls_hub
    facts = {k: v for k, v in OPERATOR_FACTS.items() if k != "hotline_phone"}
    bridge = await make_bridge(oicp=oicp, catalog={"operator_defaults": facts})
    bad = station("CP-BAD", evse_id="DE*ABC*E910*1", location_id="LOC-2")
    async with api_client(bridge) as api:
        await ok(api.post("/locations", json=LOCATION | {
            "operator": {"hotline_phone": "+4930123456"}}))  # fmt: skip
        await ok(api.post("/locations", json=LOCATION | {"id": "LOC-2"}))
        await ok(api.post("/chargestations", json=bad))
        await ok(api.post("/chargestations", json=station()))
        async with charger(bridge.ocpp.port, "CP-BAD") as c1, \
                charger(bridge.ocpp.port, "CP-NEW") as c2:  # fmt: skip
            await c1.status(1, "Charging")
            await c2.status(1, "Charging")
            await eventually(lambda: hub.state == {"DE*ABC*E900*1": "Occupied"})
            await asyncio.sleep(0.2)
        read = await ok(api.get("/chargestations/CP-BAD"))
    assert "DE*ABC*E910*1" not in hub.data_state and "DE*ABC*E910*1" not in hub.state
    hub_data = read["evses"][0]["hub_data"]
    assert hub_data["state"] == "invalid"
    assert hub_data["errors"] == [
        "HotlinePhoneNumber: required; set catalog.operator_defaults.hotline_phone (or the "
        "location's operator.hotline_phone)"
    ]
    assert bridge.outbox.is_pending("DE*ABC*E910*1")  # its status waits for valid data
    text = bridge.metrics.render()[0].decode()
    assert "bridge_evse_data_invalid 1.0" in text and "bridge_evse_status_held 1.0" in text


async def test_records_are_batched_and_a_location_change_updates_them(
    hub: HubSimulator, make_bridge: Callable[..., Awaitable[Bridge]]
) -> None:
    bridge = await make_bridge(evse_data={"batch_size": 3})
    many = station("CP-MANY")
    many["evses"] = [{"uid": f"m-{i}", "evse_id": f"DE*ABC*E77*{i}", "ocpp_ids": [i],
                      "connectors": [CONNECTOR]} for i in range(1, 8)]  # fmt: skip
    async with api_client(bridge) as api:
        await ok(api.post("/locations", json=LOCATION))
        await ok(api.post("/chargestations", json=many))
        await eventually(lambda: len(hub.data_state) == 7)
        sizes = [len(ids) for action, ids in data_pushes(hub)]
        assert max(sizes) <= 3 and sum(sizes) == 7
        await ok(api.patch("/locations/LOC-1", json={"city": "Potsdam"}))
        await eventually(lambda: all(r["Address"]["City"] == "Potsdam"
                                     for r in hub.data_state.values()))  # fmt: skip
    assert [a for a, _ in data_pushes(hub)].count("update") == 3  # 7 records, 3 a request


async def test_the_hub_losing_a_record_flips_update_to_insert(
    hub: HubSimulator, make_bridge: Callable[..., Awaitable[Bridge]]
) -> None:
    bridge = await make_bridge()
    async with api_client(bridge) as api:
        await ok(api.post("/locations", json=LOCATION))
        await ok(api.post("/chargestations", json=station()))
        await eventually(lambda: "DE*ABC*E900*1" in hub.data_state)
        hub._data[bridge.settings.oicp.operator_id].clear()  # the hub forgot it
        await ok(api.patch("/locations/LOC-1", json={"name": "Depot Nord"}))
        await eventually(lambda: "DE*ABC*E900*1" in hub.data_state)
    codes = [(p.action, p.code) for p in hub.received if p.endpoint == "data"]
    assert codes == [("insert", "000"), ("update", "022"), ("insert", "000")]
    assert hub.data_state["DE*ABC*E900*1"]["ChargingStationNames"][0]["value"] == "Depot Nord"


async def test_status_leaves_the_hub_before_the_data(
    tls_hub: tuple[HubSimulator, dict[str, Any]], make_bridge: Callable[..., Awaitable[Bridge]]
) -> None:
    hub, oicp = tls_hub
    bridge = await make_bridge(oicp=oicp)
    async with api_client(bridge) as api:
        await ok(api.post("/locations", json=LOCATION))
        await ok(api.post("/chargestations", json=station()))
        async with charger(bridge.ocpp.port, "CP-NEW") as cp:
            await cp.status(1, "Available")
            await eventually(lambda: "DE*ABC*E900*1" in hub.state)
        await ok(api.patch("/chargestations/CP-NEW", json={"deployment_state": "deprecated"}))
        await eventually(lambda: not hub.data_state and not hub.state)
    deletes = [(p.endpoint, p.time) for p in hub.received if p.action == "delete"]
    assert [e for e, _ in deletes] == ["status", "data"]


async def test_daylight_saving_change_updates_the_time_zone(
    hub: HubSimulator, make_bridge: Callable[..., Awaitable[Bridge]]
) -> None:
    from datetime import UTC, datetime

    bridge = await make_bridge()
    async with api_client(bridge) as api:
        await ok(api.post("/locations", json=LOCATION))
        await ok(api.post("/chargestations", json=station()))
        await eventually(lambda: "DE*ABC*E900*1" in hub.data_state)
    first = hub.data_state["DE*ABC*E900*1"]["Address"]["TimeZone"]
    service = bridge.data_service
    assert service is not None
    summer, winter = datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
    service.now = lambda: summer if first == "UTC+01:00" else winter  # the clocks changed
    assert service.offsets_changed() == ["Europe/Berlin"]
    bridge.store.commit_soon()
    want = "UTC+02:00" if first == "UTC+01:00" else "UTC+01:00"
    await eventually(lambda: hub.data_state["DE*ABC*E900*1"]["Address"]["TimeZone"] == want)
    assert [a for a, _ in data_pushes(hub)] == ["insert", "update"]


async def test_data_state_survives_a_restart_on_both_backends(
    hub: HubSimulator, tmp_path: Path, backend: dict[str, Any]
) -> None:
    (tmp_path / "state").mkdir(exist_ok=True)  # the API URL file's place on PostgreSQL too
    settings = settings_for(tmp_path, hub.base_url, state=backend)
    first = Bridge(settings)
    await first.start()
    async with api_client(first) as api:
        await ok(api.post("/locations", json=LOCATION))
        await ok(api.post("/chargestations", json=station()))
        await eventually(lambda: "DE*ABC*E900*1" in hub.data_state)
        await eventually(lambda: first.data is not None and not first.data)
    await first.stop()
    out = io.StringIO()
    assert status(settings, as_json=True, out=out) == 0  # the CLI reads it from the database
    (item,) = [i for i in json.loads(out.getvalue()) if i["evse_id"] == "DE*ABC*E900*1"]
    assert item["data"] == "acknowledged" and item["data_errors"] == []
    second = Bridge(settings)
    await second.start()
    try:
        assert second.data is not None
        assert second.data.hub_acknowledged("DE*ABC*E900*1") and not second.data
        await asyncio.sleep(0.2)
        assert [a for a, _ in data_pushes(hub)] == ["insert"]  # nothing pushed again
    finally:
        await second.stop()


@pytest.mark.slow
async def test_no_data_lost_across_sigkill_mid_push(tmp_path: Path, hub: HubSimulator) -> None:
    """kill -9 while a data insert hangs at the hub (which applies it later): after the restart
    the record is pushed again (update, or insert after 022), the status follows, once."""
    hub.require_data_for_status = True
    config = process_config(tmp_path, hub)
    proc = await BridgeProcess(config).start()
    try:
        async with httpx.AsyncClient(base_url=api_of(proc), headers=AUTH, timeout=10) as api:
            await api.post("/locations", json=LOCATION)
            hub.faults.late(2.0, count=1)  # applied 2 s after arrival, answered never in time
            r = await api.post("/chargestations", json=station())
            assert r.json()["status_code"] == 1000
            cp = await RawCharger.connect(proc.ocpp_port, "CP-NEW")
            await cp.status(1, "Charging")
            await eventually(lambda: any(p.endpoint == "data" for p in hub.received)
                             or hub.in_flight > 0)  # fmt: skip
            await cp.close()
    finally:
        await proc.kill()
    proc = await BridgeProcess(config).start()
    try:
        await eventually(lambda: hub.state == {"DE*ABC*E900*1": "Occupied"}, within=15)
        assert "DE*ABC*E900*1" in hub.data_state
        assert refused_statuses(hub) == []
    finally:
        await proc.terminate()


def test_operator_facts_of_the_tests_are_complete() -> None:
    """The configuration the tests use gives every fact a record needs (else every status of
    a catalog station would be held)."""
    assert set(OPERATOR_FACTS) == {"hotline_phone", "accessibility", "payment_options",
                                   "calibration_law"}  # fmt: skip
    assert pushes  # re-exported helper in use by the other modules


async def test_data_full_load_through_the_api_replaces_the_hubs_set(
    hub: HubSimulator, make_bridge: Callable[..., Awaitable[Bridge]]
) -> None:
    bridge = await make_bridge()
    async with api_client(bridge) as api:
        await ok(api.post("/locations", json=LOCATION))
        await ok(api.post("/chargestations", json=station()))
        await ok(api.post("/chargestations", json=station("CP-TWO", evse_id="DE*ABC*E901*1")))
        await eventually(lambda: len(hub.data_state) == 2)
        # The hub lost one and holds a stale record we never sent: the fullLoad puts it right.
        held = hub._data["DE*ABC"]
        stale = dict(held.pop("DE*ABC*E901*1"), EvseID="DE*ABC*E999*1")
        held["DE*ABC*E999*1"] = stale
        preview = await ok(api.post("/commands/fullload", params={"data": "true",
                                                                   "dry_run": "true"}))  # fmt: skip
        assert preview["state"] == "preview" and preview["records"] == 2
        validate_push_body("data", preview["body"])
        done = await ok(api.post("/commands/fullload", params={"data": "true", "wait": "10"}))
    assert done == {"state": "accepted", "records": 2, "detail": None, "body": None}
    assert set(hub.data_state) == {"DE*ABC*E900*1", "DE*ABC*E901*1"}
    (full,) = [p for p in hub.received if p.endpoint == "data" and p.action == "fullLoad"]
    assert len(full.records) == 2  # every record in one request, never an empty one first
    assert bridge.worker is not None and bridge.worker.last_data_full_load is not None


@pytest.mark.slow
async def test_no_data_lost_across_sigkill_mid_full_load(tmp_path: Path, hub: HubSimulator) -> None:
    config = process_config(tmp_path, hub)
    proc = await BridgeProcess(config).start()
    try:
        async with httpx.AsyncClient(base_url=api_of(proc), headers=AUTH, timeout=10) as api:
            await api.post("/locations", json=LOCATION)
            await api.post("/chargestations", json=station())
            await eventually(lambda: "DE*ABC*E900*1" in hub.data_state)
            await api.patch("/locations/LOC-1", json={"city": "Potsdam"})
            hub.faults.hang(5.0, count=None, action="fullLoad")  # every fullLoad hangs
            hub.faults.fail_http(503, count=None, action="update")  # and no update gets in
            await api.post("/commands/fullload", params={"data": "true", "wait": "0"})
            await eventually(lambda: hub.in_flight > 0)
    finally:
        await proc.kill()  # mid data fullLoad
    hub.faults.clear()
    proc = await BridgeProcess(config).start()
    try:
        await eventually(
            lambda: hub.data_state.get("DE*ABC*E900*1", {}).get("Address", {}).get("City")
            == "Potsdam", within=15,
        )  # fmt: skip
    finally:
        await proc.terminate()


async def test_a_refused_batch_is_split_and_only_the_bad_record_parked(
    hub: HubSimulator, make_bridge: Callable[..., Awaitable[Bridge]]
) -> None:
    bridge = await make_bridge(evse_data={"batch_size": 10})
    many = station("CP-MANY")
    many["evses"] = [{"uid": f"m-{i}", "evse_id": f"DE*ABC*E77*{i}", "ocpp_ids": [i],
                      "connectors": [CONNECTOR]} for i in range(1, 5)]  # fmt: skip
    hub.faults.fail_http(400, evse_id="DE*ABC*E77*2")  # the hub refuses whatever carries it
    async with api_client(bridge) as api:
        await ok(api.post("/locations", json=LOCATION))
        await ok(api.post("/chargestations", json=many))
        await eventually(lambda: len(hub.data_state) == 3)
        await eventually(lambda: bridge.data is not None and not bridge.data)
        read = await ok(api.get("/chargestations/CP-MANY"))
    assert set(hub.data_state) == {"DE*ABC*E77*1", "DE*ABC*E77*3", "DE*ABC*E77*4"}
    states = {e["evse_id"]: e["hub_data"]["state"] for e in read["evses"]}
    assert states == {"DE*ABC*E77*1": "acknowledged", "DE*ABC*E77*2": "parked",
                      "DE*ABC*E77*3": "acknowledged", "DE*ABC*E77*4": "acknowledged"}  # fmt: skip
    sizes = [len(p.records) for p in hub.received if p.endpoint == "data"]
    assert sizes[0] == 4 and set(sizes[1:]) == {1}  # the batch, then each record alone


async def test_oicp_22_data_goes_to_the_v22_path_in_its_shape(
    hub: HubSimulator, make_bridge: Callable[..., Awaitable[Bridge]]
) -> None:
    bridge = await make_bridge(oicp={"evse_data_version": "2.2"})
    async with api_client(bridge) as api:
        await ok(api.post("/locations", json=LOCATION))
        await ok(api.post("/chargestations", json=station()))
        await eventually(lambda: "DE*ABC*E900*1" in hub.data_state)
    (push,) = [p for p in hub.received if p.endpoint == "data"]
    assert push.code == "000"
    record = hub.data_state["DE*ABC*E900*1"]
    assert record["ChargingStationName"] == "Depot" and "ChargingStationNames" not in record
    assert record["ChargingModes"] == ["Mode_3"] and "lastUpdate" in record
    assert hub.schema_errors == []  # checked against the 2.2 Swagger by the simulator


async def test_a_data_push_timing_out_is_sent_again_after_the_settle_time(
    hub: HubSimulator, make_bridge: Callable[..., Awaitable[Bridge]], events: Any
) -> None:
    hub.require_data_for_status = True
    bridge = await make_bridge(oicp={"request_timeout": 0.3}, delivery={"settle_time": 0.3})
    hub.faults.hang(1.0, count=1)  # the first request outlives its timeout (maybe applied)
    async with api_client(bridge) as api:
        await ok(api.post("/locations", json=LOCATION))
        await ok(api.post("/chargestations", json=station()))
        async with charger(bridge.ocpp.port, "CP-NEW") as cp:
            await cp.status(1, "Charging")
            await eventually(lambda: hub.state == {"DE*ABC*E900*1": "Occupied"}, within=10)
    assert events.named("push.retry") and events.named("push.retry")[0]["ambiguous"] is True
    assert refused_statuses(hub) == []
    assert "DE*ABC*E900*1" in hub.data_state


async def test_a_large_data_push_is_streamed_with_its_length(hub: HubSimulator) -> None:
    """Over 1,000 records the client streams the body in chunks (never whole in memory) with
    the Content-Length computed up front (the same as the joined body's); the hub gets every
    record intact, non-ASCII text included."""
    from datetime import UTC, datetime

    from bridge.catalog.facts import OperatorFacts
    from bridge.catalog.model import LocationBody, StationBody
    from bridge.config import OicpSettings
    from bridge.oicp.client import OicpClient
    from bridge.oicp.models import ActionType
    from bridge.oicp.records import RecordFacts, build_record

    loc = LocationBody.model_validate(LOCATION | {"name": "Bahnhof Zoo ÄÖÜ"})  # non-ASCII too
    facts = RecordFacts(OperatorFacts.model_validate(OPERATOR_FACTS))
    records = []
    for i in range(1500):
        st = StationBody.model_validate(station(f"CP{i}", evse_id=f"DE*ABC*E{i}*1"))
        built = build_record(loc, st, st.evses[0], facts, now=datetime.now(UTC))
        records.append(json.dumps(built.record, ensure_ascii=False, separators=(",", ":")))
    seen: list[str | None] = []
    hub.on_push = lambda push: seen.append(None)
    settings = OicpSettings(base_url=hub.base_url, operator_id="DE*ABC", operator_name="ABC")
    async with OicpClient(settings) as client:
        expected = len(client.data_body(ActionType.FULL_LOAD, records))
        assert client._data_length(ActionType.FULL_LOAD, records) == expected
        outcome = await client.push_evse_data(ActionType.FULL_LOAD, records)
    assert outcome.code == "000" and len(hub.data_state) == 1500
    (push,) = [p for p in hub.received if p.endpoint == "data"]
    assert len(push.raw) == expected and push.body is not None
    assert hub.data_state["DE*ABC*E7*1"]["ChargingStationNames"][0]["value"] == "Bahnhof Zoo ÄÖÜ"


async def test_a_network_assigns_an_evse_once_the_hub_has_its_data(
    hub: HubSimulator, make_bridge: Callable[..., Awaitable[Bridge]]
) -> None:
    """EVSE networks ask DataOutbox.hub_acknowledged: a catalog EVSE is assigned to its group
    as soon as the hub acknowledged its data, with no status report at all."""
    bridge = await make_bridge()
    body = {"id": "Berlin AC", "state": "draft",
            "groups": [{"name": "AC 22 kW", "evses": ["DE*ABC*E900*1"]}]}  # fmt: skip
    async with api_client(bridge) as api:
        await ok(api.post("/locations", json=LOCATION))
        hub.faults.hang(0.5, count=1)  # the data insert takes a moment at the hub
        await ok(api.post("/chargestations", json=station()))
        await ok(api.post("/networks", json=body))
        await eventually(lambda: "DE*ABC*E900*1" in hub.data_state)
        groups = lambda: hub.networks.networks.get("DE*ABC", {}).get("Berlin AC", {})  # noqa: E731
        await eventually(lambda: groups().get("groups", {}) == {"DE*ABC*E900*1": "AC 22 kW"})
    assert hub.state == {}  # no status was ever pushed
    kinds = [p.endpoint for p in hub.received if p.code == "000"]
    assert kinds.index("data") < kinds.index("network")
    assert bridge.data is not None and bridge.data.hub_acknowledged("DE*ABC*E900*1")
