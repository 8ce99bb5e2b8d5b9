"""Shared pieces of the configuration: EvseID/OperatorID checks and the strict base model."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
)

# Patterns from the OICP 2.3 OpenAPI (components EvseID / OperatorID).
EVSE_ID_RE = re.compile(
    r"^(([A-Za-z]{2}\*?[A-Za-z0-9]{3}\*?E[A-Za-z0-9\*]{1,30})|(\+?[0-9]{1,3}\*[0-9]{3}\*[0-9\*]{1,32}))$"
)
OPERATOR_ID_RE = re.compile(r"^(([A-Za-z]{2}\*?[A-Za-z0-9]{3})|(\+?[0-9]{1,3}\*[0-9]{3}))$")


def _check_evse_id(value: str) -> str:
    if not EVSE_ID_RE.match(value):
        raise ValueError(f"{value!r} is not an OICP EvseID (e.g. DE*ABC*E0001*1)")
    return value


def _check_operator_id(value: str) -> str:
    if not OPERATOR_ID_RE.match(value):
        raise ValueError(f"{value!r} is not an OICP OperatorID (e.g. DE*ABC)")
    return value


EvseId = Annotated[str, AfterValidator(_check_evse_id)]
OperatorId = Annotated[str, AfterValidator(_check_operator_id)]


def operator_prefix(operator_id: str) -> str:
    """Canonical operator part of an ID (``DE*ABC`` and ``DEABC`` are the same operator)."""
    return operator_id.replace("*", "").replace("+", "").upper()


def evse_belongs_to(evse_id: str, operator_id: str) -> bool:
    """True if ``evse_id`` carries ``operator_id`` as its prefix (else Hubject answers 018)."""
    compact = evse_id.replace("*", "").replace("+", "").upper()
    return compact.startswith(operator_prefix(operator_id))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LogFormat(StrEnum):
    JSON = "json"
    CONSOLE = "console"
