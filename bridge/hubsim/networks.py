"""The hub simulator's eRoamingEVSEAssignment: EVSEs assigned to the groups of a network.

``POST /api/evsenetwork/v1/operators/{operatorID}/network`` (and ``/networks``, the spelling of
Hubject's support pages). With the rules Hubject documents: group names unique in a request
and at most 30 characters, an EVSE named once, only EVSEs of the operator that the hub has
seen (a status or data record), and:

* a network in **draft** (how a network starts): each call overwrites, an EVSE moves group;
* an **active** network (``POST /sim/networks/state``): an EVSE already assigned keeps its
  group; a request that would move one is refused (assigning it to the same group again
  changes nothing, so a repeated request succeeds).

A refusal changes nothing. Success answers the body back (the documented echo).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from bridge.config import evse_belongs_to

NETWORK_ROUTES = (
    "/api/evsenetwork/v1/operators/{operatorID}/network",
    "/api/evsenetwork/v1/operators/{operatorID}/networks",
)
GROUP_NAME_MAX = 30

#: (HTTP status, answer body, OICP code or None)
Answer = tuple[int, dict[str, Any], str | None]


class SimNetworks:
    """Networks per operator: state and the group of each assigned EVSE."""

    def __init__(self, known: Callable[[str], Mapping[str, object]]) -> None:
        self._known = known  # operator → the EVSEs the hub holds a record of
        #: operator → network → {"state": draft|active, "groups": {EvseID: group}}
        self.networks: dict[str, dict[str, dict[str, Any]]] = {}

    def reset(self) -> None:
        self.networks.clear()

    def describe(self) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(self.networks))
        return copy

    def set_state(self, operator: str, network: str, state: str) -> None:
        if state not in ("draft", "active"):
            raise ValueError("state must be draft or active")
        self._network(operator, network)["state"] = state

    def _network(self, operator: str, name: str) -> dict[str, Any]:
        return self.networks.setdefault(operator, {}).setdefault(
            name, {"state": "draft", "groups": {}}
        )

    def answer(self, operator: str, body: dict[str, Any]) -> Answer:
        """Apply one assignment request (all or nothing)."""
        problem = _shape(body)
        if problem is not None:
            return 400, {"message": "Error parsing/validating JSON.",
                         "validationErrors": [problem]}, None  # fmt: skip
        known = self._known(operator)
        names: set[str] = set()
        wanted: dict[str, str] = {}
        for g, group in enumerate(body["GroupsAssignments"]):
            name = group["GroupName"]
            if len(name) > GROUP_NAME_MAX:
                return _refused("022", f"GroupsAssignments[{g}].GroupName: longer than "
                                f"{GROUP_NAME_MAX} characters")  # fmt: skip
            if name in names:
                return _refused("022", f"GroupsAssignments[{g}].GroupName: group {name!r} "
                                "appears twice")  # fmt: skip
            names.add(name)
            for evse_id in group["Evses"]:
                if evse_id in wanted:
                    return _refused("022", f"EVSE {evse_id} appears more than once")
                if not evse_belongs_to(evse_id, operator):
                    return _refused("018", f"EVSE {evse_id} does not belong to {operator}")
                if evse_id not in known:
                    return _refused("022", f"EVSE {evse_id} is unknown: push it first")
                wanted[evse_id] = name
        network = self._network(operator, body["NetworkName"])
        groups: dict[str, str] = network["groups"]
        if network["state"] == "active":
            moved = [e for e, g in wanted.items() if groups.get(e, g) != g]
            if moved:
                return _refused("022", f"network is active: EVSE {', '.join(moved)} is "
                                "assigned already; assignments are not overwritten")  # fmt: skip
        groups.update(wanted)
        return 200, body, "000"


def _shape(body: dict[str, Any]) -> dict[str, str] | None:
    """The first problem of the body's structure (as the hub's validationErrors), or None."""
    if not isinstance(body.get("NetworkName"), str) or not body["NetworkName"]:
        return {"fieldReference": "NetworkName", "errorMessage": "must be a non-empty string"}
    groups = body.get("GroupsAssignments")
    if not isinstance(groups, list):
        return {"fieldReference": "GroupsAssignments", "errorMessage": "must be a list"}
    for g, group in enumerate(groups):
        where = f"GroupsAssignments[{g}]"
        if not isinstance(group, dict) or not isinstance(group.get("GroupName"), str):
            return {"fieldReference": f"{where}.GroupName", "errorMessage": "must be a string"}
        evses = group.get("Evses")
        if not isinstance(evses, list) or not all(isinstance(e, str) for e in evses):
            return {"fieldReference": f"{where}.Evses", "errorMessage": "must be a list of "
                    "EvseIDs"}  # fmt: skip
    return None


def _refused(code: str, info: str) -> Answer:
    description = {"018": "Inconsistent EvseID.", "022": "Data error."}.get(code)
    return 200, {"StatusCode": {"Code": code, "Description": description,
                                "AdditionalInfo": info}}, code  # fmt: skip


async def read_state_change(request: web.Request) -> tuple[str, str, str]:
    """``{"operator_id", "network", "state"}`` of ``POST /sim/networks/state``."""
    try:
        spec = json.loads(await request.read())
        return str(spec["operator_id"]), str(spec["network"]), str(spec["state"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(
            'body must be {"operator_id": "...", "network": "...", "state": "draft|active"}'
        ) from None
