"""The management API (``/api/v2``): locations, charge stations, EVSEs, hardware templates,
EVSE networks.

Handlers are thin: parse, let the catalog plan the change, put it into force durably
(``LiveCatalog``), answer. Conventions (docs/api.md):

* a refused body or parameter: HTTP 200, status_code 2001 naming the field (OCPI);
* refused for another reason (exists already, owned by the configuration file): HTTP 200, 2000;
* an unknown object in the URL: HTTP 404, 2003;
* every single-object answer carries an ``ETag``; a PUT/PATCH whose ``If-Match`` is out of date
  is refused without applying: HTTP 412, status_code 2000, the current object as data and its
  ETag in the header, so the client can merge and retry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from bridge.api.context import ApiContext
from bridge.api.envelope import CLIENT_ERROR, INVALID_PARAMETERS, SUCCESS, envelope
from bridge.api.networks import network_out
from bridge.api.paging import PAGING, choice, page, paged, single
from bridge.api.views import location_out, station_out, template_out
from bridge.catalog.catalog import Change, Entry, Kind
from bridge.catalog.enums import DeploymentState
from bridge.catalog.model import (
    EvsePatch,
    LocationBody,
    LocationPatch,
    StationBody,
    StationPatch,
    TemplateBody,
    utc_now,
)
from bridge.catalog.networks import NetworkBody, NetworkPatch
from bridge.errors import CatalogError, OpsRequestError
from bridge.status.table import OcpiStatus

PREFIX = "/api/v2"
_YIELD_EVERY = 50  # batch items handled before other requests get a turn


# -- batch bodies -------------------------------------------------------------------------------
class BatchItem(BaseModel):
    """One item of a batch: create (POST), replace (PUT) or patch (PATCH) one object."""

    action: Literal["create", "replace", "patch"]
    id: str | None = Field(None, description="patch: the object's id (else body.id).")
    if_match: str | None = Field(None, description="An ETag the object must still have.")
    body: dict[str, Any]


class BatchResult(BaseModel):
    """What became of one item (each item applies fully or not at all)."""

    index: int
    id: str | None
    status_code: int
    status_message: str
    etag: str | None = None


@dataclass(frozen=True)
class Collection:
    """One collection of the API and how its objects are read and written."""

    kind: Kind
    path: str  # under PREFIX
    key: str  # the URL placeholder of one object
    body: type[BaseModel]
    patch: type[BaseModel] | None
    read: Callable[[ApiContext, Entry[Any]], dict[str, Any]]
    filters: tuple[str, ...] = ()


LOCATIONS = Collection("location", "/locations", "location_id", LocationBody, LocationPatch,
                       location_out)  # fmt: skip
STATIONS = Collection("station", "/chargestations", "station_id", StationBody, StationPatch,
                      station_out, ("location_id", "deployment_state"))  # fmt: skip
TEMPLATES = Collection("template", "/templates", "template_id", TemplateBody, None, template_out)
NETWORKS = Collection("network", "/networks", "network_id", NetworkBody, NetworkPatch,
                      network_out)  # fmt: skip
COLLECTIONS = (LOCATIONS, STATIONS, TEMPLATES, NETWORKS)


def _updated(entry: Entry[Any]) -> float | None:
    stamp = entry.body.last_updated
    return stamp.timestamp() if stamp is not None else None


async def list_objects(ctx: ApiContext, request: web.Request, c: Collection) -> web.Response:
    values = single(request.query, (*PAGING, *c.filters))
    window = page(values)
    table = ctx.catalog.table(c.kind)
    ids: Sequence[str] = ctx.catalog.ids(c.kind)
    location = values.get("location_id")
    states = choice(values, "deployment_state", [s.value for s in DeploymentState])
    if window.dated or location is not None or states is not None:
        ids = [
            i for i in ids if window.window(_updated(table[i]))
            and (location is None or table[i].body.location_id == location)
            and (states is None or table[i].body.deployment_state.value in states)
        ]  # fmt: skip
    chunk = ids[window.offset : window.offset + window.limit]
    return paged(request, window, [c.read(ctx, table[i]) for i in chunk], total=len(ids))


async def get_object(ctx: ApiContext, request: web.Request, c: Collection) -> web.Response:
    single(request.query, ())
    entry = ctx.catalog.get(c.kind, request.match_info[c.key])
    return _one(ctx, c, entry)


def _one(
    ctx: ApiContext, c: Collection, entry: Entry[Any], message: str = "Success"
) -> web.Response:
    return envelope(c.read(ctx, entry), SUCCESS, message, headers={"ETag": entry.etag})


# -- writing ------------------------------------------------------------------------------------
async def write_object(
    ctx: ApiContext, request: web.Request, c: Collection, action: str
) -> web.Response:
    single(request.query, ())
    raw = await _json(request)
    if not isinstance(raw, dict):
        raise OpsRequestError(INVALID_PARAMETERS, "the body must be a JSON object")
    path_id = request.match_info.get(c.key)
    item = BatchItem(action=action, id=path_id, if_match=request.headers.get("If-Match"),
                     body=raw)  # fmt: skip
    hashes = await _hash_passwords(ctx, [item])
    try:
        changes = _plan(ctx, c, item, hashes[0])
    except _Stale as stale:
        return envelope(c.read(ctx, stale.entry), CLIENT_ERROR, str(stale), http_status=412,
                        headers={"ETag": stale.entry.etag})  # fmt: skip
    except CatalogError as exc:
        raise _refused(exc) from None
    await ctx.live.commit(changes, actor=_actor(request))
    object_id = path_id if action == "patch" and path_id else str(raw.get("id", path_id))
    entry = ctx.catalog.get(c.kind, object_id)
    return _one(ctx, c, entry, "Created" if action == "create" else "Success")


async def patch_evse(ctx: ApiContext, request: web.Request) -> web.Response:
    """PATCH one EVSE of a station, e.g. the status feed of a station with status_source api."""
    single(request.query, ())
    raw = await _json(request)
    if not isinstance(raw, dict):
        raise OpsRequestError(INVALID_PARAMETERS, "the body must be a JSON object")
    station_id, uid = request.match_info["station_id"], request.match_info["uid"]
    entry = ctx.catalog.get("station", station_id)
    try:
        _check_if_match(entry, request.headers.get("If-Match"))
        patch = _validate(EvsePatch, raw)
        body = ctx.catalog.patched_evse(station_id, uid, patch)
        changes = ctx.catalog.plan_station(body, now=utc_now())
        if (
            patch.status is not None
            and patch.status is not OcpiStatus.REMOVED
            and (body.status_source.value != "api")
        ):
            raise CatalogError("status", "only REMOVED may be written for a station whose "
                               "status_source is ocpp (its status is computed)")  # fmt: skip
    except _Stale as stale:
        return envelope(station_out(ctx, stale.entry), CLIENT_ERROR, str(stale),
                        http_status=412, headers={"ETag": stale.entry.etag})  # fmt: skip
    except CatalogError as exc:
        raise _refused(exc) from None
    await ctx.live.commit(changes, actor=_actor(request))
    return _one(ctx, STATIONS, ctx.catalog.get("station", station_id))


async def get_evse(ctx: ApiContext, request: web.Request) -> web.Response:
    single(request.query, ())
    entry = ctx.catalog.get("station", request.match_info["station_id"])
    uid = request.match_info["uid"]
    for evse in station_out(ctx, entry)["evses"]:
        if evse["uid"] == uid:
            return envelope(evse, headers={"ETag": entry.etag})
    raise OpsRequestError(2003, f"unknown EVSE {uid!r} of station {entry.body.id!r}",
                          http_status=404)  # fmt: skip


async def batch(ctx: ApiContext, request: web.Request, c: Collection) -> web.Response:
    single(request.query, ())
    raw = await _json(request)
    if not isinstance(raw, list):
        raise OpsRequestError(INVALID_PARAMETERS, "the body must be a JSON array of items")
    limit = ctx.settings.max_batch_items
    if len(raw) > limit:
        raise OpsRequestError(
            INVALID_PARAMETERS, f"{len(raw)} items; a batch takes at most {limit}"
        )
    items: list[BatchItem | CatalogError] = []
    for n, value in enumerate(raw):
        try:
            items.append(_validate(BatchItem, value))
        except CatalogError as exc:
            items.append(CatalogError(f"[{n}].{exc.field}".rstrip("."), exc.message))
    hashes = await _hash_passwords(ctx, items)
    results: list[dict[str, Any]] = []
    staged: list[Change] = []
    now = utc_now()
    for n, item in enumerate(items):
        if n and n % _YIELD_EVERY == 0:
            await asyncio.sleep(0)  # each item is whole in memory; others may go in between
        if isinstance(item, CatalogError):
            results.append(_result(n, None, item.status_code, str(item)))
            continue
        object_id = item.id or _body_id(item.body)
        try:
            changes = _plan(ctx, c, item, hashes[n], now=now)
        except _Stale as stale:
            results.append(_result(n, object_id, CLIENT_ERROR, str(stale), stale.entry.etag))
            continue
        except CatalogError as exc:
            results.append(_result(n, object_id, exc.status_code, str(exc)))
            continue
        ctx.live.stage(changes)
        staged += changes
        entry = ctx.catalog.table(c.kind).get(object_id or "")
        results.append(_result(n, object_id, SUCCESS, "Success", entry.etag if entry else None))
    if staged:  # one transaction for every item that applied
        await ctx.live.durable(staged, actor=_actor(request))
    failed = sum(1 for r in results if r["status_code"] != SUCCESS)
    message = "Success" if not failed else f"{failed} of {len(results)} items refused"
    return envelope(results, SUCCESS, message)


def _actor(request: web.Request) -> str:
    from bridge.api.routes import CLIENT

    client = request.get(CLIENT)
    return client.name if client is not None else "?"


def _result(
    index: int, object_id: str | None, code: int, message: str, etag: str | None = None
) -> dict[str, Any]:
    return BatchResult(index=index, id=object_id, status_code=code, status_message=message,
                       etag=etag).model_dump()  # fmt: skip


def _body_id(body: dict[str, Any]) -> str | None:
    value = body.get("id")
    return value if isinstance(value, str) else None


class _Stale(Exception):
    def __init__(self, entry: Entry[Any], given: str) -> None:
        super().__init__(f"If-Match {given} is out of date: the object is at {entry.etag}; "
                         "nothing was applied")  # fmt: skip
        self.entry = entry


def _check_if_match(entry: Entry[Any] | None, given: str | None) -> None:
    if given is None:
        return
    if entry is None:  # RFC 9110: If-Match on a missing object fails the precondition
        raise CatalogError("If-Match", "the object does not exist; nothing was applied",
                           status_code=2000, http_status=412)  # fmt: skip
    tags = [t.strip().removeprefix("W/") for t in given.split(",")]
    if "*" not in tags and entry.etag not in tags:
        raise _Stale(entry, given)


def _plan(
    ctx: ApiContext, c: Collection, item: BatchItem, password_hash: str | None, *, now: Any = None
) -> list[Change]:
    now = now or utc_now()
    catalog = ctx.catalog
    body_id = _body_id(item.body)
    if item.action == "patch":
        if c.patch is None:
            raise CatalogError("action", f"{c.kind}s are not patched; replace them (PUT)")
        object_id = item.id or body_id
        if object_id is None:
            raise CatalogError("id", "required to patch")
        entry = catalog.get(c.kind, object_id)
        _check_if_match(entry, item.if_match)
        patch = _validate(c.patch, item.body)
        if c.kind == "location":
            new: BaseModel = catalog.patched_location(object_id, patch)
        elif c.kind == "network":
            new = catalog.patched_network(object_id, patch)
        else:
            new = catalog.patched_station(object_id, patch)
    else:
        new = _validate(c.body, item.body)
        object_id = str(new.id)  # type: ignore[attr-defined]
        if item.id is not None and item.id != object_id:
            raise CatalogError("id", f"{object_id!r} does not match the URL's {item.id!r}")
        _check_if_match(catalog.table(c.kind).get(object_id), item.if_match)
    create_only = item.action == "create"
    if c.kind == "location":
        return catalog.plan_location(new, now=now, create_only=create_only)  # type: ignore[arg-type]
    if c.kind == "template":
        return catalog.plan_template(new, now=now, create_only=create_only)  # type: ignore[arg-type]
    if c.kind == "network":
        # The hub's assignments in an active network are fixed: the rules need to know them.
        hub = ctx.networks.hub_assigned(object_id) if ctx.networks is not None else {}
        return catalog.plan_network(new, now=now, create_only=create_only,  # type: ignore[arg-type]
                                    hub_assigned=hub)  # fmt: skip
    return catalog.plan_station(new, now=now, create_only=create_only,  # type: ignore[arg-type]
                                password_hash=password_hash)  # fmt: skip


async def _hash_passwords(
    ctx: ApiContext, items: Sequence[BatchItem | CatalogError]
) -> list[str | None]:
    """scrypt for every password in the items, off the event loop."""
    passwords = [
        item.body.get("password") if isinstance(item, BatchItem) else None for item in items
    ]
    wanted = [p if isinstance(p, str) and 16 <= len(p) <= 40 else None for p in passwords]
    if not any(wanted):
        return [None] * len(items)

    def run() -> list[str | None]:
        return [ctx.hash_password(p) if p is not None else None for p in wanted]

    return await asyncio.to_thread(run)


def _validate(model: type[Any], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = field_path(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        more = len(exc.errors()) - 1
        if more:
            message += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise CatalogError(field, message) from None


def field_path(loc: Sequence[int | str]) -> str:
    """``("evses", 0, "evse_id")`` → ``evses[0].evse_id``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


async def _json(request: web.Request) -> Any:
    if not request.can_read_body:
        raise OpsRequestError(INVALID_PARAMETERS, "a JSON body is needed")
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # also UnicodeDecodeError: JSON is UTF-8
        raise OpsRequestError(INVALID_PARAMETERS, f"the body is not JSON: {exc}",
                              http_status=400) from None  # fmt: skip


def _refused(exc: CatalogError) -> OpsRequestError:
    return OpsRequestError(exc.status_code, str(exc), http_status=exc.http_status)
