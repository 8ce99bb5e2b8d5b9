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
        template_max_evses: int = 8,
    ) -> None:
        self._chargers = {cp: dict(evses) for cp, evses in chargers.items()}
        self._operator_id = operator_id
        self._template = template if allow_unlisted else None
        # A charger not listed names its own numbers: only 1..max become EVSEs at the hub.
        self._template_max = template_max_evses
        self._templated: dict[tuple[str, int], str | None] = {}  # formatting + regex per message

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(
            {cp: c.evses for cp, c in settings.chargers.items()},
            settings.oicp.operator_id,
            template=settings.ocpp.evse_id_template,
            allow_unlisted=settings.ocpp.allow_unlisted,
            template_max_evses=settings.ocpp.template_max_evses,
        )

    def knows(self, charge_point_id: str) -> bool:
        """Whether a charger with this ID may connect."""
        return charge_point_id in self._chargers or self._template is not None

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
