"""Every route of the API in one table, the middleware around them, and the aiohttp wiring.

The table drives the router and the OpenAPI document alike (``bridge.api.openapi``), so the
document cannot list a route the server lacks or describe a body the handler does not take.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import structlog
from aiohttp import web

from bridge.api import manage, quality
from bridge.api.commands import FullLoadResult, full_load
from bridge.api.context import ApiContext
from bridge.api.envelope import (
    CLIENT_ERROR,
    INVALID_PARAMETERS,
    SERVER_ERROR,
    STATUS_KEY,
    envelope,
    refusal,
)
from bridge.api.manage import COLLECTIONS, BatchItem, BatchResult, Collection
from bridge.api.networks import NetworksPushResult, push_networks
from bridge.api.paging import PAGING
from bridge.api.quality import data_quality
from bridge.api.status import PREFIX as V1
from bridge.api.status import StatusApi
from bridge.api.tokens import Client
from bridge.catalog import model
from bridge.catalog.model import Evse, EvsePatch
from bridge.catalog.networks import Network
from bridge.catalog.quality import Report
from bridge.errors import CatalogError, OpsRequestError

log = structlog.get_logger("bridge.api")

V2 = manage.PREFIX
OPENAPI_PATH = f"{V2}/openapi.json"
Handler = Callable[[ApiContext, web.Request], Awaitable[web.StreamResponse]]
CONTEXT = _CTX = web.AppKey("api_context", ApiContext)
CLIENT = web.RequestKey("api_client", Client)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    scope: Literal["read", "write"] = "read"
    body: Any = None  # type of the request body (for the OpenAPI document)
    data: Any = None  # type of ``data`` in a successful answer (None: any JSON)
    query: tuple[str, ...] = ()
    tag: str = "status"


def _status_route(name: str) -> Handler:
    async def handle(ctx: ApiContext, request: web.Request) -> web.StreamResponse:
        return await getattr(StatusApi(ctx), name)(request)  # type: ignore[no-any-return]

    return handle


def _collection_routes(c: Collection) -> list[Route]:
    base, one = f"{V2}{c.path}", f"{V2}{c.path}/{{{c.key}}}"
    read_model = c.body

    out_model = {"location": model.Location, "station": model.Station,
                 "template": model.Template, "network": Network}[c.kind]  # fmt: skip
    tag = f"{c.kind}s"
    routes = [
        Route("GET", base, partial(manage.list_objects, c=c), f"List {c.kind}s (paged)",
              data=list[out_model], query=(*PAGING, *c.filters), tag=tag),  # type: ignore[valid-type]
        Route("POST", base, partial(manage.write_object, c=c, action="create"),
              f"Create a {c.kind}", "write", body=read_model, data=out_model, tag=tag),
        Route("POST", f"{base}/batch", partial(manage.batch, c=c),
              f"Create, replace or patch many {c.kind}s; answered per item", "write",
              body=list[BatchItem], data=list[BatchResult], tag=tag),
        Route("GET", one, partial(manage.get_object, c=c), f"One {c.kind}", data=out_model,
              tag=tag),
        Route("PUT", one, partial(manage.write_object, c=c, action="replace"),
              f"Create or replace a {c.kind} (If-Match optional)", "write", body=read_model,
              data=out_model, tag=tag),
    ]  # fmt: skip
    if c.patch is not None:
        routes.append(Route("PATCH", one, partial(manage.write_object, c=c, action="patch"),
                            f"Change some fields of a {c.kind} (If-Match optional)", "write",
                            body=c.patch, data=out_model, tag=tag))  # fmt: skip
    return routes


def routes() -> list[Route]:
    table = [
        Route("GET", f"{V1}/charge-points", _status_route("charge_points"),
              "Chargers: connection, boot, EVSEs",
              query=(*PAGING, "connected", "offline", "protocol")),
        Route("GET", f"{V1}/charge-points/{{charge_point_id}}", _status_route("charge_point"),
              "One charger"),
        Route("GET", f"{V1}/evses", _status_route("evses"), "EVSEs: status, hub status, pushes",
              query=(*PAGING, "status", "hub_status", "ocpp_status", "pending", "parked",
                     "charge_point_id")),
        Route("GET", f"{V1}/evses/{{evse_id}}", _status_route("evse"), "One EVSE"),
        Route("GET", f"{V1}/delivery", _status_route("delivery"), "Delivery summary"),
    ]  # fmt: skip
    for c in COLLECTIONS:
        table += _collection_routes(c)
    evse = f"{V2}/chargestations/{{station_id}}/evses/{{uid}}"
    table += [
        Route("GET", evse, manage.get_evse, "One EVSE of a station (ETag: the station's)",
              data=Evse, tag="stations"),
        Route("PATCH", evse, manage.patch_evse, "Change one EVSE; the status feed of "
              "status_source api stations (If-Match: the station's ETag)", "write",
              body=EvsePatch, data=model.Station, tag="stations"),
        Route("GET", f"{V2}/data-quality", data_quality, "Data-quality report: per EVSE "
              "the missing fields, consistency findings and score, with a summary (paged EVSEs)",
              data=Report, query=quality.QUERY, tag="quality"),
        Route("POST", f"{V2}/commands/fullload", full_load,
              "Send a status fullLoad now through the push lane (dry_run=true: show the body; "
              "data=true: the EVSE data fullLoad instead)",
              "read", data=FullLoadResult, query=("dry_run", "wait", "data"), tag="commands"),
        Route("POST", f"{V2}/commands/networks/push", push_networks,
              "Send the EVSE networks' group assignments now through the push lane "
              "(dry_run=true: show the bodies)", "read", data=NetworksPushResult,
              query=("dry_run", "wait"), tag="commands"),
    ]  # fmt: skip
    return table


# -- middleware ---------------------------------------------------------------------------------
@web.middleware
async def api_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Token check, envelopes for every error, one log line per write."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    if request.path == OPENAPI_PATH:
        return await handler(request)
    ctx = request.app.get(_CTX)
    if ctx is None:  # the API has a port of its own: nothing under /api/ here
        return await _answer(request, handler)
    client = ctx.tokens.client(request.headers.get("Authorization"))
    if client is None:
        return envelope(
            None, CLIENT_ERROR, "missing or unknown token: send Authorization: Token <token>",
            http_status=401, headers={"WWW-Authenticate": "Token"},
        )  # fmt: skip
    request[CLIENT] = client
    writing = request.method not in ("GET", "HEAD")
    response = await _answer(request, handler)
    if writing:
        log.info("api.write", client=client.name, method=request.method, path=request.path,
                 http_status=response.status,
                 status_code=response.get(STATUS_KEY))  # fmt: skip
    return response


async def _answer(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except OpsRequestError as exc:
        return refusal(exc)
    except CatalogError as exc:
        return envelope(None, exc.status_code, str(exc), http_status=exc.http_status)
    except web.HTTPNotFound:
        return envelope(None, CLIENT_ERROR, f"no such endpoint: {request.path}", http_status=404)
    except web.HTTPMethodNotAllowed as exc:
        return envelope(
            None, CLIENT_ERROR,
            f"{request.method} not allowed here"
            + ("; the status API is read-only" if request.path.startswith(V1) else "")
            + f" ({', '.join(sorted(exc.allowed_methods))})",
            http_status=405,
        )  # fmt: skip
    except web.HTTPRequestEntityTooLarge as exc:
        return envelope(None, INVALID_PARAMETERS, f"the body is larger than {exc.text}",
                        http_status=413)  # fmt: skip
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("ops.api_error", path=request.path, error=str(exc))
        return envelope(
            None, SERVER_ERROR, f"internal error: {type(exc).__name__}", http_status=500
        )


def _bind(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = request.app[_CTX]
        client = request.get(CLIENT)
        writer = client is not None and client.may_write()
        if route.scope == "write" and not writer:
            return envelope(None, CLIENT_ERROR, "this token may only read (scope read)",
                            http_status=403)  # fmt: skip
        dry_run = request.query.get("dry_run", "").lower() in ("true", "1", "yes")
        if route.handler in (full_load, push_networks) and not writer and not dry_run:
            return envelope(
                None,
                CLIENT_ERROR,
                "sending to the hub needs a write token (dry_run=true is allowed to read tokens)",
                http_status=403,
            )
        return await route.handler(ctx, request)

    return handle


def add_routes(app: web.Application, ctx: ApiContext) -> None:
    from bridge.api.openapi import document

    app[_CTX] = ctx
    for route in routes():
        app.router.add_route(route.method, route.path, _bind(route))
    spec = document(routes())

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(spec)

    app.router.add_get(OPENAPI_PATH, openapi)
