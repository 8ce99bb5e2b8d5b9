"""Simulated chargers for demos and the compose ``chargers`` profile; not for production.

Each charger connects to the bridge, boots, reports every EVSE Available and then, every
``--interval`` seconds (with jitter), moves one EVSE a step through a charging session. It
reconnects when the bridge goes away, so start order does not matter.

    python -m bridge.devtools.charger_sim --url ws://bridge:9000/ocpp CP-0001:1.6:2 CP-0002:2.0.1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
import websockets
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from bridge.devtools.csms_sim import on

log = structlog.get_logger("bridge.charger_sim")

# One session per cycle; 2.0.1 connectors only know Available / Occupied.
CYCLES = {
    "1.6": ("Available", "Preparing", "Charging", "SuspendedEV", "Charging", "Finishing"),
    "2.0.1": ("Available", "Occupied"),
}


class _Sim16(ChargePoint16):  # type: ignore[misc]
    """Accepts a CSMS's remote start (proxy mode demos); the session itself stays simulated."""

    @on(Action16.remote_start_transaction)
    async def on_remote_start(self, **kwargs: Any) -> result16.RemoteStartTransaction:
        log.info("charger_sim.remote_start", charge_point_id=self.id,
                 evse=kwargs.get("connector_id"))  # fmt: skip
        return result16.RemoteStartTransaction(status="Accepted")


class _Sim201(ChargePoint201):  # type: ignore[misc]
    @on(Action201.request_start_transaction)
    async def on_request_start(self, **kwargs: Any) -> result201.RequestStartTransaction:
        log.info("charger_sim.remote_start", charge_point_id=self.id, evse=kwargs.get("evse_id"))
        return result201.RequestStartTransaction(status="Accepted")


@dataclass(frozen=True)
class Spec:
    charge_point_id: str
    version: str = "1.6"
    evses: int = 1

    @classmethod
    def parse(cls, text: str) -> Spec:
        """``ID[:VERSION[:EVSES]]``, e.g. ``CP-0001:1.6:2``."""
        parts = text.split(":")
        version = parts[1] if len(parts) > 1 else "1.6"
        if version not in CYCLES or len(parts) > 3:
            raise argparse.ArgumentTypeError(f"{text!r}: use ID[:1.6|2.0.1[:EVSES]]")
        try:
            evses = int(parts[2]) if len(parts) > 2 else 1
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: EVSES must be a number") from None
        if evses < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: EVSES must be at least 1")
        return cls(parts[0], version, evses)


class SimCharger:
    def __init__(self, url: str, spec: Spec, interval: float, rng: random.Random) -> None:
        self.url = f"{url.rstrip('/')}/{spec.charge_point_id}"
        self.spec, self.interval, self.rng = spec, interval, rng
        self.step = dict.fromkeys(range(1, spec.evses + 1), 0)  # EVSE → position in its cycle
        self.sent = 0  # status notifications answered by the bridge

    async def run(self, steps: int | None = None) -> None:
        """Stay connected (reconnecting) until ``steps`` status changes were sent, or forever."""
        while steps is None or self.sent < steps:
            try:
                await self._session(steps)
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.warning("charger_sim.disconnected", charge_point_id=self.spec.charge_point_id,
                            error=str(exc) or type(exc).__name__)  # fmt: skip
                await asyncio.sleep(2.0)

    async def _session(self, steps: int | None) -> None:
        version = self.spec.version
        subprotocol = Subprotocol(f"ocpp{version}")
        async with websockets.connect(self.url, subprotocols=[subprotocol]) as ws:
            cls = _Sim16 if version == "1.6" else _Sim201
            cp = cls(self.spec.charge_point_id, ws, response_timeout=10)
            reader = asyncio.create_task(cp.start())
            try:
                boot = await cp.call(self._boot())
                log.info("charger_sim.booted", charge_point_id=self.spec.charge_point_id,
                         protocol=version, status=getattr(boot, "status", None))  # fmt: skip
                for evse in self.step:
                    await self._report(cp, evse)
                heartbeat = float(getattr(boot, "interval", 300) or 300)
                next_beat = time.monotonic() + heartbeat
                while steps is None or self.sent < steps:
                    await asyncio.sleep(self.interval * self.rng.uniform(0.5, 1.5))
                    if time.monotonic() >= next_beat:
                        await cp.call(call16.Heartbeat() if version == "1.6" else
                                      call201.Heartbeat())  # fmt: skip
                        next_beat = time.monotonic() + heartbeat
                    evse = self.rng.choice(list(self.step))
                    self.step[evse] = (self.step[evse] + 1) % len(CYCLES[version])
                    await self._report(cp, evse)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    def _boot(self) -> Any:
        if self.spec.version == "1.6":
            return call16.BootNotification(charge_point_model="Sim", charge_point_vendor="Bridge")
        return call201.BootNotification(
            charging_station={"model": "Sim", "vendor_name": "Bridge"}, reason="PowerUp"
        )

    async def _report(self, cp: Any, evse: int) -> None:
        status = CYCLES[self.spec.version][self.step[evse]]
        if self.spec.version == "1.6":
            request: Any = call16.StatusNotification(
                connector_id=evse, error_code="NoError", status=status
            )
        else:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            request = call201.StatusNotification(
                timestamp=now, connector_status=status, evse_id=evse, connector_id=1
            )
        await cp.call(request)
        self.sent += 1
        log.info("charger_sim.status", charge_point_id=self.spec.charge_point_id, evse=evse,
                 ocpp_status=status)  # fmt: skip


async def run_chargers(
    url: str,
    specs: Sequence[Spec],
    *,
    interval: float = 15.0,
    steps: int | None = None,
    seed: int | None = None,
) -> list[SimCharger]:
    rng = random.Random(seed)
    chargers = [SimCharger(url, spec, interval, random.Random(rng.random())) for spec in specs]
    await asyncio.gather(*(c.run(steps) for c in chargers))
    return chargers


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.devtools.charger_sim",
        description="Simulated OCPP chargers that walk their EVSEs through charging sessions.",
    )
    parser.add_argument(
        "chargers",
        nargs="+",
        type=Spec.parse,
        metavar="ID[:VERSION[:EVSES]]",
        help="e.g. CP-0001:1.6:2 or CP-0002:2.0.1 (version 1.6 or 2.0.1)",
    )
    parser.add_argument(
        "--url",
        default="ws://127.0.0.1:9000/ocpp",
        help="the bridge's OCPP endpoint without the charger ID (default: %(default)s)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=15.0,
        help="mean seconds between status changes (default: %(default)s)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="stop after this many status notifications per charger",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (repeatable runs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from bridge.ops.logging import setup_logging

    setup_logging()
    try:
        asyncio.run(run_chargers(args.url, args.chargers, interval=args.interval,
                                 steps=args.steps, seed=args.seed))  # fmt: skip
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
