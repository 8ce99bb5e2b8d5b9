"""Summarise a py-spy ``--format raw`` profile: hottest functions and where the time goes.

python -m bench.profile_summary py-spy-throughput.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# First matching rule wins; a sample is charged to the first frame (from the leaf up) that
# matches, so "logging" means time spent inside the logging stack, whoever called it.
CATEGORIES = [
    (
        "logging (structlog, stdlib logging, JSON rendering)",
        r"structlog/|logging/__init__|/json/encoder",
    ),
    ("schema validation (fastjsonschema)", r"fastjsonschema|<string>"),
    ("OICP client (httpx, pydantic bodies)", r"httpx/|httpcore/|bridge/oicp/|pydantic"),
    ("SQLite store", r"bridge/store/|sqlite3"),
    ("websockets protocol + framing", r"websockets/"),
    ("JSON decode/encode of OCPP frames", r"json/decoder|json/__init__|bridge/ocpp/rpc"),
    ("status engine + outbox + ingest", r"bridge/status/|bridge/delivery/"),
    ("OCPP session/handlers", r"bridge/ocpp/"),
    ("asyncio event loop + transports", r"asyncio/|uvloop"),
]
FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    m = FRAME.match(frame)
    if not m:
        return frame
    file = m["file"]
    for marker in ("site-packages/", "python3.11/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m['func']} ({file})"


def summarise(path: Path, top: int) -> str:
    stacks = parse(path)
    total = sum(c for _, c in stacks) or 1
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    category: Counter[str] = Counter()
    for frames, count in stacks:
        names = [short(f) for f in frames]
        self_time[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
        for frame in reversed(frames):
            hit = next((label for label, rx in CATEGORIES if re.search(rx, frame)), None)
            if hit:
                category[hit] += count
                break
        else:
            category["other"] += count
    out = [f"{total} samples", "", "| where | share |", "|---|---:|"]
    out += [f"| {k} | {v / total:.0%} |" for k, v in category.most_common()]
    out += ["", "| inclusive | function |", "|---:|---|"]
    out += [f"| {v / total:.1%} | `{k}` |" for k, v in inclusive.most_common(top)]
    out += ["", "| self | function |", "|---:|---|"]
    out += [f"| {v / total:.1%} | `{k}` |" for k, v in self_time.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.profile, args.top))


if __name__ == "__main__":
    main()
