"""What EVSE networks cost the one lane: the decision per request, and a recomputation.

The lane decides before every hub request (``bridge.delivery.lane.next_step``); with EVSE
networks it also asks :meth:`NetworkPushes.due`, answered from a cache that is rebuilt only
when a network, a station or the hub's knowledge of a grouped EVSE changed. This measures, in
this process and with no I/O: the decision with no network, with ``--networks`` networks of
``--evses`` EVSEs each (cache warm), and one rebuild of the cache. ``--rounds`` rounds, median
and spread (the machine may be shared).

    python -m bench.networks_micro [--networks 10] [--evses 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

from bridge.catalog.catalog import Catalog, Entry
from bridge.catalog.enums import Source
from bridge.catalog.networks import NetworkBody
from bridge.delivery.lane import FullLoadRequests, next_step
from bridge.delivery.networks import NetworkPushes
from bridge.delivery.outbox import Outbox
from bridge.ratelimit import SlidingWindow
from bridge.store.base import AssignmentRow, EvseRow


class NoStore:
    def put_assignment(self, row: AssignmentRow) -> None:
        pass

    def put_evse(self, row: EvseRow) -> None:
        pass


class Everything:
    def knows(self, evse_id: str) -> bool:
        return True


def setup(networks: int, evses: int) -> tuple[NetworkPushes, Outbox]:
    catalog = Catalog()
    pushes = NetworkPushes(catalog, Everything(), NoStore())
    now = datetime.now(UTC)
    for n in range(networks):
        ids = [f"DE*ABC*E{n}*{k}" for k in range(evses)]
        groups = [{"name": f"G{g}", "evses": ids[g::10]} for g in range(10)]
        body = NetworkBody.model_validate({"id": f"N{n}", "groups": groups, "last_updated": now})
        catalog.networks[body.id] = Entry(body, Source.API, 1)
        # Acknowledged as it is: nothing due, the common case between changes.
        pushes.acked[body.id] = {e: (f"G{k % 10}", 0.0) for k, e in enumerate(ids)}
    outbox = Outbox(NoStore())  # type: ignore[arg-type]
    return pushes, outbox


def decisions(pushes: NetworkPushes | None, outbox: Outbox, count: int) -> float:
    """Seconds per decision."""
    limiter, full = SlidingWindow(10**9, 60.0), FullLoadRequests()
    started = time.perf_counter()
    for n in range(count):
        next_step(hold_until=0.0, full_load=full, outbox=outbox, limiter=limiter,
                  now=float(n), networks=pushes)  # fmt: skip
    return (time.perf_counter() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", type=int, default=10)
    parser.add_argument("--evses", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=200_000)
    args = parser.parse_args()
    pushes, outbox = setup(args.networks, args.evses)
    rows: dict[str, list[float]] = {"decision, no network": [], "decision, networks": [],
                                    "rebuild of the cache": [],
                                    "all first inserts (cold start)": []}  # fmt: skip
    for _ in range(args.rounds):
        rows["decision, no network"].append(decisions(None, outbox, args.count))
        pushes.changed()
        pushes.due(0.0)  # warm
        rows["decision, networks"].append(decisions(pushes, outbox, args.count))
        started = time.perf_counter()
        pushes.changed()
        pushes.due(0.0)
        rows["rebuild of the cache"].append(time.perf_counter() - started)
        # A cold start: every grouped EVSE's first insert acknowledged, one decision after each.
        pushes.changed()
        pushes.due(0.0)
        ids = [e for entry in pushes.catalog.networks.values()
               for g in entry.body.groups for e in g.evses]  # fmt: skip
        started = time.perf_counter()
        for evse_id in ids:
            pushes.hub_learned(evse_id)
            pushes.due(time.monotonic())
        rows["all first inserts (cold start)"].append(time.perf_counter() - started)
    print(f"{args.networks} networks x {args.evses} EVSEs, {args.rounds} rounds")
    print("| what | median | min | max |\n|---|---:|---:|---:|")
    for name, values in rows.items():
        scale, unit = (1e6, "µs") if max(values) < 1e-3 else (1e3, "ms")
        print(
            f"| {name} | {statistics.median(values) * scale:.2f} {unit} | "
            f"{min(values) * scale:.2f} {unit} | {max(values) * scale:.2f} {unit} |"
        )


if __name__ == "__main__":
    main()
