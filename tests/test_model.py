"""The model-based walk (tests/model_walk.py): bounded here; ``make chaos`` runs many more.

``CHAOS_SEQUENCES`` and ``CHAOS_STEPS`` set the size, ``CHAOS_SEED`` the first seed (default:
fixed seeds here, a random one under ``make chaos``); the summary line says what was tried.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from bridge.hubsim import HubSimulator
from tests.model_walk import Stats, Walk
from tests.oicp_schema import validate_push_body

SEQUENCES = int(os.environ.get("CHAOS_SEQUENCES") or 2)
STEPS = int(os.environ.get("CHAOS_STEPS") or 25)
FIRST_SEED = int(os.environ.get("CHAOS_SEED") or 0) or None


@pytest.mark.slow
@pytest.mark.timeout(60 + SEQUENCES * STEPS * 3)
async def test_the_hub_is_never_left_wrong(tmp_path: Path) -> None:
    first = (
        FIRST_SEED
        if FIRST_SEED is not None
        else (1009 if SEQUENCES <= 2 else random.randrange(1, 10**6))
    )
    stats = Stats()
    for n in range(SEQUENCES):
        seed = first + n
        async with HubSimulator(body_validator=validate_push_body) as hub:
            workdir = tmp_path / f"walk-{seed}"
            workdir.mkdir()
            await Walk(seed, workdir, hub, stats).run(STEPS)
            assert hub.schema_errors == [], hub.schema_errors
    print(
        f"\nmodel walk: {stats.sequences} sequences (seeds {first}..{first + SEQUENCES - 1}), "
        f"{stats.steps} steps, {stats.reports} reports, {stats.faults} hub faults, "
        f"{stats.restarts} restarts, {stats.kills} SIGKILLs, {stats.full_loads_by_hand} fullLoads "
        f"by hand, {stats.hub_requests} hub requests ({stats.full_loads_at_hub} fullLoads), "
        f"{stats.checks} invariant checks: all held"
    )
