"""The bodies the bridge builds match the official OICP 2.3 OpenAPI, and the check has teeth."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.oicp.models import ActionType, EvseStatus, PushEvseDataRequest, build_status_request
from bridge.status.table import OicpStatus
from tests.oicp_schema import SchemaViolation, evse_data_record, validate_push_body


def _body(
    action: ActionType = ActionType.UPDATE, name: str | None = "ABC Charging"
) -> dict[str, Any]:
    records = [("DE*ABC*E0001*1", OicpStatus.AVAILABLE), ("DEABCE0002", OicpStatus.OCCUPIED)]
    return build_status_request(action, "DE*ABC", name, records).model_dump(mode="json")


@pytest.mark.parametrize("status", list(OicpStatus))
def test_every_status_is_valid(status: OicpStatus) -> None:
    body = build_status_request(
        ActionType.UPDATE, "DE*ABC", None, [("DE*ABC*E1", status)]
    ).model_dump(mode="json")
    validate_push_body("status", body)
    assert body["OperatorEvseStatus"]["EvseStatusRecord"][0]["EvseStatus"] == status.value


@pytest.mark.parametrize("action", list(ActionType))
@pytest.mark.parametrize("name", ["ABC Charging", None])
def test_every_action_is_valid(action: ActionType, name: str | None) -> None:
    body = _body(action, name)
    validate_push_body("status", body)
    assert body["ActionType"] == action.value
    assert ("OperatorName" in body["OperatorEvseStatus"]) is (name is not None)


def test_empty_full_load_and_din_ids_are_valid() -> None:
    validate_push_body(
        "status",
        build_status_request(ActionType.FULL_LOAD, "DE*ABC", None, []).model_dump(mode="json"),
    )
    din = build_status_request(
        ActionType.UPDATE, "+49*536", None, [("+49*536*000*438", EvseStatus.UNKNOWN)]
    )
    validate_push_body("status", din.model_dump(mode="json"))


_DROP = object()
_RECORD = ("OperatorEvseStatus", "EvseStatusRecord", 0)


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ((*_RECORD, "EvseStatus"), "available", "EvseStatus"),
        ((*_RECORD, "EvseStatus"), "OutOfOrder", "EvseStatus"),
        ((*_RECORD, "EvseStatus"), _DROP, "EvseStatus"),
        ((*_RECORD, "EvseID"), "DE*ABC*1", "EvseID"),  # no 'E' after the operator
        ((*_RECORD, "EvseID"), "CP-1", "EvseID"),
        (("OperatorEvseStatus", "OperatorID"), _DROP, "OperatorID"),
        (("OperatorEvseStatus", "OperatorID"), "DE-ABC", "OperatorID"),
        (("OperatorEvseStatus", "EvseStatusRecord"), _DROP, "EvseStatusRecord"),
        (("ActionType",), "FullLoad", "ActionType"),
        (("ActionType",), _DROP, "ActionType"),
    ],
)
def test_violations_are_rejected(path: tuple[Any, ...], value: object, fragment: str) -> None:
    body = copy.deepcopy(_body())
    parent: Any = body
    for key in path[:-1]:
        parent = parent[key]
    if value is _DROP:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(SchemaViolation, match=fragment):
        validate_push_body("status", body)


def test_data_endpoint_schema() -> None:
    body = PushEvseDataRequest.model_validate(
        {
            "ActionType": "fullLoad",
            "OperatorEvseData": {
                "OperatorID": "DE*ABC",
                "OperatorName": "ABC Charging",
                "EvseDataRecord": [evse_data_record("DE*ABC*E1")],
            },
        }
    ).model_dump(mode="json")
    validate_push_body("data", body)
    del body["OperatorEvseData"]["OperatorName"]  # mandatory in EvseData 2.3
    with pytest.raises(SchemaViolation, match="OperatorName"):
        validate_push_body("data", body)
