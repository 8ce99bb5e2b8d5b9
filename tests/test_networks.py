"""EVSE networks and groups (eRoamingEVSEAssignment) over real sockets: the management API, the
one push lane to the hub simulator, the price-zero guard, the simulator's own rules."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from subprocess import PIPE
from typing import Any

import httpx
import pytest
import yaml

from bridge.app import Bridge
from bridge.hubsim import HubSimulator
from bridge.ops.check_config_cmd import check_settings
from tests.conftest import AUTH, READ_AUTH, WRITE_TOKEN, charger, eventually, settings_for

NET = "Berlin AC"
E1, E2, E3 = "DE*ABC*E16*1", "DE*ABC*E16*2", "DE*ABC*E201*1"
NETWORK_PATH = "/api/evsenetwork/v1/operators/DE*ABC/network"


def network(state: str = "draft", **groups: list[str]) -> dict[str, Any]:
    return {"id": NET, "state": state,
            "groups": [{"name": name.replace("_", " "), "evses": evses}
                       for name, evses in groups.items()]}  # fmt: skip


def assignments(hub: HubSimulator) -> list[dict[str, Any]]:
    """The bodies of every network request the hub applied (code 000), in order."""
    return [p.body for p in hub.received if p.endpoint == "network" and p.code == "000"]  # type: ignore[misc]


def hub_groups(hub: HubSimulator) -> dict[str, str]:
    return dict(hub.networks.networks.get("DE*ABC", {}).get(NET, {}).get("groups", {}))


@pytest.fixture
async def api(bridge: Bridge) -> AsyncIterator[httpx.AsyncClient]:
    assert bridge.ops_server is not None
    base = f"http://127.0.0.1:{bridge.ops_server.port}/api/v2"
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=AUTH) as client:
        yield client


async def ok(response: Awaitable[httpx.Response]) -> Any:
    r = await response
    body = r.json()
    assert r.status_code == 200 and body["status_code"] == 1000, body
    return body["data"]


async def refused(response: Awaitable[httpx.Response]) -> str:
    r = await response
    body = r.json()
    assert r.status_code == 200 and body["status_code"] == 2001, body
    return str(body["status_message"])


async def known_at_hub(bridge: Bridge, hub: HubSimulator, *evse_ids: str) -> None:
    """Let CP16 report both EVSEs, so that the hub holds their records."""
    async with charger(bridge.ocpp.port, "CP16") as cp:
        await cp.boot()
        await cp.status(1, "Available")
        await cp.status(2, "Available")
        await eventually(lambda: all(e in hub.state for e in evse_ids))
        await eventually(lambda: all(bridge.outbox.rows[e].hub_acked_at for e in evse_ids))


async def test_draft_network_is_sent_whole_on_every_change(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    await known_at_hub(bridge, hub, E1, E2)
    await ok(api.post("/networks", json=network(Fast=[E1], Slow_lane=[E2])))
    await eventually(lambda: hub_groups(hub) == {E1: "Fast", E2: "Slow lane"})
    assert assignments(hub)[-1] == {
        "NetworkName": NET,
        "GroupsAssignments": [
            {"GroupName": "Fast", "Evses": [E1]},
            {"GroupName": "Slow lane", "Evses": [E2]},
        ],
    }
    # A move in a draft network: the whole assignment again, the hub overwrites.
    await ok(
        api.patch(
            f"/networks/{NET}",
            json={
                "groups": [{"name": "Fast", "evses": []}, {"name": "Slow lane", "evses": [E1, E2]}]
            },
        )
    )
    await eventually(lambda: hub_groups(hub) == {E1: "Slow lane", E2: "Slow lane"})
    assert assignments(hub)[-1]["GroupsAssignments"] == [
        {"GroupName": "Slow lane", "Evses": [E1, E2]}
    ]
    read = await ok(api.get(f"/networks/{NET}"))
    assert {a["evse_id"]: (a["group"], a["hub_group"], a["state"])
            for a in read["assignments"]} == {
        E1: ("Slow lane", "Slow lane", "acknowledged"),
        E2: ("Slow lane", "Slow lane", "acknowledged")}  # fmt: skip
    assert read["unassigned"] == [] and read["assignments"][0]["hub_acknowledged_at"]
    sent = len(assignments(hub))
    await ok(api.put(f"/networks/{NET}", json=read))  # as read: unchanged
    assert len(assignments(hub)) == sent
    # Out of the network here: the service cannot unassign it, the API says so.
    read = await ok(api.patch(f"/networks/{NET}", json={"groups": [
        {"name": "Slow lane", "evses": [E2]}]}))  # fmt: skip
    assert {a["evse_id"]: a["state"] for a in read["assignments"]} == {
        E1: "hub_only", E2: "acknowledged"}  # fmt: skip
    await ok(api.post("/commands/networks/push"))
    assert len(assignments(hub)) == sent  # nothing due
    assert hub.max_in_flight == 1  # one lane: never two requests at once


async def test_assignment_held_until_the_hub_knows_the_evse(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    await known_at_hub(bridge, hub, E1, E2)
    await ok(api.post("/networks", json=network(Fast=[E1, E3])))
    await eventually(lambda: hub_groups(hub) == {E1: "Fast"})
    read = await ok(api.get(f"/networks/{NET}"))
    states = {a["evse_id"]: a["state"] for a in read["assignments"]}
    assert states == {E1: "acknowledged", E3: "held"}
    assert E3 not in json.dumps(assignments(hub))  # never sent for an EVSE the hub lacks
    async with charger(bridge.ocpp.port, "CP201", "2.0.1") as cp:
        await cp.boot()
        await cp.status(1, "Available", evse=1)
        await eventually(lambda: hub_groups(hub) == {E1: "Fast", E3: "Fast"})
    assert assignments(hub)[-1]["GroupsAssignments"] == [{"GroupName": "Fast", "Evses": [E1, E3]}]


async def test_active_network_refuses_moves_and_sends_only_new_evses(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator
) -> None:
    await known_at_hub(bridge, hub, E1, E2)
    body = {**network(Fast=[E1]), "station_ids": ["CP16"]}
    await ok(api.post("/networks", json=body))
    await eventually(lambda: hub_groups(hub) == {E1: "Fast"})
    # Activation while E2 is in no group: the hub would price it at zero.
    message = await refused(api.patch(f"/networks/{NET}", json={"state": "active"}))
    assert "state" in message and E2 in message and "zero" in message and "force" in message
    assert bridge.catalog.networks[NET].body.state.value == "draft"  # nothing applied
    await ok(api.patch(f"/networks/{NET}", json={"state": "active", "force": True}))
    hub.networks.set_state("DE*ABC", NET, "active")
    # Moving an EVSE the hub assigned in an active network: refused, the reason given.
    moved = [{"name": "Fast", "evses": []}, {"name": "Slow", "evses": [E1, E2]}]
    message = await refused(api.patch(f"/networks/{NET}", json={"groups": moved}))
    assert "groups[1].evses[0]" in message and "active" in message and "Fast" in message
    message = await refused(api.patch(f"/networks/{NET}", json={"groups": []}))
    assert "remove" in message
    sent = len(assignments(hub))
    await ok(
        api.patch(
            f"/networks/{NET}",
            json={"groups": [{"name": "Fast", "evses": [E1]}, {"name": "Slow", "evses": [E2]}]},
        )
    )
    await eventually(lambda: hub_groups(hub) == {E1: "Fast", E2: "Slow"})
    assert len(assignments(hub)) == sent + 1
    # Active: only the EVSE the hub has not assigned yet.
    assert assignments(hub)[-1]["GroupsAssignments"] == [{"GroupName": "Slow", "Evses": [E2]}]


async def test_bad_input_names_the_field_and_applies_nothing(
    api: httpx.AsyncClient, bridge: Bridge
) -> None:
    await ok(api.post("/networks", json=network(Fast=[E1])))
    for body, words in [
        (network(Fast=["DE*ABC*E999*9"]), ["groups[0].evses[0]", "unknown EVSE"]),
        (network(Fast=["DE*XYZ*E1*1"]), ["groups[0].evses[0]", "prefix"]),
        (network(Fast=[E1], Slow=[E2, E1]), ["groups[1].evses[1]", "at most one group"]),
        (network(Fast=[E1, E1]), ["groups[0].evses[1]", "named twice"]),
        (network(A_name_of_thirty_one_characters=[E1]), ["groups[0].name", "30"]),
        ({"id": NET, "groups": [{"name": "G", "evses": [E1]}, {"name": "G", "evses": [E2]}]},
         ["groups[1].name", "twice"]),
        ({**network(Fast=[E1]), "station_ids": ["CP-NONE"]}, ["station_ids[0]", "CP-NONE"]),
        ({**network(Fast=[E1]), "state": "live"}, ["state"]),
        ({**network(Fast=[E1]), "colour": "red"}, ["colour", "unknown field"]),
    ]:  # fmt: skip
        message = await refused(api.put(f"/networks/{NET}", json=body))
        assert all(w in message for w in words), (words, message)
    read = await ok(api.get(f"/networks/{NET}"))
    assert read["groups"] == [{"name": "Fast", "evses": [E1]}]
    assert bridge.catalog.networks[NET].version == 1
    # A read-only token reads, and may not write.
    r = await api.get("/networks", headers=READ_AUTH)
    assert r.json()["data"][0]["id"] == NET and r.headers["X-Total-Count"] == "1"
    r = await api.post("/networks", json=network(), headers=READ_AUTH)
    assert r.status_code == 403


async def test_price_zero_guard_in_api_metric_check_config_and_start(
    *,
    api: httpx.AsyncClient,
    bridge: Bridge,
    make_bridge: Callable[..., Awaitable[Bridge]],
    tmp_path: Path,
    hub: HubSimulator,
    events: Any,
) -> None:
    await ok(api.post("/networks", json={**network(Fast=[E1]), "station_ids": ["CP16"]}))
    read = await ok(api.get(f"/networks/{NET}"))
    assert read["unassigned"] == [E2]
    assert {a["evse_id"]: a["state"] for a in read["assignments"]}[E2] == "unassigned"
    assert bridge.ops_server is not None
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{bridge.ops_server.port}/metrics")).text
    assert f'bridge_network_evses_without_group{{network="{NET}"}} 1.0' in text
    await bridge.stop()
    check = check_settings(settings_for(tmp_path, hub.base_url))
    assert any(f"networks.{NET}" in w and E2 in w and "zero" in w for w in check.warnings)
    restarted = await make_bridge()
    warned = events.named("network.evses_without_group")
    assert warned and warned[-1]["network"] == NET and warned[-1]["evses"] == [E2]
    await restarted.stop()


async def test_retries_and_ambiguous_outcomes_go_through_the_one_lane(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator
) -> None:
    bridge = await make_bridge(delivery={"settle_time": 0.3})
    assert bridge.ops_server is not None
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{bridge.ops_server.port}/api/v2",
                            headers=AUTH, timeout=10)  # fmt: skip
    await known_at_hub(bridge, hub, E1, E2)
    hub.faults.fail_http(503, count=2, action="network")
    await ok(api.post("/networks", json=network(Fast=[E1])))
    await eventually(lambda: hub_groups(hub) == {E1: "Fast"})
    tries = [p for p in hub.received if p.endpoint == "network"]
    assert [p.http_status for p in tries] == [503, 503, 200]
    # Applied, but the answer is lost: the bridge cannot know, waits, and sends it again.
    hub.faults.drop(count=1, apply=True, action="network")
    await ok(api.patch(f"/networks/{NET}", json={"groups": [{"name": "Fast", "evses": [E1, E2]}]}))
    await eventually(lambda: [p.http_status for p in hub.received if p.endpoint == "network"][-2:]
                     == [None, 200], within=10)  # fmt: skip
    assert hub_groups(hub) == {E1: "Fast", E2: "Fast"} and hub.max_in_flight == 1
    # Refused as it is (a code that is not retryable): not sent again until it changes.
    hub.faults.answer_code("018", count=1, action="network")
    await ok(
        api.patch(
            f"/networks/{NET}",
            json={"groups": [{"name": "Fast", "evses": [E1]}, {"name": "Slow", "evses": [E2]}]},
        )
    )
    await eventually(lambda: hub.received[-1].code == "018")
    read = await ok(api.get(f"/networks/{NET}"))
    assert "code 018" in read["last_error"] and hub_groups(hub)[E2] == "Fast"
    count = len(hub.received)
    preview = await ok(api.post("/commands/networks/push", params={"dry_run": "true"}))
    assert preview["networks"][0]["body"]["GroupsAssignments"][-1]["Evses"] == [E2]
    await ok(api.get(f"/networks/{NET}"))
    assert len(hub.received) == count  # held: sent again once it changes or is pushed
    await api.aclose()


@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql"])
async def test_acknowledged_assignments_survive_a_restart(
    backend_name: str,
    make_bridge: Callable[..., Awaitable[Bridge]],
    hub: HubSimulator,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    state: dict[str, Any] = {"database": tmp_path / "state.db"}
    if backend_name == "postgresql":
        from tests.conftest import pg_database

        context = pg_database()
        state["url"] = context.__enter__()
        request.addfinalizer(lambda: context.__exit__(None, None, None))
    bridge = await make_bridge(state=state)
    await known_at_hub(bridge, hub, E1, E2)
    assert bridge.ops_server is not None
    base = f"http://127.0.0.1:{bridge.ops_server.port}/api/v2"
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=10) as api:
        await ok(api.post("/networks", json=network(Fast=[E1, E2])))
    await eventually(lambda: hub_groups(hub) == {E1: "Fast", E2: "Fast"})
    await eventually(lambda: bool(bridge.networks.acked.get(NET)))
    await bridge.stop()
    sent = len(assignments(hub))
    again = await make_bridge(state=state)
    assert again.networks.hub_assigned(NET) == {E1: "Fast", E2: "Fast"}
    assert again.catalog.networks[NET].body.groups[0].evses == [E1, E2]
    await eventually(lambda: again.worker is not None and again.worker.idle)
    assert len(assignments(hub)) == sent  # nothing sent twice
    await again.stop()


async def test_cli_networks_push_through_the_running_bridge(
    api: httpx.AsyncClient, bridge: Bridge, hub: HubSimulator, tmp_path: Path
) -> None:
    await known_at_hub(bridge, hub, E1, E2)
    hub.faults.answer_code("022", count=1, action="network")
    await ok(api.post("/networks", json=network(Fast=[E1])))
    await eventually(lambda: any(p.endpoint == "network" for p in hub.received))
    assert hub_groups(hub) == {}  # refused once: held until it changes or is pushed
    config = tmp_path / "bridge.yaml"
    config.write_text(yaml.safe_dump({
        "oicp": {"base_url": hub.base_url, "operator_id": "DE*ABC"},
        "state": {"database": str(bridge.settings.state.database)},
    }))  # fmt: skip
    env = {**os.environ, "BRIDGE_API_TOKEN": WRITE_TOKEN}
    cli = [sys.executable, "-m", "bridge", "networks", "push", "--config", str(config)]

    async def run(*args: str) -> tuple[int, str, str]:
        # Not subprocess.run: the bridge answering the command runs in this event loop.
        proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=PIPE, stderr=PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 90)
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = await run(*cli, "--dry-run")
    assert code == 0, err
    assert json.loads(out) == [
        {"NetworkName": NET, "GroupsAssignments": [{"GroupName": "Fast", "Evses": [E1]}]}
    ]
    assert hub_groups(hub) == {}
    code, out, err = await run(*cli)
    assert code == 0, err
    assert f"{NET}: acknowledged" in out
    assert hub_groups(hub) == {E1: "Fast"}


# -- the simulator's rules, over HTTP -------------------------------------------------------------
async def test_hub_simulator_validates_assignments(hub: HubSimulator) -> None:
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=5) as client:
        for evse_id in (E1, E2):
            await client.post("/api/oicp/evsepush/v21/operators/DE*ABC/status-records", json={
                "ActionType": "insert", "OperatorEvseStatus": {"OperatorID": "DE*ABC",
                "EvseStatusRecord": [{"EvseID": evse_id, "EvseStatus": "Available"}]}})  # fmt: skip

        async def send(groups: list[tuple[str, list[str]]], name: str = NET) -> httpx.Response:
            return await client.post(NETWORK_PATH, json={"NetworkName": name, "GroupsAssignments": [
                {"GroupName": g, "Evses": e} for g, e in groups]})  # fmt: skip

        def code(r: httpx.Response) -> str:
            return str(r.json()["StatusCode"]["Code"])

        for groups, expected, words in [
            ([("G" * 31, [E1])], "022", "30"),
            ([("A", [E1]), ("A", [E2])], "022", "twice"),
            ([("A", [E1]), ("B", [E1])], "022", "more than once"),
            ([("A", ["DE*ABC*E77*1"])], "022", "unknown"),
            ([("A", ["DE*XYZ*E1*1"])], "018", "DE*XYZ"),
        ]:  # fmt: skip
            r = await send(groups)
            assert code(r) == expected and words in r.json()["StatusCode"]["AdditionalInfo"]
        assert hub.networks.networks.get("DE*ABC", {}).get(NET, {}).get("groups", {}) == {}
        bad = await client.post(NETWORK_PATH, json={"NetworkName": NET, "GroupsAssignments": {}})
        assert bad.status_code == 400 and bad.json()["validationErrors"]
        echo = {"NetworkName": NET, "GroupsAssignments": [{"GroupName": "A", "Evses": [E1]}]}
        r = await client.post(NETWORK_PATH, json=echo)
        assert r.status_code == 200 and r.json() == echo  # the documented echo
        assert (await send([("B", [E1])])).json() == {
            "NetworkName": NET,
            "GroupsAssignments": [{"GroupName": "B", "Evses": [E1]}],
        }
        state = await client.post("/sim/networks/state", json={
            "operator_id": "DE*ABC", "network": NET, "state": "active"})  # fmt: skip
        assert state.json()["DE*ABC"][NET]["state"] == "active"
        r = await send([("A", [E1])])
        assert code(r) == "022" and "active" in r.json()["StatusCode"]["AdditionalInfo"]
        r = await send([("B", [E1]), ("A", [E2])])  # the same group again, and a new EVSE
        assert r.status_code == 200 and "StatusCode" not in r.json()
        listed = (await client.get("/sim/networks")).json()
        assert listed["DE*ABC"][NET]["groups"] == {E1: "B", E2: "A"}
        plural = await client.post(NETWORK_PATH + "s", json=echo | {"NetworkName": "Other"})
        assert plural.status_code == 200


async def test_networks_in_catalog_files(
    api: httpx.AsyncClient, bridge: Bridge, tmp_path: Path
) -> None:
    from io import StringIO

    from bridge.ops import catalog_io

    await ok(api.post("/networks", json=network(Fast=[E1])))
    await bridge.stop()
    out = StringIO()
    assert await asyncio.to_thread(catalog_io.export, bridge.settings, out) == 0
    document = json.loads(out.getvalue())
    assert document["networks"] == [{"id": NET, "state": "draft", "station_ids": [], "evses": [],
                                     "groups": [{"name": "Fast", "evses": [E1]}],
                                     "last_updated": document["networks"][0]["last_updated"],
                                     "source": "api"}]  # fmt: skip
    path = tmp_path / "catalog.json"
    document["networks"][0]["groups"] = [{"name": "Fast", "evses": [E1]},
                                         {"name": "Slow", "evses": [E1, E2]}]  # fmt: skip
    path.write_text(json.dumps(document))
    err = StringIO()
    code = await asyncio.to_thread(catalog_io.import_file, bridge.settings, path, dry_run=False,
                                   out=StringIO(), err=err)  # fmt: skip
    assert code == 2 and "networks[0]" in err.getvalue() and "groups[1].evses[0]" in err.getvalue()
    document["networks"][0]["groups"] = [{"name": "Fast", "evses": [E2]},
                                         {"name": "Slow", "evses": [E1]}]  # fmt: skip
    path.write_text(json.dumps(document))
    shown = StringIO()
    code = await asyncio.to_thread(catalog_io.import_file, bridge.settings, path, dry_run=False,
                                   out=shown)  # fmt: skip
    assert code == 0 and f"change network {NET}: groups" in shown.getvalue()
    check = Bridge(bridge.settings)
    check.load_state()
    assert [g.evses for g in check.catalog.networks[NET].body.groups] == [[E2], [E1]]
    check.store.close_unwritten()
