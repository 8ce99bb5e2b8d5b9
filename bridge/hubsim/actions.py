"""The OICP ActionType semantics of the simulated hub: one push applied to what it holds.

Per operator: ``insert`` refuses EVSEs it already holds, ``update`` refuses unknown ones (both
with 022 and nothing applied), ``delete`` removes, ``fullLoad`` replaces the operator's whole
set; an EvseID of another operator or twice in one request is 018. All or nothing.
"""

from __future__ import annotations

from typing import Any

from bridge.config import evse_belongs_to
from bridge.hubsim.faults import _Answer, acknowledgment
from bridge.oicp.models import ActionType


def apply_push(
    store: dict[str, dict[str, Any]],
    path_operator: str,
    body_operator: str,
    action: ActionType,
    items: list[tuple[str, Any]],
) -> _Answer:
    """Apply one push to ``store`` with OICP semantics; all or nothing."""
    if body_operator != path_operator:
        return acknowledgment(
            "018",
            f"OperatorID {body_operator!r} in the body differs from {path_operator!r} in the URL",
        )
    seen: set[str] = set()
    for evse_id, _ in items:
        if not evse_belongs_to(evse_id, path_operator):
            return acknowledgment(
                "018", f"EvseID {evse_id} does not belong to operator {path_operator}"
            )
        if evse_id in seen:
            return acknowledgment("018", f"EvseID {evse_id} appears more than once in the request")
        seen.add(evse_id)

    current = store.setdefault(path_operator, {})
    if action is ActionType.INSERT:
        existing = [evse_id for evse_id, _ in items if evse_id in current]
        if existing:
            return acknowledgment(
                "022",
                f"insert aborted: EvseID {', '.join(existing)} already exists; "
                "nothing was inserted",
            )
        current.update(items)
    elif action is ActionType.UPDATE:
        missing = [evse_id for evse_id, _ in items if evse_id not in current]
        if missing:
            return acknowledgment(
                "022",
                f"update aborted: EvseID {', '.join(missing)} does not exist; nothing was updated",
            )
        current.update(items)
    elif action is ActionType.DELETE:
        for evse_id, _ in items:
            current.pop(evse_id, None)
    else:  # fullLoad: the new set replaces the old one (an empty list deletes everything)
        store[path_operator] = dict(items)
    return acknowledgment("000", None)
