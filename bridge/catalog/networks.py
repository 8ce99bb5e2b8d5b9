"""EVSE networks and their groups (Hubject's eRoamingEVSEAssignment): models and rules, no I/O.

A network is what the Hubject portal calls one: a name, a state the operator sets to match
the portal (``draft`` or ``active``), the EVSEs that belong to it and the groups they are
assigned to (the basis for tariffs). The EVSEs of a network are those of its ``station_ids``,
those listed in ``evses`` and those of its groups. Every EVSE of a network must be in a group:
once the service offer is active the hub prices an EVSE in no group at **zero**
(:func:`unassigned` finds them; the bridge reports them everywhere it can).

Rules (Hubject support: names unique, group names unique in a network and at most 30
characters, duplicate EVSEs refused, only EVSEs of this operator the hub knows):

* an EVSE is in at most one group of a network, and named once in it;
* every EVSE exists in the catalog and carries this operator's prefix;
* in an **active** network the hub never changes an assignment it made: moving or removing
  such an EVSE is refused here (it would be silently ignored there);
* activating a network whose EVSEs are not all in a group needs ``force``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from bridge.catalog.model import StationBody, StationId, _Body, read_only
from bridge.catalog.rules import SetUp, bad
from bridge.config import EvseId, evse_belongs_to
from bridge.status.table import OcpiStatus

#: Longest group name the hub accepts (Hubject support).
GROUP_NAME_MAX = 30
#: A network's name as the portal shows it: printable ASCII, no outer spaces, none of / ? # %
#: (it is the key in the API's URLs).
_NAME_CHAR = r"[!\"$&-.0->@-~]"
NetworkName = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=100, pattern=rf"^{_NAME_CHAR}((?:{_NAME_CHAR}| )*{_NAME_CHAR})?$"
    ),
]
_VISIBLE = r"[^\s\x00-\x1f\x7f]"
GroupName = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=GROUP_NAME_MAX,
        pattern=rf"^{_VISIBLE}([^\x00-\x1f\x7f]*{_VISIBLE})?$",
    ),
]


class NetworkState(StrEnum):
    DRAFT = "draft"  # each assignment sent overwrites the earlier ones
    ACTIVE = "active"  # the hub only takes EVSEs it has not assigned yet


class GroupBody(_Body):
    name: GroupName = Field(description="Unique in its network, at most 30 characters.")
    evses: list[EvseId] = Field(default_factory=list, description="EvseIDs in this group.")


class EvseAssignment(_Body):
    """One EVSE of a network: the group it should be in and what the hub acknowledged."""

    evse_id: str
    group: str | None = Field(description="The group it is in here (None: in no group).")
    hub_group: str | None = Field(description="The group the hub acknowledged (None: none).")
    hub_acknowledged_at: datetime | None = None
    state: str = Field(
        description="acknowledged (the hub has it so) | pending (to be sent) | held (the hub "
        "does not know the EVSE yet) | unassigned (in no group: priced at zero) | fixed (the "
        "active network keeps the hub's group) | hub_only (no longer in the network here; the hub "
        "keeps the group it acknowledged: change it in the Hubject portal)"
    )


class NetworkBody(_Body):
    """An EVSE network of the Hubject portal and the groups its EVSEs are assigned to."""

    id: NetworkName = Field(description="The network's name (NetworkName), unique.")
    state: NetworkState = Field(
        NetworkState.DRAFT, description="As the Hubject portal shows it: draft or active."
    )
    station_ids: list[StationId] = Field(
        default_factory=list,
        description="Every EVSE of these charge stations belongs to the network.",
    )
    evses: list[EvseId] = Field(
        default_factory=list, description="Further EVSEs that belong to the network."
    )
    groups: list[GroupBody] = Field(default_factory=list, max_length=1000)
    force: bool | None = Field(
        None,
        description="Write-only: activate although some EVSEs are in no group (the hub "
        "prices those at zero).",
        json_schema_extra={"writeOnly": True},
    )
    last_updated: datetime | None = read_only("Set by the bridge.")
    source: str | None = read_only("api or file.")
    unassigned: list[str] | None = read_only(
        "EVSEs of the network in no group: the hub prices them at zero."
    )
    assignments: list[EvseAssignment] | None = read_only(
        "Per EVSE: its group here, the group the hub acknowledged, what happens next."
    )
    last_error: str | None = read_only("The hub's last refusal of this network's assignment.")


class NetworkPatch(_Body):
    state: NetworkState | None = None
    station_ids: list[StationId] | None = None
    evses: list[EvseId] | None = None
    groups: list[GroupBody] | None = Field(None, max_length=1000)
    force: bool | None = Field(None, json_schema_extra={"writeOnly": True})
    last_updated: datetime | None = read_only("Ignored.")


class Network(NetworkBody):
    """A network as read: plus the EVSEs in no group and the hub's view per EVSE."""


