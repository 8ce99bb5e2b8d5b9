"""Proxy mode survives SIGKILL: every status a charger saw confirmed reaches the hub.

The bridge is a real child process (``bridge run``); the CSMS is the ``ocpp``-based simulator in
this process; four chargers (two per OCPP version) report random statuses through the proxy as
fast as the CSMS confirms them while the bridge is killed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.devtools.csms_sim import CsmsSimulator
from bridge.hubsim import HubSimulator
from tests.conftest import eventually
from tests.procs import BridgeProcess
from tests.test_durability import Fleet, hub_matches, process_config


@pytest.mark.slow
async def test_sigkill_mid_session_loses_no_confirmed_status(
    tmp_path: Path, hub: HubSimulator
) -> None:
    async with CsmsSimulator() as csms:
        proxy = {"mode": "proxy", "upstream": {"url": csms.url, "connect_timeout": 2}}
        config = process_config(tmp_path, hub, ocpp=proxy)
        hub.latency = 0.01  # keep a queue so the kill finds pushes pending
        first = await BridgeProcess(config).start()
        fleet = Fleet()
        await fleet.connect(first.ocpp_port)
        burst = asyncio.create_task(fleet.burst(200, seed=14, stop_on_error=True))
        await eventually(lambda: len(fleet.confirmed) >= 8 and len(hub.received) >= 3, within=30)
        await asyncio.sleep(0.2)
        assert await first.kill() == -9
        sent = await burst  # reports the chargers saw confirmed
        await fleet.close()
        # The CSMS saw every one of those connections end (TCP reset: no close frame).
        await eventually(lambda: len(csms.closed) == 4)
        confirmed_by_csms = sum(1 for m in csms.received if m.action == "StatusNotification")
        assert confirmed_by_csms >= sent > 0
        second = await BridgeProcess(config).start()
        try:
            await eventually(lambda: hub_matches(hub, fleet), within=40)
            await asyncio.sleep(0.3)  # nothing more arrives
            assert hub_matches(hub, fleet), (hub.state, fleet.confirmed, fleet.attempted)
            assert hub.max_in_flight == 1
            # After the restart the chargers come back through the proxy as before.
            again = Fleet()
            await again.connect(second.ocpp_port)
            await again.burst(3, seed=15)
            truth = again.truth()
            await eventually(lambda: all(hub.state.get(e) == s for e, s in truth.items()),
                             within=20)  # fmt: skip
            await again.close()
        finally:
            assert await second.terminate() == 0
