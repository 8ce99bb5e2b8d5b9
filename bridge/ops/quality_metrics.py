"""The data-quality gauges of /metrics: the report of ``GET /api/v2/data-quality`` in numbers.

Assessing an EVSE costs 20 to 40 µs of CPU when the operator facts are set and up to 0.1 ms
when every EVSE has findings: 0.2 to 1 s for 10,000 EVSEs, too much for every scrape and far
too much for the event loop. So the figures are kept with the catalog revision they were made
from, and made again only by a scrape that finds the catalog changed since (every write goes
through ``Catalog.apply``, which counts the revision); then in a worker thread, from the
per-station reports the API keeps too, so only stations whose body, location or operator
defaults changed are assessed again. A charger's messages never change the catalog: nothing of
this runs for them.

Measured with 10,000 EVSEs and the service's GC settings (``bridge.eventloop.tune_gc``): a
first run took 0.2 s of CPU and delayed the event loop by at most 17 ms; a scrape after one
station's write 40 ms (walking the kept reports); an unchanged catalog nothing. With the default
GC thresholds a generation-2 collection in the thread stalled the loop for 100+ ms.
"""

from __future__ import annotations

import asyncio

import structlog

from bridge.catalog.catalog import Catalog
from bridge.catalog.facts import OperatorFacts
from bridge.catalog.model import LocationBody, StationBody
from bridge.catalog.quality import Figures, Kept, assess_kept, figures, stations_of

log = structlog.get_logger("bridge.ops")

__all__ = ["QualityGauges"]


class QualityGauges:
    """The figures of the catalog's data-quality report, made again when the catalog changed."""

    def __init__(self, catalog: Catalog, defaults: OperatorFacts, kept: Kept) -> None:
        self.catalog = catalog
        self.defaults = defaults
        self.kept = kept
        #: What /metrics shows; None until the first scrape made them.
        self.figures: Figures | None = None
        #: How many times the figures were made (tests see that an unchanged catalog costs none).
        self.made = 0
        self._made_from: tuple[int, OperatorFacts] | None = None
        self._making: asyncio.Task[bool] | None = None

    def current(self) -> bool:
        made = self._made_from
        return made is not None and made[0] == self.catalog.revision and made[1] is self.defaults

    async def refresh(self) -> None:
        """Make the figures current (before a scrape is rendered). Scrapes at the same time share
        one run; the second round is for a change that came while a run was under way."""
        for _ in range(2):
            if self.current():
                return
            if self._making is None:
                self._making = asyncio.create_task(self._make(), name="quality-metrics")
            # Shielded: a scraper that hangs up does not cancel the run the others wait for.
            if not await asyncio.shield(self._making):
                return  # failed (logged): this scrape has the last figures, the next tries again

    async def _make(self) -> bool:
        made_from = (self.catalog.revision, self.defaults)
        stations = stations_of(self.catalog)  # on the loop: the catalog's dicts change there
        try:
            self.figures = await asyncio.to_thread(_figures, stations, made_from[1], self.kept)
        except Exception:
            # The other metrics matter more than these: the scrape goes on with the last ones.
            log.exception("ops.hook_failed", hook="data_quality_metrics")
            return False
        else:
            self._made_from = made_from
            self.made += 1
            return True
        finally:
            self._making = None


def _figures(
    stations: list[tuple[StationBody, LocationBody | None]], defaults: OperatorFacts, kept: Kept
) -> Figures:
    return figures(assess_kept(stations, defaults, kept))
