"""The charger registry: which OICP EvseID a charger's connector / EVSE number is."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bridge.config import EVSE_ID_RE, evse_belongs_to

if TYPE_CHECKING:
    from bridge.config import Settings

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")
_MISSING = ""  # sentinel: cache miss (a real EvseID is never empty)


def same_evse(evse_id: str) -> str:
    """The form in which two EvseIDs are the same EVSE: without ``*``, upper case (as OICP)."""
    return evse_id.replace("*", "").upper()


class Registry:
    """Configured chargers plus, optionally, a template for chargers not listed.

    Keys are OCPP 1.6 connectorIds or OCPP 2.0.1 evseIds, whichever the charger speaks.
    """

    def __init__(
        self,
        chargers: Mapping[str, Mapping[int, str]],
        operator_id: str,
        *,
        template: str | None = None,
        allow_unlisted: bool = False,
        max_unlisted: int = 1000,
        template_max_evses: int = 8,
    ) -> None:
        self._chargers = {cp: dict(evses) for cp, evses in chargers.items()}
        self._operator_id = operator_id
        self._template = template if allow_unlisted else None
        # A charger not listed names its own numbers: only 1..max become EVSEs at the hub.
        self._template_max = template_max_evses
        self._templated: dict[tuple[str, int], str | None] = {}  # formatting + regex per message
        self._refused: set[str] = set()  # catalog: deprecated or API-fed stations
        self.max_unlisted = max_unlisted
        self._unlisted: set[str] = set()  # unlisted chargers admitted since the start
        # same_evse(EvseID) → the charger it belongs to: listed ones, and templated ones once
        # given out; an EvseID is never given to a second charger.
        self._owners = {
            same_evse(evse_id): cp_id
            for cp_id, evses in self._chargers.items()
            for evse_id in evses.values()
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(
            {cp: c.evses for cp, c in settings.chargers.items()},
            settings.oicp.operator_id,
            template=settings.ocpp.evse_id_template,
            allow_unlisted=settings.ocpp.allow_unlisted,
            max_unlisted=settings.ocpp.max_unlisted_chargers,
            template_max_evses=settings.ocpp.template_max_evses,
        )

    def knows(self, charge_point_id: str) -> bool:
        """Whether a charger with this ID may connect."""
        if self._refused and charge_point_id in self._refused:
            return False
        return charge_point_id in self._chargers or self._template is not None

    def set_charger(self, charge_point_id: str, evses: Mapping[int, str] | None) -> None:
        """The catalog changed a charger: its OCPP numbers → EvseIDs, or None: it may not
        connect (deprecated, or its status comes over the API)."""
        old = self._chargers.pop(charge_point_id, {})
        for evse_id in old.values():
            if self._owners.get(same_evse(evse_id)) == charge_point_id:
                del self._owners[same_evse(evse_id)]
        if evses is None:
            self._refused.add(charge_point_id)
        else:
            self._chargers[charge_point_id] = dict(evses)
            self._refused.discard(charge_point_id)
            for evse_id in evses.values():
                self._owners[same_evse(evse_id)] = charge_point_id

    def taken_evse_id(self, charge_point_id: str) -> str | None:
        """An EvseID an unlisted charger would get that belongs to another charger, or None.

        With a template like ``{operator}*E{charge_point}*{evse}`` the unlisted ID ``0001``
        would otherwise report statuses for the listed ``CP-0001``'s ``DE*ABC*E0001*1``.
        """
        if charge_point_id in self._chargers or self._template is None:
            return None
        for key in range(1, self._template_max + 1):
            candidate = self._from_template(charge_point_id, key)
            if (
                candidate is not None
                and self._owners.get(same_evse(candidate), charge_point_id) != charge_point_id
            ):
                return candidate
        return None

    def admit(self, charge_point_id: str) -> bool:
        """Whether a charger may connect as far as the cap on unlisted chargers goes.

        An unlisted charger admitted takes its EvseIDs (1 to ``template_max_evses``) from then on: a
        second ID that would get the same ones (``CP-1`` and ``CP1``) is refused.
        """
        if charge_point_id in self._chargers or charge_point_id in self._unlisted:
            return True
        if len(self._unlisted) >= self.max_unlisted:
            return False
        self._unlisted.add(charge_point_id)
        for key in range(1, self._template_max + 1):
            self.evse_id(charge_point_id, key)
        return True

    def evse_id(self, charge_point_id: str, key: int) -> str | None:
        """EvseID of connector/EVSE ``key`` of a charger, or None if it has none."""
        listed = self._chargers.get(charge_point_id)
        if listed is not None:
            return listed.get(key)
        if self._template is None or not 1 <= key <= self._template_max:
            return None
        cached = self._templated.get((charge_point_id, key), _MISSING)
        if cached is not _MISSING:
            return cached
        result = self._from_template(charge_point_id, key)
        if result is not None:
            owner = self._owners.setdefault(same_evse(result), charge_point_id)
            if owner != charge_point_id:
                result = None  # another charger's EVSE: this report stays unmapped
        self._templated[(charge_point_id, key)] = result
        return result

    def _from_template(self, charge_point_id: str, key: int) -> str | None:
        assert self._template is not None
        candidate = self._template.format(
            operator=self._operator_id,
            charge_point=_NOT_ALNUM.sub("", charge_point_id),
            evse=key,
        )
        if EVSE_ID_RE.match(candidate) and evse_belongs_to(candidate, self._operator_id):
            return candidate
        return None

    def configured_evse_ids(self) -> dict[str, str]:
        """Every configured EvseID → its charge point ID (templated ones are learned at runtime)."""
        return {
            evse_id: cp_id for cp_id, evses in self._chargers.items() for evse_id in evses.values()
        }
