"""Validate push bodies against the official OICP 2.3 CPO OpenAPI (tests/data, unmodified).

``validate_push_body(endpoint, body)`` checks a body against the requestBody schema of
eRoamingPushEvseStatus_V2.1 ("status") or eRoamingPushEvseData_V2.3 ("data"), with all
``$ref``s resolved inside the OpenAPI document. Usable as the hub simulator's body_validator.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

OPENAPI_PATH = Path(__file__).parent / "data" / "oicp-cpo-2.3-openapi.yaml"
_DOC_URI = "urn:oicp-cpo-2.3-openapi"
OPERATIONS = {"status": "eRoamingPushEvseStatus_V2.1", "data": "eRoamingPushEvseData_V2.3"}


class SchemaViolation(AssertionError):
    """A body does not match the official schema; lists every violation."""


@functools.cache
def _openapi() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    return doc


@functools.cache
def _validator(endpoint: str) -> OAS30Validator:
    doc = _openapi()
    operation_id = OPERATIONS[endpoint]
    for path_item in doc["paths"].values():
        for operation in path_item.values():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                break
        else:
            continue
        break
    else:
        raise LookupError(f"operation {operation_id} not in {OPENAPI_PATH}")
    # The whole document is one resource, so "#/components/..." refs resolve inside it.
    registry: Registry[Any] = Registry().with_resource(
        _DOC_URI, Resource.from_contents(doc, default_specification=DRAFT4)
    )
    root = {"$ref": _DOC_URI + schema["$ref"]} if "$ref" in schema else schema
    return OAS30Validator(root, registry=registry)


def request_schema(endpoint: str) -> dict[str, Any]:
    """The resolved top-level request schema (for tests that inspect it)."""
    ref: str = _validator(endpoint).schema["$ref"]
    node: Any = _openapi()
    for part in ref.split("#/", 1)[1].split("/"):
        node = node[part]
    return dict(node)


def validate_push_body(endpoint: str, body: dict[str, Any]) -> None:
    """Raise SchemaViolation if ``body`` violates the official request schema of ``endpoint``."""
    errors: list[Any] = sorted(  # jsonschema ValidationErrors
        _validator(endpoint).iter_errors(body), key=lambda e: list(e.absolute_path)
    )
    if errors:
        lines = [
            f"{'/'.join(str(p) for p in e.absolute_path) or '<body>'}: {e.message}" for e in errors
        ]
        raise SchemaViolation(f"{OPERATIONS[endpoint]}: " + "; ".join(lines))


def evse_data_record(evse_id: str) -> dict[str, Any]:
    """A minimal EvseDataRecord with every field the OpenAPI requires (for data pushes)."""
    return {
        "EvseID": evse_id,
        "ChargingStationNames": [{"lang": "en", "value": "Test station"}],
        "Address": {
            "Country": "DEU",
            "City": "Berlin",
            "Street": "Teststrasse",
            "PostalCode": "10115",
            "HouseNum": "1",
        },
        "GeoCoordinates": {"Google": {"Coordinates": "52.520008 13.404954"}},
        "Plugs": ["Type 2 Outlet"],
        "ChargingFacilities": [{"PowerType": "AC_3_PHASE", "Power": 22}],
        "RenewableEnergy": False,
        "CalibrationLawDataAvailability": "Not Available",
        "AuthenticationModes": ["REMOTE"],
        "PaymentOptions": ["Contract"],
        "ValueAddedServices": ["None"],
        "Accessibility": "Free publicly accessible",
        "HotlinePhoneNumber": "+4930123456",
        "IsOpen24Hours": True,
        "IsHubjectCompatible": True,
        "DynamicInfoAvailable": "true",
    }
