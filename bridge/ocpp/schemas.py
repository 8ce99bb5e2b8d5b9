"""Compiled JSON-schema validation of CALL payloads, from the ``ocpp`` package's schemas.

fastjsonschema compiles each schema to Python once (about 1 µs per StatusNotification instead
of ~25 µs with jsonschema) and, unlike the ``ocpp`` package, checks ``format: date-time``.
On top of the schemas: integers must fit OCPP's 32-bit integer type, and date-times must be
RFC 3339 with ASCII digits and a real calendar date.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Callable
from functools import cache
from typing import Any

import fastjsonschema

from bridge.errors import OcppCallError
from bridge.ocpp.rpc import Dialect, clip

Validator = Callable[[dict[str, Any]], Any]

_DATE_TIME = re.compile(
    r"(?a)\d{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\d|30)"
    r"|02-(?:0[1-9]|1\d|2[0-9]))[Tt](?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)(?:\.\d+)?"
    r"(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)"
)


def is_date_time(value: str) -> bool:
    """RFC 3339 date-time (offset required), ASCII digits only, a day that exists."""
    if not _DATE_TIME.fullmatch(value):
        return False
    if value[5:10] == "02-29":  # the pattern allows 29 February in every year
        year = int(value[:4])
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return True


_TYPE_RULES = frozenset({"type", "format"})  # OCPP's dateTime is a primitive type
_OCCURRENCE_RULES = frozenset({"required", "minItems", "maxItems", "minProperties"})
_PROPERTY_RULES = frozenset(
    {"enum", "const", "maxLength", "minLength", "pattern", "minimum", "maximum",
     "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)  # fmt: skip


@cache
def known_actions(dialect: Dialect) -> frozenset[str]:
    """Every action name the protocol version defines (requests in either direction)."""
    folder = importlib.resources.files(dialect.schema_package) / "schemas"
    suffix = dialect.request_suffix + ".json"
    names = set()
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(suffix) and not name.endswith("Response.json"):
            names.add(name[: -len(suffix)])
    return frozenset(names)


@cache
def validator(dialect: Dialect, action: str, response: bool = False) -> Validator:
    folder = importlib.resources.files(dialect.schema_package) / "schemas"
    name = action + ("Response" if response else dialect.request_suffix) + ".json"
    schema = json.loads((folder / name).read_text(encoding="utf-8"))
    compiled: Validator = fastjsonschema.compile(schema, formats={"date-time": is_date_time})
    return compiled


def validate(
    dialect: Dialect, action: str, payload: dict[str, Any], response: bool = False
) -> None:
    """Raise OcppCallError with the CALLERROR code the violation deserves."""
    if response and not payload and (dialect, action) in _EMPTY_VALID:
        return  # the same empty answer (a StatusNotification's) was valid before
    key = (dialect, action, response)
    check = _VALIDATORS.get(key)
    if check is None:  # functools.cache's key building is a visible share per message
        check = _VALIDATORS[key] = validator(dialect, action, response)
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        rule = exc.rule or ""
        if rule in _TYPE_RULES:
            code = dialect.type_violation
        elif rule in _OCCURRENCE_RULES:
            code = dialect.occurrence_violation
        elif rule in _PROPERTY_RULES:
            code = dialect.property_violation
        else:
            code = dialect.format_violation
        raise OcppCallError(
            code, clip(exc.message), {"field": clip(exc.name or ""), "rule": rule}
        ) from None
    where = _outside_int32(payload)
    if where is not None:
        raise OcppCallError(
            dialect.type_violation,
            f"{where} is not a 32-bit integer",
            {"field": where, "rule": "int32"},
        )
    if response and not payload:
        _EMPTY_VALID.add((dialect, action))


_VALIDATORS: dict[tuple[Dialect, str, bool], Validator] = {}
#: (dialect, action) whose empty response passed its schema: the verdict cannot change.
_EMPTY_VALID: set[tuple[Dialect, str]] = set()


def _outside_int32(payload: dict[str, Any]) -> str | None:
    """Path of the first integral number outside OCPP's 32-bit range (2.0.1 Part 2 §2.1.1)."""
    # Every message passes here: look without building paths; name the path only on a find.
    values: list[Any] = [payload]
    while values:  # iterative: customData may nest deeply
        value = values.pop()
        if isinstance(value, dict):
            values.extend(value.values())
        elif isinstance(value, list):
            values.extend(value)
        elif type(value) in (int, float) and not _fits_int32(value):
            return _path_outside_int32(payload)
    return None


def _path_outside_int32(payload: dict[str, Any]) -> str | None:
    stack: list[tuple[str, Any]] = [("data", payload)]
    while stack:  # iterative: customData may nest deeply
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{clip(str(k), 40)}", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
        elif type(value) in (int, float) and not _fits_int32(value):
            return path
    return None


def _fits_int32(number: float) -> bool:
    if isinstance(number, float) and not number.is_integer():
        return True  # not an integer at all; the schema's "type" rule judges those
    return -(2**31) <= number < 2**31
