"""Commands on the running bridge: a status or EVSE data fullLoad now (or its preview)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from bridge.api.context import ApiContext
from bridge.api.envelope import envelope
from bridge.api.paging import boolean, integer, single
from bridge.config import OicpSettings
from bridge.delivery.data_outbox import DataOutbox
from bridge.delivery.worker import PushWorker
from bridge.errors import HubError, NotLeaderError
from bridge.oicp.models import ActionType, build_status_request
from bridge.status.engine import StatusEngine


class WorkerFullLoad:
    """FullLoadControl of a running bridge: the push worker sends it between two pushes."""

    def __init__(
        self,
        worker: Callable[[], PushWorker | None],
        engine: StatusEngine,
        oicp: OicpSettings,
        *,
        elsewhere: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._worker = worker
        self.engine = engine
        self.oicp = oicp
        #: Replicas: why this one does not send (it is not the push leader), else None.
        self.elsewhere = elsewhere

    def preview(self) -> dict[str, Any]:
        worker = self._worker()
        gate = worker.outbox.gate if worker is not None else None
        return full_load_body(self.engine, self.oicp, gate)

    def request(self) -> asyncio.Future[int]:
        why = self.elsewhere()
        if why is not None:
            raise NotLeaderError(why)
        worker = self._worker()
        if worker is None:
            raise RuntimeError("the push worker is not running")
        return worker.request_full_load()

    def preview_data(self) -> dict[str, Any]:
        worker = self._worker()
        if worker is None or worker.data is None:
            raise HubError("EVSE data is not enabled (evse_data.enabled)")
        return data_full_load_body(worker.data, self.oicp)

    def request_data(self) -> asyncio.Future[int]:
        why = self.elsewhere()
        if why is not None:
            raise NotLeaderError(why)
        worker = self._worker()
        if worker is None:
            raise RuntimeError("the push worker is not running")
        return worker.request_data_full_load()

    def held_up(self) -> str | None:
        worker = self._worker()
        if worker is None:
            return "the push worker is not running"
        return worker.paused_reason


def full_load_body(
    engine: StatusEngine, oicp: OicpSettings, gate: Callable[[str], bool] | None = None
) -> dict[str, Any]:
    """The status fullLoad's body; ``gate``: as sent, without EVSEs the hub has no data for."""
    records = [(evse_id, engine.status(evse_id)) for evse_id in engine.evse_ids()
               if gate is None or gate(evse_id)]  # fmt: skip
    body = build_status_request(ActionType.FULL_LOAD, oicp.operator_id, oicp.operator_name, records)
    return body.model_dump(mode="json", exclude_none=True)


def data_full_load_body(data: DataOutbox, oicp: OicpSettings) -> dict[str, Any]:
    """The body a data fullLoad would carry now (every valid record of a shared EVSE)."""
    records = [json.loads(record) for record, _ in data.full_load_set().values()]
    return {"ActionType": "fullLoad", "OperatorEvseData": {
        "OperatorID": oicp.operator_id, "OperatorName": oicp.operator_name or oicp.operator_id,
        "EvseDataRecord": records}}  # fmt: skip


class FullLoadResult(BaseModel):
    state: Literal["accepted", "queued", "preview"]
    records: int | None = None
    detail: str | None = None
    body: dict[str, Any] | None = None


async def full_load(ctx: ApiContext, request: web.Request) -> web.Response:
    """Send a status fullLoad now through the push lane (``dry_run``: only show its body)."""
    values = single(request.query, ("dry_run", "wait", "data"))
    data = boolean(values, "data")
    if boolean(values, "dry_run"):
        try:
            body = ctx.full_load.preview_data() if data else ctx.full_load.preview()
        except HubError as exc:
            return envelope(None, 2001, str(exc), http_status=409)
        inner = body.get("OperatorEvseData") or body["OperatorEvseStatus"]
        records = len(inner.get("EvseDataRecord", inner.get("EvseStatusRecord", [])))
        return envelope(FullLoadResult(state="preview", records=records, body=body).model_dump())
    wait = min(integer(values, "wait", 30, 0), 300)
    try:
        done = ctx.full_load.request_data() if data else ctx.full_load.request()
    except NotLeaderError as exc:  # replicas: only the push leader sends to the hub
        return envelope(None, 2000, str(exc), http_status=409)
    except HubError as exc:  # EVSE data not enabled
        return envelope(None, 2001, str(exc), http_status=409)
    try:
        count = await asyncio.wait_for(asyncio.shield(done), timeout=wait)
    except TimeoutError:
        why = ctx.full_load.held_up() or "the hub has not answered yet"
        result = FullLoadResult(
            state="queued",
            detail=f"not accepted within {wait} s ({why}); "
            "it stays queued and is sent as soon as the hub takes pushes",
        )
        return envelope(result.model_dump())  # fmt: skip
    except HubError as exc:
        return envelope(None, 3000, f"the hub refused the fullLoad: {exc} (code {exc.code}); "
                        "check the EvseIDs and the operator set-up", http_status=200)  # fmt: skip
    return envelope(FullLoadResult(state="accepted", records=count).model_dump())
