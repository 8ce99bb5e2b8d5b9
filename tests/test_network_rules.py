"""The rules of EVSE networks as plain functions (no I/O), over generated networks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bridge.catalog.catalog import Catalog, file_station
from bridge.catalog.enums import Source
from bridge.catalog.networks import NetworkBody, NetworkState, desired, unassigned
from bridge.errors import CatalogError

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
OURS = [f"DE*ABC*E1*{n}" for n in range(1, 5)]
EVSES = [*OURS, "DE*ABC*E9*9", "DE*XYZ*E1*1"]  # the last two: unknown, another operator's
NAMES = ["A", "B", "Fast", "x" * 30, "y" * 31]


def catalog() -> Catalog:
    cat = Catalog()
    body = file_station("CP1", dict(enumerate(OURS, start=1)), None)
    cat.apply(cat.plan_station(body, now=T0, source=Source.FILE))
    return cat


groups = st.lists(
    st.fixed_dictionaries({"name": st.sampled_from(NAMES),
                           "evses": st.lists(st.sampled_from(EVSES), max_size=4)}),
    max_size=4,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    groups=groups,
    stations=st.lists(st.sampled_from(["CP1", "CP9"]), max_size=1),
    state=st.sampled_from(["draft", "active"]),
    force=st.booleans(),
    hub=st.dictionaries(st.sampled_from(OURS), st.sampled_from(NAMES[:3]), max_size=3),
    was_active=st.booleans(),
)
def test_a_network_is_accepted_whole_or_refused_naming_a_field(
    *,
    groups: list[dict[str, Any]],
    stations: list[str],
    state: str,
    force: bool,
    hub: dict[str, str],
    was_active: bool,
) -> None:
    cat = catalog()
    if was_active:
        before = NetworkBody(id="N", state=NetworkState.ACTIVE, groups=[
            {"name": g, "evses": [e for e, h in hub.items() if h == g]}
            for g in sorted(set(hub.values()))])  # type: ignore[misc]  # fmt: skip
        cat.apply(cat.plan_network(before, now=T0, hub_assigned=hub, source=Source.API))
    else:
        hub = {}
    snapshot = dict(cat.networks)
    try:
        body = NetworkBody.model_validate({"id": "N", "state": state, "groups": groups,
                                           "station_ids": stations, "force": force})  # fmt: skip
    except ValidationError as exc:  # the model's own rule (the API names its field: 2001)
        event("refused by the model")
        assert {e["loc"][:1] + e["loc"][2:] for e in exc.errors()} == {("groups", "name")}
        return
    try:
        changes = cat.plan_network(body, now=T0, hub_assigned=hub)
    except CatalogError as exc:
        event(f"refused: {exc.field.split('[')[0]}")
        assert exc.field and exc.field.split("[")[0] in ("groups", "station_ids", "state")
        assert cat.networks == snapshot  # nothing half-applied
        return
    event("accepted")
    cat.apply(changes)
    stored = cat.networks["N"].body
    placed = [e for g in stored.groups for e in g.evses]
    assert len(placed) == len(set(placed))  # an EVSE in at most one group, once
    assert all(e in OURS for e in placed)  # known, ours
    names = [g.name for g in stored.groups]
    assert len(names) == len(set(names)) and all(len(n) <= 30 for n in names)
    assert stored.force is None  # checked, never stored
    if was_active and state == "active":  # the hub's assignments stay as they are
        assert all(desired(stored).get(e) == g for e, g in hub.items())
    if state == "active" and not was_active and not force:
        assert unassigned(stored, cat.stations) == []
