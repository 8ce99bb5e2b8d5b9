"""Chargers (the ocpp package's client side) → bridge → hub simulator, over real sockets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import trustme
from ocpp.v16 import call as call16

from bridge.app import Bridge
from bridge.hubsim import HubSimulator, server_ssl_context
from tests.conftest import Events, charger, eventually, now_z, pushes
from tests.oicp_schema import validate_push_body


async def test_ocpp16_charger_status_changes_reach_hub_in_order(
    bridge: Bridge, hub: HubSimulator
) -> None:
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        boot = await cp.boot()
        assert boot.status == "Accepted" and boot.interval == 60
        assert boot.current_time.endswith("Z")
        heartbeat = await cp.cp.call(call16.Heartbeat())
        assert heartbeat.current_time.endswith("Z")
        for status in ("Available", "Preparing", "Charging", "SuspendedEV", "Finishing"):
            await cp.status(1, status)
            await eventually(lambda: not bridge.outbox)
        await cp.status(1, "Available")
        await eventually(
            lambda: hub.state.get("DE*ABC*E16*1") == "Available" and len(pushes(hub)) == 3
        )
    # Preparing → Charging → SuspendedEV → Finishing is one Occupied: exactly 3 pushes.
    assert pushes(hub) == [
        ("insert", "DE*ABC*E16*1", "Available"),
        ("update", "DE*ABC*E16*1", "Occupied"),
        ("update", "DE*ABC*E16*1", "Available"),
    ]
    assert hub.max_in_flight == 1
    body = hub.received[0].body
    assert body == {
        "ActionType": "insert",
        "OperatorEvseStatus": {
            "OperatorID": "DE*ABC",
            "OperatorName": "ABC Charging",
            "EvseStatusRecord": [{"EvseID": "DE*ABC*E16*1", "EvseStatus": "Available"}],
        },
    }


async def test_ocpp201_status_and_notify_event(bridge: Bridge, hub: HubSimulator) -> None:
    from ocpp.v201 import call as call201

    async with charger(bridge.ocpp.port, "CP201", "2.0.1") as cp:
        boot = await cp.boot()
        assert boot.status == "Accepted" and boot.current_time.endswith("Z")
        await cp.status(1, "Available", evse=1)
        await cp.status(1, "Occupied", evse=2)
        await eventually(lambda: len(pushes(hub)) == 2)
        # NotifyEvent AvailabilityState of a Connector is a status report too (a newer one:
        # an older one would change nothing).
        await cp.cp.call(
            call201.NotifyEvent(
                generated_at=now_z(),
                seq_no=0,
                event_data=[
                    {
                        "event_id": 1,
                        "timestamp": now_z(),
                        "trigger": "Delta",
                        "actual_value": "Reserved",
                        "event_notification_type": "HardWiredNotification",
                        "component": {"name": "Connector", "evse": {"id": 1, "connector_id": 1}},
                        "variable": {"name": "AvailabilityState"},
                    }
                ],
            )
        )
        await eventually(lambda: len(pushes(hub)) == 3)
    assert pushes(hub) == [
        ("insert", "DE*ABC*E201*1", "Available"),
        ("insert", "DE*ABC*E201*2", "Occupied"),
        ("update", "DE*ABC*E201*1", "Reserved"),
    ]
    assert hub.state == {"DE*ABC*E201*1": "Reserved", "DE*ABC*E201*2": "Occupied"}


async def test_connector_zero_takes_every_evse_down_and_back(
    bridge: Bridge, hub: HubSimulator
) -> None:
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await cp.status(2, "Charging")
        await eventually(lambda: len(pushes(hub)) == 2)
        await cp.status(0, "Unavailable")
        await eventually(
            lambda: hub.state == {"DE*ABC*E16*1": "OutOfService", "DE*ABC*E16*2": "OutOfService"}
        )
        await cp.status(0, "Available")
        await eventually(
            lambda: hub.state == {"DE*ABC*E16*1": "Available", "DE*ABC*E16*2": "Occupied"}
        )
    assert len(pushes(hub)) == 6
    assert hub.max_in_flight == 1


async def test_fullload_sends_every_evse_and_switches_to_update(
    bridge: Bridge, hub: HubSimulator
) -> None:
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Charging")
        await eventually(lambda: len(pushes(hub)) == 1)
    assert bridge.worker is not None
    count = await bridge.worker.request_full_load()
    assert count == 4
    full = hub.received[-1]
    assert full.action == "fullLoad"
    assert dict(full.records) == {
        "DE*ABC*E16*1": "Occupied",
        "DE*ABC*E16*2": "Unknown",  # never reported
        "DE*ABC*E201*1": "Unknown",
        "DE*ABC*E201*2": "Unknown",
    }
    async with charger(bridge.ocpp.port, "CP201", "2.0.1") as cp:
        await cp.status(1, "Available", evse=2)
        await eventually(lambda: hub.state.get("DE*ABC*E201*2") == "Available")
    # The fullLoad put it on the hub, so the change is an update, not an insert.
    assert pushes(hub)[-1] == ("update", "DE*ABC*E201*2", "Available")


async def test_state_survives_restart_without_repush(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator
) -> None:
    first = await make_bridge()
    async with charger(first.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await eventually(lambda: len(pushes(hub)) == 1)
    await first.stop()
    second = await make_bridge()
    async with charger(second.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")  # unchanged after restart: nothing to push
        await cp.status(1, "Charging")
        await eventually(lambda: len(pushes(hub)) == 2)
    assert pushes(hub) == [
        ("insert", "DE*ABC*E16*1", "Available"),
        ("update", "DE*ABC*E16*1", "Occupied"),
    ]


async def test_charger_to_hub_over_mutual_tls(
    tmp_path: Path, make_bridge: Callable[..., Awaitable[Bridge]]
) -> None:
    """The whole path with the hub on https requiring our client certificate (trustme PKI)."""
    ca = trustme.CA()
    files = {
        "ca": ca.cert_pem,
        "hub": ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem,
        "client": ca.issue_cert("bridge.example.com").private_key_and_cert_chain_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(tmp_path / f"{name}.pem"))
    context = server_ssl_context(tmp_path / "hub.pem", None, client_ca=tmp_path / "ca.pem")
    async with HubSimulator(ssl_context=context, body_validator=validate_push_body) as tls_hub:
        assert tls_hub.base_url.startswith("https://")
        bridge = await make_bridge(
            oicp={
                "base_url": tls_hub.base_url,
                "client_cert": tmp_path / "client.pem",
                "ca_bundle": tmp_path / "ca.pem",
            }
        )
        async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
            await cp.status(1, "Reserved")
            await eventually(lambda: tls_hub.state == {"DE*ABC*E16*1": "Reserved"})
        assert tls_hub.schema_errors == []


async def test_the_effective_mapping_table_is_logged_at_start(
    make_bridge: Callable[..., Awaitable[Bridge]], events: Events
) -> None:
    await make_bridge(status={"overrides": {"Reserved": "Occupied"}})
    (line,) = events.named("status.table")
    rows = {row["ocpp"]: row for row in line["rows"]}
    assert rows["Reserved"] == {"ocpp": "Reserved", "ocpi": "RESERVED", "oicp": "Occupied",
                                "overridden": True}  # fmt: skip
    assert rows["Charging"]["oicp"] == "Occupied" and not rows["Charging"]["overridden"]
    assert rows["Faulted"]["oicp"] == "OutOfService"
