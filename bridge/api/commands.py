"""Commands on the running bridge: a status fullLoad now (or its preview)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bridge.config import OicpSettings
from bridge.delivery.worker import PushWorker
from bridge.oicp.models import ActionType, build_status_request
from bridge.status.engine import StatusEngine


class WorkerFullLoad:
    """FullLoadControl of a running bridge: the push worker sends it between two pushes."""

    def __init__(
        self, worker: Callable[[], PushWorker | None], engine: StatusEngine, oicp: OicpSettings
    ) -> None:
        self._worker = worker
        self.engine = engine
        self.oicp = oicp

    def preview(self) -> dict[str, Any]:
        return full_load_body(self.engine, self.oicp)

    def request(self) -> asyncio.Future[int]:
        worker = self._worker()
        if worker is None:
            raise RuntimeError("the push worker is not running")
        return worker.request_full_load()

    def held_up(self) -> str | None:
        worker = self._worker()
        if worker is None:
            return "the push worker is not running"
        return worker.paused_reason


def full_load_body(engine: StatusEngine, oicp: OicpSettings) -> dict[str, Any]:
    records = [(evse_id, engine.status(evse_id)) for evse_id in engine.evse_ids()]
    body = build_status_request(ActionType.FULL_LOAD, oicp.operator_id, oicp.operator_name, records)
    return body.model_dump(mode="json", exclude_none=True)
