"""The baseline: a minimal central system written the ``ocpp`` package's documented way.

A ``ChargePoint`` subclass per version with ``@on`` handlers, the package's defaults (schema
validation on, ``ocpp.messages.ASYNC_VALIDATION`` left at its default, i.e. validation in the
default thread pool), websockets' ``serve`` with its defaults (permessage-deflate offered), no
persistence and no hub: StatusNotifications only land in a dict. Logging is not configured, so
the package's per-frame INFO lines are dropped by Python's default WARNING level.

It answers the same load as the bridge so the benchmark can state every figure as a ratio.

    python -m bench.baseline_csms --port 9000 [--heartbeat-interval 60] [--auth]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import signal
from collections.abc import Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v16.enums import RegistrationStatus
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from ocpp.v201.enums import RegistrationStatusEnumType
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

SUBPROTOCOLS = [Subprotocol("ocpp2.0.1"), Subprotocol("ocpp1.6")]
HEARTBEAT_INTERVAL = 60
#: (charge point, evse/connector key, connector) -> last status; the baseline's whole "state".
STATUSES: dict[tuple[str, int, int], str] = {}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Baseline16(ChargePoint16):
    @on(Action16.boot_notification)
    async def on_boot_notification(self, **kwargs: Any) -> result16.BootNotification:
        return result16.BootNotification(
            current_time=utc_now(),
            interval=HEARTBEAT_INTERVAL,
            status=RegistrationStatus.accepted,
        )

    @on(Action16.heartbeat)
    async def on_heartbeat(self, **kwargs: Any) -> result16.Heartbeat:
        return result16.Heartbeat(current_time=utc_now())

    @on(Action16.status_notification)
    async def on_status_notification(
        self, connector_id: int, error_code: str, status: str, **kwargs: Any
    ) -> result16.StatusNotification:
        STATUSES[(self.id, connector_id, connector_id)] = status
        return result16.StatusNotification()


class Baseline201(ChargePoint201):
    @on(Action201.boot_notification)
    async def on_boot_notification(self, **kwargs: Any) -> result201.BootNotification:
        return result201.BootNotification(
            current_time=utc_now(),
            interval=HEARTBEAT_INTERVAL,
            status=RegistrationStatusEnumType.accepted,
        )

    @on(Action201.heartbeat)
    async def on_heartbeat(self, **kwargs: Any) -> result201.Heartbeat:
        return result201.Heartbeat(current_time=utc_now())

    @on(Action201.status_notification)
    async def on_status_notification(
        self, timestamp: str, connector_status: str, evse_id: int, connector_id: int, **kwargs: Any
    ) -> result201.StatusNotification:
        STATUSES[(self.id, evse_id, connector_id)] = connector_status
        return result201.StatusNotification()


def charge_point_id(path: str) -> str:
    return unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1])


def make_process_request(check_auth: bool) -> Any:
    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if not check_auth:
            return None
        # Basic auth as in OCPP security profile 1: the user name is the charge point ID.
        header = request.headers.get("Authorization", "")
        try:
            scheme, _, token = header.partition(" ")
            user, _, _password = base64.b64decode(token).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            user, scheme = "", ""
        if scheme.lower() != "basic" or user != charge_point_id(request.path):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
        return None

    return process_request


def select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    return next((p for p in SUBPROTOCOLS if p in offered), None)


async def on_connect(connection: ServerConnection) -> None:
    if connection.subprotocol is None or connection.request is None:
        await connection.close(1002, "No supported OCPP subprotocol")
        return
    cls = Baseline16 if connection.subprotocol == "ocpp1.6" else Baseline201
    cp = cls(charge_point_id(connection.request.path), connection)
    with contextlib.suppress(ConnectionClosed):
        await cp.start()


async def main(host: str, port: int, check_auth: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(
        on_connect,
        host,
        port,
        subprotocols=SUBPROTOCOLS,
        select_subprotocol=select_subprotocol,
        process_request=make_process_request(check_auth),
    ):
        print(f"baseline listening on {host}:{port}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--heartbeat-interval", type=int, default=HEARTBEAT_INTERVAL)
    parser.add_argument("--auth", action="store_true", help="require Basic auth (user = CP ID)")
    args = parser.parse_args()
    HEARTBEAT_INTERVAL = args.heartbeat_interval
    asyncio.run(main(args.host, args.port, args.auth))
