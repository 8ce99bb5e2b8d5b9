"""Proxy mode against an independent CSMS: whole charging sessions, presence, both modes at once.

The CSMS is ``bridge.devtools.csms_sim``, written the ``ocpp`` package's documented way; the
chargers are the package's client-side ``ChargePoint``; the hub is the simulator. Real sockets.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from bridge.app import Bridge
from bridge.devtools.csms_sim import CsmsSimulator
from bridge.hubsim import HubSimulator
from tests.conftest import READ_AUTH, Events, charger, eventually, pushes
from tests.proxied import proxy_ocpp, session_charger

MakeBridge = Callable[..., Awaitable[Bridge]]


@pytest.fixture
async def csms() -> AsyncIterator[CsmsSimulator]:
    async with CsmsSimulator(heartbeat_interval=77) as sim:
        yield sim


async def test_whole_session_16_through_the_proxy(
    make_bridge: MakeBridge, csms: CsmsSimulator, hub: HubSimulator, events: Events
) -> None:
    bridge = await make_bridge(ocpp=proxy_ocpp(csms.url))
    async with session_charger(bridge.ocpp.port, "CP16") as cp:
        boot = await cp.boot()
        assert boot.status == "Accepted" and boot.interval == 77  # the CSMS's answer, not ours
        await cp.status(1, "Available")
        started = await csms.remote_start("CP16", evse=1, id_tag="TAG-16")
        assert started.status == "Accepted"  # the CSMS's CALL reached the charger and back
        assert cp.remote_starts == [{"id_tag": "TAG-16", "connector_id": 1}]
        await cp.session_16(1, "TAG-16")
        await eventually(lambda: hub.state.get("DE*ABC*E16*1") == "Available"
                         and len(pushes(hub)) == 3)  # fmt: skip
    assert csms.actions("CP16") == [
        "BootNotification", "StatusNotification", "Authorize", "StatusNotification",
        "StartTransaction", "StatusNotification", "MeterValues", "StopTransaction",
        "StatusNotification", "StatusNotification",
    ]  # fmt: skip
    # Preparing → Charging → Finishing is one Occupied: three pushes for six reports.
    assert pushes(hub) == [("insert", "DE*ABC*E16*1", "Available"),
                           ("update", "DE*ABC*E16*1", "Occupied"),
                           ("update", "DE*ABC*E16*1", "Available")]  # fmt: skip
    assert [e["ocpp_status"] for e in events.named("status.received")] == [
        "Available", "Preparing", "Charging", "Finishing", "Available"]  # fmt: skip
    await eventually(lambda: csms.closed == [("CP16", 1000, "")])


async def test_whole_session_201_through_the_proxy(
    make_bridge: MakeBridge, csms: CsmsSimulator, hub: HubSimulator
) -> None:
    bridge = await make_bridge(ocpp=proxy_ocpp(csms.url))
    async with session_charger(bridge.ocpp.port, "CP201", "2.0.1") as cp:
        assert (await cp.boot()).status == "Accepted"
        await cp.status(1, "Available")
        await cp.availability(2, "Reserved")  # NotifyEvent AvailabilityState is tapped too
        started = await csms.remote_start("CP201", evse=1, id_tag="TAG-201")
        assert started.status == "Accepted"
        assert cp.remote_starts[0]["evse_id"] == 1
        assert cp.remote_starts[0]["id_token"] == {"id_token": "TAG-201", "type": "ISO14443"}
        await cp.session_201(1, "TAG-201")
        await eventually(lambda: hub.state == {"DE*ABC*E201*1": "Available",
                                               "DE*ABC*E201*2": "Reserved"}
                         and len(pushes(hub)) == 4)  # fmt: skip
    assert csms.actions("CP201") == [
        "BootNotification", "StatusNotification", "NotifyEvent", "Authorize",
        "TransactionEvent", "StatusNotification", "TransactionEvent", "MeterValues",
        "TransactionEvent", "StatusNotification",
    ]  # fmt: skip
    assert ("update", "DE*ABC*E201*1", "Occupied") in pushes(hub)


async def test_csms_and_proxy_chargers_share_one_bridge(
    make_bridge: MakeBridge, csms: CsmsSimulator, hub: HubSimulator
) -> None:
    """Bridge-wide csms mode; one charger relayed to the CSMS by its own ``mode: proxy``."""
    chargers = {
        "CP16": {"evses": {1: "DE*ABC*E16*1", 2: "DE*ABC*E16*2"}, "mode": "proxy"},
        "CP201": {"evses": {1: "DE*ABC*E201*1", 2: "DE*ABC*E201*2"}},
    }
    bridge = await make_bridge(ocpp=proxy_ocpp(csms.url, mode="csms"), chargers=chargers)
    async with session_charger(bridge.ocpp.port, "CP16") as proxied, \
            charger(bridge.ocpp.port, "CP201", "2.0.1") as direct:  # fmt: skip
        assert (await proxied.boot()).interval == 77  # the CSMS answered
        assert (await direct.boot()).interval == 60  # the bridge answered
        await proxied.status(1, "Charging")
        await direct.status(1, "Faulted")
        await eventually(lambda: hub.state == {"DE*ABC*E16*1": "Occupied",
                                               "DE*ABC*E201*1": "OutOfService"})  # fmt: skip
        assert bridge.ocpp.connected_by_protocol() == {"1.6": 1, "2.0.1": 1}
    assert {m.charge_point_id for m in csms.received} == {"CP16"}


async def test_presence_duplicates_and_offline_cover_proxied_chargers(
    make_bridge: MakeBridge, csms: CsmsSimulator, hub: HubSimulator, events: Events
) -> None:
    bridge = await make_bridge(ocpp={**proxy_ocpp(csms.url), "offline_grace": 0.3})
    port = bridge.ocpp.port
    api = httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{bridge.ops_server.port}",  # type: ignore[union-attr]
        headers=READ_AUTH,
    )
    async with session_charger(port, "CP16") as first:
        await first.status(1, "Available")
        async with session_charger(port, "CP16") as second:
            # The newer connection wins; the old one is closed with 1000, and so is its CSMS link.
            await eventually(lambda: first.ws.close_code == 1000)
            await eventually(lambda: ("CP16", 1000, "replaced by a new connection") in csms.closed)
            assert len(events.named("charger.replaced")) == 1
            await second.status(1, "Charging")
            body = (await api.get("/api/v1/charge-points/CP16")).json()["data"]
            assert body["connected"] is True and body["protocol"] == "1.6"
            assert bridge.ocpp.proxy is not None and bridge.ocpp.proxy.connections == 1
            metrics = (await api.get("/metrics")).text
            assert "bridge_upstream_connections 1.0" in metrics
            assert 'bridge_chargers_connected{protocol="1.6"} 1.0' in metrics
    # Gone for longer than the grace: its EVSEs are pushed as offline_status.
    await eventually(lambda: hub.state.get("DE*ABC*E16*1") == "Unknown")
    assert len(events.named("charger.offline")) == 1
    metrics = (await api.get("/metrics")).text
    await api.aclose()
    assert "bridge_upstream_connections 0.0" in metrics
    assert 'bridge_upstream_handshakes_total{outcome="ok"} 2.0' in metrics
    frames = _samples(metrics, "bridge_upstream_frames_total")
    assert frames['direction="to_csms"'] == 2 and frames['direction="to_charger"'] == 2
    latency = _samples(metrics, "bridge_upstream_added_latency_seconds_count")
    assert latency['direction="to_csms"'] == 2


def _samples(text: str, name: str) -> dict[str, float]:
    out: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].split("} ")
            out[labels] = float(value)
    return out


async def test_csms_sim_command_serves_and_ends_cleanly_on_sigterm() -> None:
    import asyncio
    import json
    import signal
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "csms-sim", "--port", "0",
        "--password", "CP16=a-password-of-twenty", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        started = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert started["event"] == "csms_sim.started" and started["passwords"] == 1
        port = int(started["url"].split(":")[2].split("/")[0])
        login = {"Authorization": "Basic " + base64.b64encode(
            b"CP16:a-password-of-twenty").decode()}  # fmt: skip
        async with session_charger(port, "CP16", headers=login) as cp:
            assert (await cp.boot()).status == "Accepted"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_csms_sim_command_refuses_a_malformed_password_option() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "csms-sim", "--port", "0", "--password", "x"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--password: 'x' is not ID=PASSWORD" in done.stderr
