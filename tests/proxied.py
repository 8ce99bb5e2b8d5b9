"""Helpers for the proxy-mode tests: settings, and chargers that run whole charging sessions.

The chargers are the ``ocpp`` package's client-side ``ChargePoint`` with handlers for the
CSMS's remote start, so a CALL from the CSMS is answered by a real charger behind the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201

from tests.conftest import Charger, now_z


def proxy_ocpp(csms_url: str, mode: str = "proxy", **upstream: Any) -> dict[str, Any]:
    """The ``ocpp`` section of a bridge in front of the CSMS at ``csms_url``."""
    return {
        "host": "127.0.0.1",
        "port": 0,
        "heartbeat_interval": 60,
        "mode": mode,
        "upstream": {"url": csms_url, "connect_timeout": 2, "retry_after": 7, **upstream},
    }


class Session16(ChargePoint16):  # type: ignore[misc]
    remote_starts: list[dict[str, Any]]

    @on(Action16.remote_start_transaction)
    async def on_remote_start(self, **kwargs: Any) -> result16.RemoteStartTransaction:
        self.remote_starts.append(kwargs)
        return result16.RemoteStartTransaction(status="Accepted")


class Session201(ChargePoint201):  # type: ignore[misc]
    remote_starts: list[dict[str, Any]]

    @on(Action201.request_start_transaction)
    async def on_request_start(self, **kwargs: Any) -> result201.RequestStartTransaction:
        self.remote_starts.append(kwargs)
        return result201.RequestStartTransaction(status="Accepted")


class SessionCharger(Charger):
    """A charger that can authorize, start, meter and stop a transaction."""

    @property
    def remote_starts(self) -> list[dict[str, Any]]:
        return self.cp.remote_starts  # type: ignore[no-any-return]

    async def call(self, request: Any) -> Any:
        return await self.cp.call(request)

    async def session_16(self, connector: int, id_tag: str) -> None:
        """Authorize → Preparing → StartTransaction → Charging → MeterValues → Stop → Available."""
        stamp = now_z()
        answer = await self.call(call16.Authorize(id_tag=id_tag))
        assert answer.id_tag_info["status"] == "Accepted"
        await self.status(connector, "Preparing")
        started = await self.call(call16.StartTransaction(
            connector_id=connector, id_tag=id_tag, meter_start=0, timestamp=stamp))  # fmt: skip
        transaction = started.transaction_id
        await self.status(connector, "Charging")
        value = {"timestamp": stamp, "sampled_value": [{"value": "1500", "unit": "Wh"}]}
        await self.call(call16.MeterValues(
            connector_id=connector, transaction_id=transaction, meter_value=[value]))  # fmt: skip
        await self.call(call16.StopTransaction(
            meter_stop=3000, timestamp=now_z(), transaction_id=transaction))  # fmt: skip
        await self.status(connector, "Finishing")
        await self.status(connector, "Available")

    async def session_201(self, evse: int, id_token: str) -> None:
        """Authorize → TransactionEvent Started / Updated / Ended, Occupied → Available."""
        token = {"id_token": id_token, "type": "ISO14443"}
        answer = await self.call(call201.Authorize(id_token=token))
        assert answer.id_token_info["status"] == "Accepted"
        info = {"transaction_id": f"T-{evse}"}
        event = {"transaction_info": info, "evse": {"id": evse, "connector_id": 1}}
        await self.call(call201.TransactionEvent(
            event_type="Started", timestamp=now_z(), trigger_reason="RemoteStart", seq_no=0,
            id_token=token, **event))  # fmt: skip
        await self.status(evse, "Occupied")
        value = {"timestamp": now_z(), "sampled_value": [{"value": 1500.0}]}
        await self.call(call201.TransactionEvent(
            event_type="Updated", timestamp=now_z(), trigger_reason="MeterValuePeriodic",
            seq_no=1, meter_value=[value], **event))  # fmt: skip
        await self.call(call201.MeterValues(evse_id=evse, meter_value=[value]))
        await self.call(call201.TransactionEvent(
            event_type="Ended", timestamp=now_z(), trigger_reason="StopAuthorized", seq_no=2,
            **event))  # fmt: skip
        await self.status(evse, "Available")

    async def availability(self, evse: int, state: str) -> Any:
        """2.0.1 NotifyEvent with the connector's AvailabilityState."""
        return await self.call(call201.NotifyEvent(
            generated_at=now_z(), seq_no=0, event_data=[{
                "event_id": 1, "timestamp": now_z(), "trigger": "Delta",
                "actual_value": state, "event_notification_type": "HardWiredNotification",
                "component": {"name": "Connector", "evse": {"id": evse, "connector_id": 1}},
                "variable": {"name": "AvailabilityState"},
            }],
        ))  # fmt: skip


@contextlib.asynccontextmanager
async def session_charger(
    port: int,
    cp_id: str,
    version: str = "1.6",
    *,
    subprotocols: list[str] | None = None,
    headers: dict[str, str] | None = None,
    scheme: str = "ws",
    ssl: Any = None,
) -> AsyncIterator[SessionCharger]:
    cls = Session16 if version == "1.6" else Session201
    url = f"{scheme}://127.0.0.1:{port}/ocpp/{cp_id}"
    async with websockets.connect(
        url,
        subprotocols=subprotocols or [f"ocpp{version}"],  # type: ignore[arg-type]
        additional_headers=headers,
        ssl=ssl,
        open_timeout=5,
    ) as ws:
        cp = cls(cp_id, ws, response_timeout=5)
        cp.remote_starts = []
        task = asyncio.create_task(cp.start())
        try:
            yield SessionCharger(cp, ws, task, version)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
