"""The simulator's control endpoints under ``/sim/``: what the hub holds, the pushes it got,
statistics, faults to inject, EVSE network states. One table; each handler reads or sets one
thing of the simulator."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bridge.hubsim.networks import read_state_change

if TYPE_CHECKING:  # the simulator adds these routes to its own application
    from bridge.hubsim.simulator import HubSimulator


def control_routes(sim: HubSimulator) -> list[web.RouteDef]:
    async def get_state(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": sim.state,
                "status_by_operator": sim.state_by_operator,
                "data": sim.data_state,
            }
        )

    async def get_networks(request: web.Request) -> web.Response:
        return web.json_response(sim.networks.describe())

    async def set_network_state(request: web.Request) -> web.Response:
        try:
            operator, network, state = await read_state_change(request)
            sim.networks.set_state(operator, network, state)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(sim.networks.describe())

    async def get_received(request: web.Request) -> web.Response:
        return web.json_response([p.to_json() for p in sim.received])

    async def get_stats(request: web.Request) -> web.Response:
        return web.json_response(sim.stats())

    async def get_faults(request: web.Request) -> web.Response:
        return web.json_response(sim.faults.describe())

    async def set_faults(request: web.Request) -> web.Response:
        spec = json_object(await request.read())
        if spec is None:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            sim.faults.apply(spec)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"faults": sim.faults.describe()})

    async def clear_faults(request: web.Request) -> web.Response:
        sim.faults.clear()
        return web.json_response({"faults": {}})

    async def reset(request: web.Request) -> web.Response:
        sim.reset()
        return web.json_response({"reset": True})

    async def forget(request: web.Request) -> web.Response:
        spec = json_object(await request.read())
        evse_id = spec.get("evse_id") if spec else None
        if not isinstance(evse_id, str):
            return web.json_response({"error": 'body must be {"evse_id": "..."}'}, status=400)
        return web.json_response({"forgotten": sim.faults.forget(evse_id)})

    return [
        web.get("/sim/state", get_state),
        web.get("/sim/received", get_received),
        web.get("/sim/stats", get_stats),
        web.get("/sim/faults", get_faults),
        web.post("/sim/faults", set_faults),
        web.post("/sim/clear", clear_faults),
        web.post("/sim/reset", reset),
        web.post("/sim/forget", forget),
        web.get("/sim/networks", get_networks),
        web.post("/sim/networks/state", set_network_state),
    ]


def json_object(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
