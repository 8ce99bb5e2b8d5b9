"""Other processes on the machine while the benchmark runs.

Every second the CPU time of every process that is not this run's (not this process or one it
started, directly or not) is added up from /proc. Processes that start and end within one second
are missed by that sum, so the machine's busy time minus this run's processes is kept too (an
upper bound: it includes the kernel's work for the loopback traffic). A window in which the
first is above a tenth of a core, or the second above 0.3, is reported: its figures say as much
about that other work as about the servers.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
THRESHOLD = 0.1  # cores
#: The machine's busy time outside this run's processes includes the kernel's share of the
#: loopback traffic (a few hundredths of a core at the benchmark's rates, more in bursts).
REST_THRESHOLD = 0.3


def _machine_busy() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / CLK_TCK


def _processes() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds) of every process now."""
    out: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return out


def _ours(procs: dict[int, tuple[int, float]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    ours, todo = set(), [root]
    while todo:
        pid = todo.pop()
        ours.add(pid)
        todo.extend(children.get(pid, ()))
    return ours


class NoiseMonitor:
    """Samples other processes' CPU once a second until stopped."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        # start, end, other processes' cores (lower bound), machine minus ours (upper), top
        self.windows: list[tuple[float, float, float, float, str]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        before, at = await asyncio.to_thread(_processes), time.monotonic()
        busy_before = _machine_busy()
        while True:
            await asyncio.sleep(self.interval)
            now, t = await asyncio.to_thread(_processes), time.monotonic()
            busy = _machine_busy()
            ours = _ours(now, os.getpid())
            used: dict[int, float] = {}
            mine = 0.0
            for pid, (_, cpu) in now.items():
                if pid not in before:
                    continue
                delta = cpu - before[pid][1]
                if pid in ours:
                    mine += delta
                elif delta > 0:
                    used[pid] = delta
            wall = t - at
            cores = sum(used.values()) / wall
            # The machine's busy time not spent in this run's processes: also counts processes
            # that lived less than a window (a test suite starts many) and the kernel's own work
            # (loopback TCP), so it is an upper bound where ``cores`` is a lower one.
            rest = max(0.0, (busy - busy_before - mine) / wall)
            top = max(used, key=used.__getitem__, default=None)
            self.windows.append((at, t, cores, rest, _name(top) if top is not None else ""))
            before, at, busy_before = now, t, busy

    def between(self, start: float, end: float) -> dict[str, Any]:
        """Other processes' CPU in the windows that overlap [start, end]."""
        mine = [w for w in self.windows if w[1] > start and w[0] < end]
        busy = [w for w in mine if w[2] > THRESHOLD or w[3] > REST_THRESHOLD]
        return {
            "windows": len(mine),
            "over_tenth_core": len(busy),
            "max_cores": round(max((w[2] for w in mine), default=0.0), 2),
            "mean_cores": round(sum(w[2] for w in mine) / len(mine), 2) if mine else None,
            "max_rest_cores": round(max((w[3] for w in mine), default=0.0), 2),
            "mean_rest_cores": round(sum(w[3] for w in mine) / len(mine), 2) if mine else None,
            "busiest": sorted({w[4] for w in busy if w[4]})[:5],
        }


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return str(pid)
