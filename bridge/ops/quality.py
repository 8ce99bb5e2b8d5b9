"""``oicp-bridge data-quality [--json] [--fail-under SCORE]``: the data-quality report offline.

Reads the catalog from the state database as ``catalog export`` does (safe while the bridge
runs) and prints the report of ``GET /api/v2/data-quality``: a table of the EVSEs, each finding,
and the operator's summary. Findings alone never fail the command; ``--fail-under`` makes it
exit 1 when the operator's mean score is below the given one (for an operator's CI).
"""

from __future__ import annotations

import json
import sys
from typing import IO

from bridge import COMMAND
from bridge.catalog.quality import Report, report
from bridge.config import Settings
from bridge.errors import EXIT_FAILED, EXIT_OK

COLUMNS = ("EVSE ID", "STATION", "LOCATION", "SCORE", "COMPLETE", "FINDINGS")


def data_quality(
    settings: Settings,
    *,
    as_json: bool = False,
    fail_under: float | None = None,
    out: IO[str] | None = None,
    err: IO[str] | None = None,
) -> int:
    from bridge.app import Bridge

    out, err = out or sys.stdout, err or sys.stderr  # as they are now (tests replace them)

    bridge = Bridge(settings)
    bridge.load_state()  # reading only
    try:
        result = report(bridge.catalog, settings.catalog.operator_defaults)
    finally:
        bridge.store.close_unwritten()
    if as_json:
        print(json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False), file=out)
    else:
        print(render(result), file=out)
    mean = result.summary.score_mean
    if fail_under is not None and (mean if mean is not None else 100) < fail_under:
        print(f"{COMMAND}: the mean score {mean} is below --fail-under {fail_under:g}", file=err)
        return EXIT_FAILED
    return EXIT_OK


def render(result: Report) -> str:
    rows = [COLUMNS]
    for e in result.evses:
        codes = ",".join(sorted({f.code for f in e.findings})) or "-"
        rows.append((e.evse_id, e.station_id, e.location_id or "-", str(e.score),
                     f"{e.completeness}%", codes))  # fmt: skip
    widths = [max(len(row[n]) for row in rows) for n in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    details = [
        f"  {e.evse_id}  {f.severity.value:<7}  {f.field}: {f.message} [{f.code}]"
        for e in result.evses for f in e.findings
    ]  # fmt: skip
    if details:
        lines += ["", "findings:", *details]
    s = result.summary
    lines += ["", f"{s.evses} EVSEs, {s.evses_with_findings} with findings ({s.errors} errors, "
              f"{s.warnings} warnings)"]  # fmt: skip
    if s.score_mean is not None:
        lines.append(f"score: mean {s.score_mean:g}, min {s.score_min}; completeness: mean "
                     f"{s.completeness_mean:g}%")  # fmt: skip
    if s.findings_by_code:
        lines.append("by code: " + ", ".join(f"{k} {v}" for k, v in s.findings_by_code.items()))
    if s.missing_by_field:
        lines.append("missing: " + ", ".join(f"{k} {v}" for k, v in s.missing_by_field.items()))
    return "\n".join(lines)
