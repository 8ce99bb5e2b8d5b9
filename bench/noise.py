"""Other processes on the machine while the benchmark runs.

Every second the CPU time of every process that is not this run's (not this process or one it
started, directly or not) is added up from /proc. A window in which they used more than a tenth
of a core is reported: its figures say as much about that work as about the servers. Processes
that start and end within one second are missed, so this is a lower bound.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
THRESHOLD = 0.1  # cores


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
        self.windows: list[tuple[float, float, float, str]] = []  # start, end, cores, top
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        before, at = await asyncio.to_thread(_processes), time.monotonic()
        while True:
            await asyncio.sleep(self.interval)
            now, t = await asyncio.to_thread(_processes), time.monotonic()
            ours = _ours(now, os.getpid())
            used: dict[int, float] = {}
            for pid, (_, cpu) in now.items():
                if pid in ours or pid not in before:
                    continue
                delta = cpu - before[pid][1]
                if delta > 0:
                    used[pid] = delta
            cores = sum(used.values()) / (t - at)
            top = max(used, key=used.__getitem__, default=None)
            self.windows.append((at, t, cores, _name(top) if top is not None else ""))
            before, at = now, t

    def between(self, start: float, end: float) -> dict[str, Any]:
        """Other processes' CPU in the windows that overlap [start, end]."""
        mine = [w for w in self.windows if w[1] > start and w[0] < end]
        busy = [w for w in mine if w[2] > THRESHOLD]
        return {
            "windows": len(mine),
            "over_tenth_core": len(busy),
            "max_cores": round(max((w[2] for w in mine), default=0.0), 2),
            "mean_cores": round(sum(w[2] for w in mine) / len(mine), 2) if mine else None,
            "busiest": sorted({w[3] for w in busy if w[3]})[:5],
        }


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return str(pid)
