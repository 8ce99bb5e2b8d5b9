"""OICP 2.3 messages used by the bridge, with the exact JSON field names of the OpenAPI.

Requests are strict (``extra="forbid"``) so that the hub simulator, which validates incoming
bodies with these same models, catches a misspelt field. Answers from the hub are lenient
(``extra="ignore"``): Hubject may add fields at any time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from bridge.config import EVSE_ID_RE, EvseId, OperatorId
from bridge.status.table import OicpStatus

__all__ = [
    "Acknowledgment",
    "ActionType",
    "EvseStatus",
    "EvseStatusRecord",
    "OperatorEvseData",
    "OperatorEvseStatus",
    "PushEvseDataRequest",
    "PushEvseStatusRequest",
    "StatusCode",
    "StatusRequestEncoder",
    "build_status_request",
]

#: OICP ``EvseStatus`` values (one enum for the whole bridge).
EvseStatus = OicpStatus


class ActionType(StrEnum):
    """How the hub applies a push (OICP ``ActionType``)."""

    FULL_LOAD = "fullLoad"
    UPDATE = "update"
    INSERT = "insert"
    DELETE = "delete"


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EvseStatusRecord(_Request):
    EvseID: EvseId
    EvseStatus: OicpStatus


class OperatorEvseStatus(_Request):
    OperatorID: OperatorId
    OperatorName: str | None = Field(None, max_length=100)
    EvseStatusRecord: list[EvseStatusRecord]

    @model_serializer(mode="wrap")
    def _omit_missing_name(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # OperatorName is optional in OICP; send no key rather than ``null``.
        data: dict[str, Any] = handler(self)
        if data.get("OperatorName") is None:
            data.pop("OperatorName", None)
        return data


class PushEvseStatusRequest(_Request):
    """Body of eRoamingPushEvseStatus V2.1."""

    ActionType: ActionType
    OperatorEvseStatus: OperatorEvseStatus


class OperatorEvseData(_Request):
    OperatorID: OperatorId
    OperatorName: str = Field(max_length=100)  # mandatory in EvseData 2.3
    # Records stay loose dicts: the bridge never builds them, only the simulator stores them.
    EvseDataRecord: list[dict[str, Any]]

    @field_validator("EvseDataRecord")
    @classmethod
    def _records_have_evse_id(cls, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, record in enumerate(records):
            evse_id = record.get("EvseID")
            if not isinstance(evse_id, str) or not EVSE_ID_RE.match(evse_id):
                raise ValueError(f"record {index}: EvseID missing or not an OICP EvseID")
        return records


class PushEvseDataRequest(_Request):
    """Body of eRoamingPushEvseData V2.3 (records unchecked apart from EvseID)."""

    ActionType: ActionType
    OperatorEvseData: OperatorEvseData


class StatusCode(_Answer):
    Code: str
    Description: str | None = None
    AdditionalInfo: str | None = None


class Acknowledgment(_Answer):
    """eRoamingAcknowledgment, the hub's answer to every push."""

    Result: bool
    StatusCode: StatusCode
    SessionID: str | None = None
    CPOPartnerSessionID: str | None = None
    EMPPartnerSessionID: str | None = None


def build_status_request(
    action: ActionType,
    operator_id: str,
    operator_name: str | None,
    records: Sequence[tuple[str, OicpStatus]],
) -> PushEvseStatusRequest:
    """Build (and validate) an eRoamingPushEvseStatus body; raises pydantic.ValidationError."""
    return PushEvseStatusRequest(
        ActionType=action,
        OperatorEvseStatus=OperatorEvseStatus(
            OperatorID=operator_id,
            OperatorName=operator_name,
            EvseStatusRecord=[
                EvseStatusRecord(EvseID=evse_id, EvseStatus=status) for evse_id, status in records
            ],
        ),
    )


class StatusRequestEncoder:
    """eRoamingPushEvseStatus bodies as JSON bytes without building the models on every push.

    The bytes are exactly ``build_status_request(...).model_dump_json()``: the envelope
    (ActionType, OperatorID, OperatorName) is taken from the models once per action, and a
    record is written directly only when it is valid by the models' own rules (an EvseID that
    matches the pattern, an ``OicpStatus``). Anything else goes through
    :func:`build_status_request`, so invalid records raise the same ValidationError as before.
    """

    _TAIL = b"]}}"  # EvseStatusRecord is the last field of the last object

    def __init__(self, operator_id: str, operator_name: str | None) -> None:
        self._operator_id = operator_id
        self._operator_name = operator_name
        self._heads: dict[ActionType, bytes] = {}

    def encode(self, action: ActionType, records: Sequence[tuple[str, OicpStatus]]) -> bytes:
        head = self._heads.get(action)
        if head is None:
            return self._via_models(action, records)
        parts = []
        for evse_id, status in records:
            if type(status) is not OicpStatus or type(evse_id) is not str:
                return self._via_models(action, records)
            if not EVSE_ID_RE.match(evse_id):
                return self._via_models(action, records)
            parts.append(f'{{"EvseID":{json.dumps(evse_id)},"EvseStatus":"{status.value}"}}')
        return head + ",".join(parts).encode() + self._TAIL

    def _via_models(self, action: ActionType, records: Sequence[tuple[str, OicpStatus]]) -> bytes:
        build = build_status_request
        body = build(action, self._operator_id, self._operator_name, records).model_dump_json()
        if action not in self._heads:
            empty = build(action, self._operator_id, self._operator_name, []).model_dump_json()
            if empty.endswith("[]}}"):
                self._heads[action] = empty[:-3].encode()
        return body.encode()