# -- what a network holds -------------------------------------------------------------------------
#: Fields of a read network that a write ignores (a GET body can be PUT again).
READ_ONLY = {"force": None, "source": None, "unassigned": None, "assignments": None,
             "last_error": None}  # fmt: skip


def desired(body: NetworkBody) -> dict[str, str]:
    """EvseID → group name, as the network says."""
    return {evse_id: group.name for group in body.groups for evse_id in group.evses}


def members(body: NetworkBody, stations: Mapping[str, Any]) -> list[str]:
    """Every EVSE of the network (sorted): its stations', its own list and its groups'.

    ``stations``: station id → catalog entry (anything with ``.body``, a StationBody)."""
    found: set[str] = set(body.evses) | set(desired(body))
    for station_id in body.station_ids:
        entry = stations.get(station_id)
        if entry is not None:
            found |= set(_live_evses(entry.body))
    return sorted(found)


def unassigned(body: NetworkBody, stations: Mapping[str, Any]) -> list[str]:
    """EVSEs of the network in no group: the hub would price them at zero."""
    grouped = desired(body)
    return [evse_id for evse_id in members(body, stations) if evse_id not in grouped]


def _live_evses(station: StationBody) -> Iterable[str]:
    return (e.evse_id for e in station.evses if e.status is not OcpiStatus.REMOVED)


# -- rules ----------------------------------------------------------------------------------------
def check_network(
    body: NetworkBody,
    before: NetworkBody | None,
    *,
    stations: Mapping[str, Any],
    evse_owner: Mapping[str, str],
    setup: SetUp,
    hub_assigned: Mapping[str, str],
) -> None:
    """Raise CatalogError (naming the field) unless ``body`` may replace ``before``.

    ``hub_assigned``: EvseID → group the hub acknowledged for this network."""
    for n, station_id in enumerate(body.station_ids):
        if station_id not in stations:
            raise bad(f"station_ids[{n}]", f"charge station {station_id!r} does not exist")
    for n, evse_id in enumerate(body.evses):
        _check_evse(evse_id, f"evses[{n}]", evse_owner, setup)
    names: dict[str, int] = {}
    placed: dict[str, str] = {}
    for g, group in enumerate(body.groups):
        if group.name in names:
            raise bad(f"groups[{g}].name", f"group {group.name!r} appears twice in the "
                      "network (group names are unique in a network)")  # fmt: skip
        names[group.name] = g
        for m, evse_id in enumerate(group.evses):
            where = f"groups[{g}].evses[{m}]"
            _check_evse(evse_id, where, evse_owner, setup)
            if evse_id in placed:
                other = placed[evse_id]
                raise bad(where, f"EVSE {evse_id!r} is in group {other!r} already" + (
                    " (named twice)" if other == group.name else
                    " (an EVSE is in at most one group of a network)"))  # fmt: skip
            placed[evse_id] = group.name
    if before is not None and before.state is body.state is NetworkState.ACTIVE:
        _check_fixed(body, hub_assigned)
    if body.state is NetworkState.ACTIVE and (before is None or before.state is not body.state):
        loose = unassigned(body, stations)
        if loose and not body.force:
            shown = ", ".join(loose[:5]) + (f" and {len(loose) - 5} more" if len(loose) > 5
                                            else "")  # fmt: skip
            raise bad("state", f"{len(loose)} EVSE(s) of the network are in no group ({shown}): "
                      "once the service offer is active the hub prices them at zero. Assign "
                      "them to a group, or send force: true to activate all the same")  # fmt: skip


def _check_evse(evse_id: str, where: str, evse_owner: Mapping[str, str], setup: SetUp) -> None:
    if not evse_belongs_to(evse_id, setup.operator_id):
        raise bad(where, f"EVSE {evse_id!r} does not carry this operator's prefix "
                  f"{setup.operator_id!r}")  # fmt: skip
    if evse_id not in evse_owner:
        raise bad(where, f"unknown EVSE {evse_id!r}: no charge station of the catalog has it")


def _check_fixed(body: NetworkBody, hub_assigned: Mapping[str, str]) -> None:
    """In an active network the hub keeps every assignment it made: refuse changing one."""
    wanted = desired(body)
    for evse_id, hub_group in sorted(hub_assigned.items()):
        group = wanted.get(evse_id)
        if group == hub_group:
            continue
        where = "groups"
        for g, grp in enumerate(body.groups):
            if grp.name == group:
                where = f"groups[{g}].evses[{grp.evses.index(evse_id)}]"
        action = "remove it from" if group is None else f"move it to {group!r} from"
        raise bad(where, f"the network is active and the hub assigned EVSE {evse_id!r} to group "
                  f"{hub_group!r}: the hub never changes that assignment, so the bridge cannot "
                  f"{action} that group (change the network in the Hubject portal, or set it "
                  "to draft there and here)")  # fmt: skip
