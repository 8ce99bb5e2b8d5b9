"""The hub simulator: OICP ActionType semantics, fault injection, control endpoints."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from bridge.hubsim import HubSimulator, run_hub_sim
from bridge.oicp.models import ActionType, build_status_request
from bridge.status.table import OicpStatus
from tests.oicp_schema import evse_data_record, validate_push_body

OP = "DE*ABC"
A, OCC, R = OicpStatus.AVAILABLE, OicpStatus.OCCUPIED, OicpStatus.RESERVED
STATUS_PATH = "/api/oicp/evsepush/v21/operators/DE*ABC/status-records"
DATA_PATH = "/api/oicp/evsepush/v23/operators/DE*ABC/data-records"


@pytest.fixture
async def sim() -> AsyncIterator[HubSimulator]:
    async with HubSimulator(body_validator=validate_push_body) as simulator:
        yield simulator


@pytest.fixture
async def http(sim: HubSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=5) as client:
        yield client


async def push(
    http: httpx.AsyncClient,
    action: ActionType,
    records: Sequence[tuple[str, OicpStatus]],
    *,
    operator: str = OP,
    path: str = STATUS_PATH,
) -> httpx.Response:
    body = build_status_request(action, operator, "ABC", records).model_dump(mode="json")
    return await http.post(path, json=body)


def code_of(response: httpx.Response) -> str:
    code: str = response.json()["StatusCode"]["Code"]
    return code


async def test_success_answer_is_hubject_acknowledgment(
    sim: HubSimulator, http: httpx.AsyncClient
) -> None:
    response = await push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A)])
    assert response.status_code == 200
    assert response.json() == {
        "Result": True,
        "StatusCode": {"Code": "000", "Description": "Success.", "AdditionalInfo": None},
        "SessionID": None,
        "CPOPartnerSessionID": None,
        "EMPPartnerSessionID": None,
    }
    [received] = sim.received
    assert (received.endpoint, received.operator_id, received.action) == ("status", OP, "fullLoad")
    assert received.records == (("DE*ABC*E1", "Available"),)
    assert (received.http_status, received.code) == (200, "000")
    assert sim.schema_errors == []


async def test_full_load_replaces_the_whole_set(sim: HubSimulator, http: httpx.AsyncClient) -> None:
    await push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A), ("DE*ABC*E2", OCC)])
    assert sim.state == {"DE*ABC*E1": "Available", "DE*ABC*E2": "Occupied"}
    response = await push(http, ActionType.FULL_LOAD, [("DE*ABC*E3", R)])
    assert code_of(response) == "000"
    assert sim.state == {"DE*ABC*E3": "Reserved"}
    await push(http, ActionType.FULL_LOAD, [])  # an empty fullLoad deletes everything
    assert sim.state == {}


async def test_insert_existing_aborts_everything(
    sim: HubSimulator, http: httpx.AsyncClient
) -> None:
    await push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A)])
    response = await push(http, ActionType.INSERT, [("DE*ABC*E2", OCC), ("DE*ABC*E1", OCC)])
    assert response.status_code == 200
    assert response.json()["Result"] is False
    assert code_of(response) == "022"
    assert "DE*ABC*E1" in response.json()["StatusCode"]["AdditionalInfo"]
    assert sim.state == {"DE*ABC*E1": "Available"}  # E2 was not inserted either
    assert code_of(await push(http, ActionType.INSERT, [("DE*ABC*E2", OCC)])) == "000"
    assert sim.state == {"DE*ABC*E1": "Available", "DE*ABC*E2": "Occupied"}


async def test_update_missing_is_022_and_update_existing_applies(
    sim: HubSimulator, http: httpx.AsyncClient
) -> None:
    response = await push(http, ActionType.UPDATE, [("DE*ABC*E9", A)])
    assert (response.json()["Result"], code_of(response)) == (False, "022")
    assert "DE*ABC*E9" in response.json()["StatusCode"]["AdditionalInfo"]
    await push(http, ActionType.INSERT, [("DE*ABC*E9", A)])
    assert code_of(await push(http, ActionType.UPDATE, [("DE*ABC*E9", OCC)])) == "000"
    assert sim.state == {"DE*ABC*E9": "Occupied"}
    # forget simulates a hub that lost the record: the next update is refused
    assert sim.faults.forget("DE*ABC*E9") is True
    assert code_of(await push(http, ActionType.UPDATE, [("DE*ABC*E9", A)])) == "022"


async def test_delete(sim: HubSimulator, http: httpx.AsyncClient) -> None:
    await push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A), ("DE*ABC*E2", OCC)])
    assert code_of(await push(http, ActionType.DELETE, [("DE*ABC*E1", A)])) == "000"
    assert sim.state == {"DE*ABC*E2": "Occupied"}


async def test_operator_consistency_is_018(sim: HubSimulator, http: httpx.AsyncClient) -> None:
    response = await push(http, ActionType.FULL_LOAD, [("DE*XYZ*E1", A)])
    assert (response.status_code, code_of(response)) == (200, "018")
    assert "DE*XYZ*E1" in response.json()["StatusCode"]["AdditionalInfo"]
    # prefix comparison ignores '*' and case
    assert code_of(await push(http, ActionType.FULL_LOAD, [("deabcE1", A)])) == "000"
    # body OperatorID must match the URL
    other = "/api/oicp/evsepush/v21/operators/DE*XYZ/status-records"
    response = await push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A)], path=other)
    assert code_of(response) == "018"
    assert sim.state == {"deabcE1": "Available"}


async def test_invalid_bodies_get_400_fault_body(
    sim: HubSimulator, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        STATUS_PATH, content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"message", "validationErrors"}

    body = build_status_request(ActionType.UPDATE, OP, None, [("DE*ABC*E1", A)]).model_dump(
        mode="json"
    )
    body["OperatorEvseStatus"]["EvseStatusRecord"][0]["EvseStatus"] = "Charging"
    response = await http.post(STATUS_PATH, json=body)
    assert response.status_code == 400
    assert len(sim.schema_errors) == 1 and "Charging" in sim.schema_errors[0]

    sim.body_validator = None  # then pydantic's validation answers
    response = await http.post(STATUS_PATH, json=body)
    assert response.status_code == 400
    refs = [e["fieldReference"] for e in response.json()["validationErrors"]]
    assert refs == ["OperatorEvseStatus.EvseStatusRecord.0.EvseStatus"]

    response = await http.post(STATUS_PATH, content=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert [p.http_status for p in sim.received] == [400, 400, 400, 415]


async def test_data_endpoint_semantics(sim: HubSimulator, http: httpx.AsyncClient) -> None:
    def body(action: str, *ids: str) -> dict[str, Any]:
        return {
            "ActionType": action,
            "OperatorEvseData": {
                "OperatorID": OP,
                "OperatorName": "ABC",
                "EvseDataRecord": [evse_data_record(i) for i in ids],
            },
        }

    assert code_of(await http.post(DATA_PATH, json=body("fullLoad", "DE*ABC*E1"))) == "000"
    assert code_of(await http.post(DATA_PATH, json=body("insert", "DE*ABC*E1"))) == "022"
    assert code_of(await http.post(DATA_PATH, json=body("insert", "DE*ABC*E2"))) == "000"
    assert set(sim.data_state) == {"DE*ABC*E1", "DE*ABC*E2"}
    assert sim.state == {}  # status and data sets are separate
    assert sim.received[-1].records == (("DE*ABC*E2", None),)
    assert sim.schema_errors == []


async def test_faults_in_process(sim: HubSimulator, http: httpx.AsyncClient) -> None:
    sim.faults.fail_http(503, count=2, retry_after=7)
    first = await push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A)])
    assert (first.status_code, first.headers["Retry-After"]) == (503, "7")
    assert (await push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A)])).status_code == 503
    assert sim.state == {}  # a faulted push applies nothing
    assert code_of(await push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A)])) == "000"

    sim.faults.answer_code("001", count=1)
    response = await push(http, ActionType.UPDATE, [("DE*ABC*E1", OCC)])
    assert (response.status_code, response.json()["Result"], code_of(response)) == (
        200,
        False,
        "001",
    )
    sim.faults.answer_code("017")  # until cleared; Hubject answers 017 with HTTP 401
    for _ in range(2):
        response = await push(http, ActionType.UPDATE, [("DE*ABC*E1", OCC)])
        assert (response.status_code, code_of(response)) == (401, "017")
    sim.faults.clear()
    assert code_of(await push(http, ActionType.UPDATE, [("DE*ABC*E1", OCC)])) == "000"
    assert [(p.http_status, p.code) for p in sim.received] == [
        (503, None),
        (503, None),
        (200, "000"),
        (200, "001"),
        (401, "017"),
        (401, "017"),
        (200, "000"),
    ]


async def test_hang_delays_the_answer(sim: HubSimulator, http: httpx.AsyncClient) -> None:
    sim.faults.hang(0.3, count=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert code_of(await push(http, ActionType.FULL_LOAD, [])) == "000"
    assert loop.time() - started >= 0.3
    started = loop.time()
    await push(http, ActionType.FULL_LOAD, [])
    assert loop.time() - started < 0.3


async def test_a_round_trip_hang_counts_the_simulators_own_time(
    sim: HubSimulator, http: httpx.AsyncClient
) -> None:
    sim.latency = 0.3  # the simulator's own work before the fault, as it were
    sim.faults.hang(0.3, round_trip=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert code_of(await push(http, ActionType.FULL_LOAD, [])) == "000"
    round_trip = loop.time() - started
    sim.faults.hang(0.3)  # a plain hang sleeps after that work
    started = loop.time()
    assert code_of(await push(http, ActionType.FULL_LOAD, [])) == "000"
    assert 0.3 <= round_trip < 0.55 <= loop.time() - started
    assert sim.faults.describe()["hang"] == {"count": None, "seconds": 0.3}
    await http.post("/sim/faults", json={"fault": "hang", "seconds": 0.1, "round_trip": True})
    assert sim.faults.describe()["hang"]["round_trip"] is True


async def test_control_endpoints_over_http(sim: HubSimulator, http: httpx.AsyncClient) -> None:
    await push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A), ("DE*ABC*E2", OCC)])

    state = (await http.get("/sim/state")).json()
    assert state["status"] == {"DE*ABC*E1": "Available", "DE*ABC*E2": "Occupied"}
    assert state["status_by_operator"] == {OP: state["status"]}

    response = await http.post(
        "/sim/faults", json={"fault": "fail_http", "status": 429, "count": 1, "retry_after": 3}
    )
    assert response.status_code == 200
    assert (await http.get("/sim/faults")).json()["fail_http"]["status"] == 429
    limited = await push(http, ActionType.UPDATE, [("DE*ABC*E1", OCC)])
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")

    await http.post("/sim/faults", json={"fault": "answer_code", "code": "022"})
    assert code_of(await push(http, ActionType.UPDATE, [("DE*ABC*E1", OCC)])) == "022"
    assert (await http.post("/sim/clear")).status_code == 200
    assert code_of(await push(http, ActionType.UPDATE, [("DE*ABC*E1", OCC)])) == "000"

    assert (await http.post("/sim/forget", json={"evse_id": "DE*ABC*E2"})).json() == {
        "forgotten": True
    }
    assert code_of(await push(http, ActionType.UPDATE, [("DE*ABC*E2", A)])) == "022"

    bad = await http.post("/sim/faults", json={"fault": "explode"})
    assert bad.status_code == 400 and "explode" in bad.json()["error"]
    bad = await http.post("/sim/faults", json={"fault": "hang", "secs": 1})
    assert bad.status_code == 400

    received = (await http.get("/sim/received")).json()
    assert [(r["action"], r["http_status"], r["code"]) for r in received] == [
        ("fullLoad", 200, "000"),
        ("update", 429, None),
        ("update", 200, "022"),
        ("update", 200, "000"),
        ("update", 200, "022"),
    ]
    assert received[0]["records"] == [["DE*ABC*E1", "Available"], ["DE*ABC*E2", "Occupied"]]
    assert received[0]["body"]["OperatorEvseStatus"]["OperatorID"] == OP

    stats = (await http.get("/sim/stats")).json()
    assert stats["max_in_flight"] == 1
    assert stats["requests"] == 5
    assert stats["by_http_status"] == {"200": 4, "429": 1}
    assert stats["schema_errors"] == []

    assert (await http.post("/sim/reset")).status_code == 200
    assert (await http.get("/sim/state")).json()["status"] == {}
    assert (await http.get("/sim/received")).json() == []


async def test_max_in_flight_detects_concurrent_pushes(
    sim: HubSimulator, http: httpx.AsyncClient
) -> None:
    sim.latency = 0.2
    await push(http, ActionType.FULL_LOAD, [])
    await push(http, ActionType.FULL_LOAD, [])
    assert sim.max_in_flight == 1  # sequential pushes
    await asyncio.gather(
        push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A)]),
        push(http, ActionType.FULL_LOAD, [("DE*ABC*E2", A)]),
    )
    assert sim.max_in_flight == 2
    assert (await http.get("/sim/stats")).json()["max_in_flight"] == 2


async def test_client_gone_during_hang_is_recorded_and_not_in_flight(
    sim: HubSimulator, http: httpx.AsyncClient
) -> None:
    sim.faults.hang(5, count=1)
    with pytest.raises(httpx.ReadTimeout):
        await http.post(
            STATUS_PATH,
            json=build_status_request(ActionType.FULL_LOAD, OP, None, []).model_dump(mode="json"),
            timeout=0.2,
        )
    for _ in range(50):  # the server notices the disconnect asynchronously
        if sim.received:
            break
        await asyncio.sleep(0.02)
    [gone] = sim.received
    assert (gone.http_status, gone.code, sim.in_flight) == (None, None, 0)


async def test_run_hub_sim_serves_and_logs_each_push() -> None:
    ready: asyncio.Queue[int] = asyncio.Queue()
    with capture_logs() as logs:
        task = asyncio.create_task(run_hub_sim("127.0.0.1", 0, None, ready=ready.put_nowait))
        try:
            port = await asyncio.wait_for(ready.get(), 5)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                response = await push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A)])
                assert code_of(response) == "000"
                assert (await http.get("/sim/state")).json()["status"] == {"DE*ABC*E1": "Available"}
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    [line] = [entry for entry in logs if entry["event"] == "hubsim.push"]
    assert (line["action"], line["records"], line["code"]) == ("fullLoad", 1, "000")


async def test_late_applies_after_the_client_gave_up_and_stays_in_flight(
    sim: HubSimulator, http: httpx.AsyncClient
) -> None:
    sim.faults.late(0.4, count=1)
    with pytest.raises(httpx.ReadTimeout):
        await http.post(
            STATUS_PATH,
            json=build_status_request(ActionType.INSERT, OP, None, [("DE*ABC*E1", A)]).model_dump(
                mode="json"
            ),
            timeout=0.1,
        )
    await asyncio.sleep(0.1)
    assert sim.state == {} and sim.in_flight == 1  # the hub is still working on it
    for _ in range(50):
        if sim.received:
            break
        await asyncio.sleep(0.02)
    assert sim.state == {"DE*ABC*E1": "Available"} and sim.in_flight == 0
    [late] = sim.received
    assert (late.http_status, late.code) == (None, "000")  # applied, never answered
    # A request sent while the late one is still being processed counts as a second one.
    sim.faults.late(0.3, count=1)
    slow = asyncio.create_task(push(http, ActionType.UPDATE, [("DE*ABC*E1", OCC)]))
    await asyncio.sleep(0.05)
    await push(http, ActionType.UPDATE, [("DE*ABC*E1", R)])
    assert code_of(await slow) == "000"  # a client that waits long enough gets the answer
    assert sim.max_in_flight == 2
    assert sim.state == {"DE*ABC*E1": "Occupied"}  # the older request landed last


@pytest.mark.parametrize("apply", [True, False])
async def test_drop_closes_without_an_answer(
    sim: HubSimulator, http: httpx.AsyncClient, apply: bool
) -> None:
    sim.faults.apply({"fault": "drop", "count": 1, "apply": apply})
    with pytest.raises(httpx.RemoteProtocolError):
        await push(http, ActionType.INSERT, [("DE*ABC*E1", A)])
    assert sim.state == ({"DE*ABC*E1": "Available"} if apply else {})
    [dropped] = sim.received
    assert (dropped.http_status, dropped.code) == (None, "000" if apply else None)
    assert sim.in_flight == 0
    assert code_of(await push(http, ActionType.FULL_LOAD, [])) == "000"  # next one answered


async def test_faults_limited_to_an_action_or_an_evse(
    sim: HubSimulator, http: httpx.AsyncClient
) -> None:
    sim.faults.answer_code("009", action="fullLoad")
    sim.faults.fail_http(503, evse_id="DE*ABC*E2")
    assert code_of(await push(http, ActionType.INSERT, [("DE*ABC*E1", A)])) == "000"
    assert (await push(http, ActionType.INSERT, [("DE*ABC*E2", A)])).status_code == 503
    assert code_of(await push(http, ActionType.FULL_LOAD, [("DE*ABC*E1", A)])) == "009"
    assert sim.faults.describe() == {
        "answer_code": {"count": None, "code": "009", "action": "fullLoad"},
        "fail_http": {"count": None, "status": 503, "evse_id": "DE*ABC*E2"},
    }
    assert sim.state == {"DE*ABC*E1": "Available"}
