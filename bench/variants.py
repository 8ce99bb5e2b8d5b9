"""Run ``bridge`` with one experimental change applied from outside, to measure a proposal.

For benchmarking only: each tweak patches the bridge in this process before it starts, so a
proposed design change can be measured before anyone edits bridge/.

    python -m bench.variants --uvloop --backlog=4096 --no-compression -- run --config X.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import gc
import sys
import time
from typing import Any


def main() -> int:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m bench.variants")
    parser.add_argument("--uvloop", action="store_true", help="run the event loop on uvloop")
    parser.add_argument("--backlog", type=int, help="listen backlog of the OCPP server")
    parser.add_argument(
        "--no-compression", action="store_true", help="do not negotiate permessage-deflate"
    )
    parser.add_argument(
        "--gc-threshold", type=int, help="first-generation threshold of the cyclic GC"
    )
    parser.add_argument(
        "--gc-report", action="store_true", help="print the time spent in the GC at exit"
    )
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() once the bridge has started"
    )
    parser.add_argument(
        "--auth-inline",
        action="store_true",
        help="run password checks in the event loop instead of worker threads",
    )
    parser.add_argument(
        "--auth-queue-limit", type=float, help="seconds of queued password checks before HTTP 503"
    )
    parser.add_argument("--auth-threads", type=int, help="password checks run at once")
    parser.add_argument(
        "--gc-garbage",
        action="store_true",
        help="count the types of objects the cyclic GC frees (slow), print at exit",
    )
    parser.add_argument(
        "--slow-callbacks",
        type=float,
        help="print every event-loop callback that runs longer than this many ms, at exit",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval in ms: how long a thread that finished its work (the store's "
        "writer) may wait for the GIL while the event loop runs",
    )
    args = parser.parse_args(argv[:split])
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval / 1000)
    if args.auth_inline or args.auth_queue_limit is not None or args.auth_threads:
        _tweak_auth(inline=args.auth_inline, limit=args.auth_queue_limit, threads=args.auth_threads)
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, 50, 100)
    if args.gc_report:
        _report_gc()
    if args.gc_garbage:
        _report_garbage()
    if args.slow_callbacks:
        _report_slow_callbacks(args.slow_callbacks / 1000)
    if args.gc_freeze:
        from bridge.app import Bridge

        start = Bridge.start

        async def start_then_freeze(self: Bridge) -> None:
            await start(self)
            gc.collect()
            gc.freeze()  # settings, registry and restored state: never garbage, never scanned

        Bridge.start = start_then_freeze  # type: ignore[method-assign]

    from bridge.ocpp import server

    extra: dict[str, Any] = {}
    if args.backlog:
        extra["backlog"] = args.backlog
    if args.no_compression:
        extra["compression"] = None
    if extra:
        server.serve = functools.partial(server.serve, **extra)  # type: ignore[attr-defined]
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    from bridge.cli import main as bridge_main

    return bridge_main(argv[split + 1 :])


def _tweak_auth(*, inline: bool, limit: float | None, threads: int | None) -> None:
    from bridge.ocpp import auth

    if inline:

        async def run_inline(self: Any, stored: Any, password: bytes) -> bool:
            ok, seconds = stored.timed_verify(password)  # blocks the event loop
            self.seconds_per_work += (seconds / stored.work - self.seconds_per_work) * 0.2
            await asyncio.sleep(0)
            return bool(ok)

        auth.CheckQueue.run = run_inline  # type: ignore[method-assign]
    if limit is not None or threads:
        init = auth.CheckQueue.__init__

        def init_tweaked(self: Any, default_limit: float, **kwargs: Any) -> None:
            if threads:
                kwargs["parallel"] = threads
            init(self, default_limit if limit is None else limit, **kwargs)

        auth.CheckQueue.__init__ = init_tweaked  # type: ignore[method-assign]


def _report_gc() -> None:
    spent = [0.0, 0.0, 0.0]
    runs = [0, 0, 0]
    started: list[float] = [0.0]

    long: list[str] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            took = time.perf_counter() - started[0]
            spent[info["generation"]] += took
            runs[info["generation"]] += 1
            if took > 0.005:
                long.append(f"gc: {time.monotonic():.3f} gen {info['generation']} "
                            f"{took * 1000:.1f} ms collected {info['collected']}")  # fmt: skip

    gc.callbacks.append(callback)
    atexit.register(
        lambda: print(
            *long,
            f"gc: collections {runs}, seconds {[round(x, 3) for x in spent]}",
            sep="\n",
            file=sys.stderr,
            flush=True,
        )
    )


def _report_garbage() -> None:
    """What the cyclic GC frees: reference cycles made per message are latency spikes later."""
    from collections import Counter

    counts: Counter[str] = Counter()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and gc.garbage:
            counts.update(type(o).__qualname__ for o in gc.garbage)
            gc.garbage.clear()

    gc.callbacks.append(callback)
    atexit.register(
        lambda: print(
            *(f"garbage: {n} {name}" for name, n in counts.most_common(40)),
            sep="\n",
            file=sys.stderr,
            flush=True,
        )
    )


def _report_slow_callbacks(limit: float) -> None:
    """Time every callback the loop runs; the slow ones explain latency tails.

    Each is reported with its wall time and the CPU time the loop's thread spent in it: a slow
    callback that used little CPU waited (descheduled on a busy machine, the GIL held by another
    thread), one that used much did work.
    """
    slow: list[tuple[float, float, float, str]] = []
    run = asyncio.events.Handle._run

    def timed(self: asyncio.events.Handle) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        run(self)
        spent = time.perf_counter() - t0
        if spent > limit:
            cpu = time.thread_time() - c0
            owner = getattr(self._callback, "__self__", None)
            coro = owner.get_coro() if isinstance(owner, asyncio.Task) else None
            what = getattr(coro, "__qualname__", None) or repr(self)
            slow.append((time.monotonic(), spent, cpu, what[:300]))

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]

    def report() -> None:
        for at, spent, cpu, what in slow:
            print(f"slow: {at:.3f} {spent * 1000:.1f} ms (cpu {cpu * 1000:.1f} ms) {what}",
                  file=sys.stderr)  # fmt: skip
        print(f"slow callbacks: {len(slow)}", file=sys.stderr, flush=True)

    atexit.register(report)


if __name__ == "__main__":
    raise SystemExit(main())
