"""EVSE networks over the API: how a network reads (with the hub's view per EVSE and the EVSEs
in no group), and the command that sends the assignments now (or shows them)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from bridge.api.context import ApiContext
from bridge.api.envelope import envelope
from bridge.api.paging import boolean, integer, single
from bridge.catalog.catalog import Entry
from bridge.catalog.networks import NetworkBody, unassigned

_POLL = 0.05  # s between looks at the lane while a push command waits


def network_out(ctx: ApiContext, entry: Entry[NetworkBody]) -> dict[str, Any]:
    data = entry.body.model_dump(mode="json", exclude={"force"})
    data["source"] = entry.source.value
    if ctx.networks is None:  # no lane (a read-only use): only what the catalog says
        data["unassigned"] = unassigned(entry.body, ctx.catalog.stations)
        data["assignments"], data["last_error"] = [], None
        return data
    data.update(ctx.networks.view(entry.body))
    return data


class NetworkPushState(BaseModel):
    network: str
    state: Literal["acknowledged", "pending", "nothing_to_send", "preview"]
    body: dict[str, Any] | None = None
    held: list[str] = []
    unassigned: list[str] = []
    last_error: str | None = None


class NetworksPushResult(BaseModel):
    networks: list[NetworkPushState]


async def push_networks(ctx: ApiContext, request: web.Request) -> web.Response:
    """Send every network's due assignment now through the push lane (``dry_run``: show the
    bodies); refusals and backoffs of earlier attempts are forgotten, so it is tried again."""
    values = single(request.query, ("dry_run", "wait"))
    pushes = ctx.networks
    if pushes is None:
        return envelope(None, 3000, "network assignments are not sent by this process",
                        http_status=200)  # fmt: skip
    names = list(ctx.catalog.ids("network"))
    if boolean(values, "dry_run"):
        return envelope(NetworksPushResult(networks=[
            _state(ctx, name, "preview") for name in names]).model_dump())  # fmt: skip
    elsewhere = getattr(ctx.full_load, "elsewhere", None)
    why = elsewhere() if elsewhere is not None else None
    if why is not None:  # replicas: only the push leader sends to the hub
        return envelope(None, 2000, why, http_status=409)
    wait = min(integer(values, "wait", 30, 0), 300)
    pushes.retry_now()
    due = {n for n in names if pushes.body(n) is not None}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(pushes.body(n) is not None for n in due):
        if any(pushes.failed(n) for n in due):
            break
        await asyncio.sleep(_POLL)
    result = [_state(ctx, n, "pending" if pushes.body(n) is not None
                     else "acknowledged" if n in due else "nothing_to_send")
              for n in names]  # fmt: skip
    return envelope(NetworksPushResult(networks=result).model_dump())


def _state(ctx: ApiContext, name: str, state: Any) -> NetworkPushState:
    assert ctx.networks is not None
    network = ctx.catalog.networks[name].body
    view = ctx.networks.view(network)
    held = [a["evse_id"] for a in view["assignments"] if a["state"] == "held"]
    return NetworkPushState(
        network=name, state=state,
        body=ctx.networks.assignment(network) if state in ("preview", "pending") else None,
        held=held, unassigned=view["unassigned"], last_error=view["last_error"],
    )  # fmt: skip
