"""The OpenAPI 3.1 document of the API, generated from the route table and the pydantic models
the handlers validate with (request bodies in validation mode, answers in serialization mode).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from bridge import __version__

REF = "#/components/schemas/{model}"

_QUERY: dict[str, tuple[dict[str, Any], str]] = {
    "offset": ({"type": "integer", "minimum": 0}, "Skip this many objects (default 0)."),
    "limit": ({"type": "integer", "minimum": 0},
              "Objects per page (default 100; at most 1000, X-Limit says what was used)."),
    "date_from": ({"type": "string", "format": "date-time"},
                  "Only objects with last_updated at or after this time."),
    "date_to": ({"type": "string", "format": "date-time"},
                "Only objects with last_updated before this time."),
    "dry_run": ({"type": "boolean"}, "Only show the body that would be sent."),
    "wait": ({"type": "integer", "minimum": 0, "maximum": 300},
             "Seconds to wait for the hub's answer (default 30)."),
}  # fmt: skip


def document(routes: Sequence[Any]) -> dict[str, Any]:
    generator = GenerateJsonSchema(ref_template=REF)
    inputs: list[Any] = []
    for n, route in enumerate(routes):
        if route.body is not None:
            inputs.append(((n, "body"), "validation", TypeAdapter(route.body).core_schema))
        if route.data is not None:
            inputs.append(((n, "data"), "serialization", TypeAdapter(route.data).core_schema))
    generated, definitions = generator.generate_definitions(inputs)
    schemas: dict[Any, dict[str, Any]] = {key[0]: value for key, value in generated.items()}
    paths: dict[str, dict[str, Any]] = {}
    for n, route in enumerate(routes):
        operation: dict[str, Any] = {
            "operationId": _operation_id(route),
            "summary": route.summary,
            "tags": [route.tag],
            "security": [{"token": []}],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string",
                                                                            "minLength": 1}}
                for name in re.findall(r"{(\w+)}", route.path)
            ] + [_query(name) for name in route.query],
            "responses": _responses(schemas.get((n, "data"), {}), route.method),
        }  # fmt: skip
        if route.method in ("PUT", "PATCH") and "{" in route.path:
            operation["parameters"].append({
                "name": "If-Match", "in": "header", "required": False,
                "schema": {"type": "string"},
                "description": "Apply only if the object still has this ETag (else HTTP 412).",
            })  # fmt: skip
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schemas[(n, "body")]}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    paths["/api/v2/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": "This document (no token needed)", "tags": ["meta"],
        "security": [], "responses": {"200": {"description": "OpenAPI 3.1",
                                              "content": {"application/json": {"schema": {}}}}},
    }}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ocpp-oicp-bridge API",
            "version": __version__,
            "description": "Status API (/api/v1, read-only) and charge-station management API "
            "(/api/v2) in the OCPI style; docs/api.md explains the conventions.",
        },
        "paths": paths,
        "components": {
            "schemas": {**definitions, "Error": _envelope({"type": "null"})},
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`Token <token>` (the token plain or base64-encoded)",
                }
            },
        },
    }


def _operation_id(route: Any) -> str:
    words = re.sub(r"[{}]", "", route.path.removeprefix("/api/")).replace("/", "_")
    return f"{route.method.lower()}_{words}".replace("-", "_")


def _query(name: str) -> dict[str, Any]:
    schema, description = _QUERY.get(name, ({"type": "string"}, "Filter (comma list allowed)."))
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


def _envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data", "status_code", "status_message", "timestamp"],
        "properties": {
            "data": {"anyOf": [data, {"type": "null"}]} if data else {},
            "status_code": {"type": "integer", "description": "1000 ok; 2xxx refused; 3xxx "
                            "our error"},
            "status_message": {"type": "string"},
            "timestamp": {"type": "string", "format": "date-time"},
        },
    }  # fmt: skip


def _responses(data: dict[str, Any], method: str) -> dict[str, Any]:
    ok = {"application/json": {"schema": _envelope(data)}}
    error = {"application/json": {"schema": _envelope(data)}}
    responses = {
        "200": {"description": "Answered: status_code 1000 success, 2xxx refused (the "
                "message names the field)", "content": ok},
        "401": {"description": "No or unknown token", "content": error},
        "403": {"description": "The token's scope does not allow this", "content": error},
        "404": {"description": "Unknown object (2003) or endpoint", "content": error},
        "405": {"description": "Method not allowed", "content": error},
        "500": {"description": "Our error (3000)", "content": error},
    }  # fmt: skip
    if method != "GET":
        responses["400"] = {"description": "The body is not JSON", "content": error}
        responses["412"] = {"description": "If-Match out of date: the current object and its "
                            "ETag, nothing applied", "content": error}  # fmt: skip
        responses["413"] = {"description": "Body over api.max_body_bytes", "content": error}
    return responses
