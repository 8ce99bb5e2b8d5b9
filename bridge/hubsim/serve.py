"""The hub simulator on its own (`oicp-bridge hub-sim`): its TLS context and server loop."""

from __future__ import annotations

import asyncio
import gc
import ssl
from collections.abc import Callable
from pathlib import Path

import structlog

from bridge.hubsim.simulator import HubSimulator, ReceivedPush
from bridge.hubsim.statefile import StateFile


def server_ssl_context(
    cert: Path, key: Path | None = None, client_ca: Path | None = None
) -> ssl.SSLContext:
    """Server TLS context; with ``client_ca`` a client certificate signed by it is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key) if key is not None else None)
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def run_hub_sim(
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    *,
    ready: Callable[[int], None] | None = None,
    state_file: StateFile | None = None,
) -> None:
    """Serve the simulator until cancelled, logging one ``hubsim.push`` line per push."""
    log = structlog.get_logger("bridge.hubsim")

    def log_push(push: ReceivedPush) -> None:
        log.info(
            "hubsim.push",
            endpoint=push.endpoint,
            operator_id=push.operator_id,
            action=push.action,
            records=len(push.records),
            http_status=push.http_status,
            code=push.code,
        )

    sim = HubSimulator(host, port, ssl_context=ssl_context, on_push=log_push, state_file=state_file)
    async with sim:
        log.info("hubsim.started", url=sim.base_url,
                 state_file=str(state_file.path) if state_file else None)  # fmt: skip
        if ready is not None:
            ready(sim.port)
        kept = 0
        while True:  # until cancelled
            await asyncio.sleep(1.0)
            if len(sim.received) != kept:
                # Every push is kept (GET /sim/received); with tens of thousands, each full
                # collection of the cyclic GC scanned them all and stopped this loop for
                # 50-100 ms, which delayed the arrival times it records (bench/RESULTS.md).
                # Frozen objects are never scanned again; kept pushes hold no reference cycles,
                # so /sim/reset still frees them by reference counting.
                kept = len(sim.received)
                gc.freeze()
