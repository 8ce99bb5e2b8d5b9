"""The official EvseDataRecord schemas, compiled once: does a record pass before it is pushed?

The schemas are copies of the official documents kept as package data
(``bridge/oicp/schemas``): OICP 2.3 from the CPO OpenAPI (``components.schemas``), OICP 2.2 from
the EVSE Swagger (``definitions``). They are compiled with fastjsonschema once per process (a
record validates in microseconds, so 50,000 records stay well within a second or two); a record
that fails is checked again with jsonschema to name *every* failing field, not only the first.

One deliberate addition to the documents: they state string lengths as ``maximum`` /
``minimum`` (a JSON Schema keyword that only constrains numbers, so a plain validator would let
a 3-character Street of 101 characters through); Hubject enforces them as lengths, so they are
also checked as ``maxLength`` / ``minLength``.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import fastjsonschema
import jsonschema

Version = Literal["2.3", "2.2"]
_FILES: dict[str, tuple[str, str, str]] = {
    # version: (file, pointer of the record schema, pointer of the request schema)
    "2.3": (
        "evse-data-2.3.json",
        "#/components/schemas/EvseDataRecord",
        "#/components/schemas/eRoamingPushEvseData",
    ),
    "2.2": (
        "evse-data-2.2.json",
        "#/definitions/EvseDataRecord",
        "#/definitions/ERoamingPushEvseData",
    ),
}


@dataclass(frozen=True, slots=True)
class FieldError:
    """One failing field of a record: its path (``Address.Street``) and what is wrong."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def document(version: Version) -> dict[str, Any]:
    """The packaged copy of the official schema document (unmodified)."""
    name = _FILES[version][0]
    text = resources.files("bridge.oicp").joinpath("schemas", name).read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


@functools.cache
def _strict(version: Version) -> dict[str, Any]:
    doc = copy.deepcopy(document(version))
    _lengths(doc)
    return doc


def _lengths(node: Any) -> None:
    """Add maxLength/minLength where the document writes a string's length as max/minimum."""
    if isinstance(node, dict):
        if node.get("type") == "string":
            if isinstance(node.get("maximum"), int):
                node["maxLength"] = node["maximum"]
            if isinstance(node.get("minimum"), int):
                node["minLength"] = node["minimum"]
        for value in node.values():
            _lengths(value)
    elif isinstance(node, list):
        for value in node:
            _lengths(value)


def _rooted(version: Version, pointer: str) -> dict[str, Any]:
    """The document with ``pointer`` as its root schema (refs resolve inside the document)."""
    doc = dict(_strict(version))
    doc.pop("$comment", None)
    return {**doc, "$ref": pointer}


@functools.cache
def _fast(version: Version, which: int) -> Callable[[Any], Any]:
    compiled: Callable[[Any], Any] = fastjsonschema.compile(
        _rooted(version, _FILES[version][which]), use_default=False
    )
    return compiled


@functools.cache
def _full(version: Version, which: int) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(_rooted(version, _FILES[version][which]))


def compile_all() -> None:
    """Compile every schema now (at start: the first record must not pay for it)."""
    for version in _FILES:
        _fast(version, 1)


def record_errors(record: dict[str, Any], version: Version = "2.3") -> list[FieldError]:
    """Every way ``record`` fails its EvseDataRecord schema (empty: it passes)."""
    return _errors(record, version, 1)


def request_errors(body: dict[str, Any], version: Version = "2.3") -> list[FieldError]:
    """Every way a whole eRoamingPushEvseData request body fails its schema."""
    return _errors(body, version, 2)


def _errors(value: dict[str, Any], version: Version, which: int) -> list[FieldError]:
    try:
        _fast(version, which)(value)
    except fastjsonschema.JsonSchemaValueException:
        pass
    else:
        return []
    found = sorted(_full(version, which).iter_errors(value), key=lambda e: list(e.absolute_path))
    errors = [FieldError(_path(e.absolute_path), e.message) for e in found]
    # The fast validator refused: never answer "valid" even if the two were to disagree.
    return errors or [FieldError("<record>", "does not match the schema")]


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<record>"
