"""A small central system (CSMS) to put behind the bridge in proxy mode: demos and tests only.

Built the ``ocpp`` package's documented way (``ChargePoint`` subclasses with ``@on`` handlers,
its own schema validation, websockets ``serve``), so it shares no code with the bridge's OCPP
endpoint. It answers what a charging session needs: BootNotification, Heartbeat,
StatusNotification, NotifyEvent, Authorize, StartTransaction / StopTransaction / MeterValues
(1.6) and TransactionEvent / MeterValues (2.0.1), and it can send RemoteStartTransaction (1.6) or
RequestStartTransaction (2.0.1) to a connected charger.

    oicp-bridge csms-sim --port 9200 [--password CP-0001=SECRET ...] [--remote-start-after 30]
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from ssl import SSLContext
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

import structlog
from ocpp import exceptions
from ocpp.routing import on as _on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

log = structlog.get_logger("bridge.csms_sim")

SUBPROTOCOLS = [Subprotocol("ocpp2.0.1"), Subprotocol("ocpp1.6")]
ACCEPTED = {"status": "Accepted"}
F = TypeVar("F", bound=Callable[..., Any])


def on(action: str) -> Callable[[F], F]:
    """The ``ocpp`` package's ``@on`` route decorator, typed."""
    decorator: Callable[[F], F] = _on(action)
    return decorator


@dataclass
class Handshake:
    """What a connecting client sent (tests: did the proxy offer and forward the right things)."""

    charge_point_id: str
    offered: list[str]
    authorization: str | None
    forwarded_for: str | None
    answered: int
    client_cert_cn: str | None = None  # subject CN of a TLS client certificate


@dataclass
class Faults:
    """Misbehaviour on request (tests): slow or refused StatusNotifications."""

    status_delay: float = 0.0
    status_error: str | None = None  # an OCPP error code to answer StatusNotification with


@dataclass
class Message:
    charge_point_id: str
    action: str
    payload: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Handlers:
    """What both versions share: record every message, apply the faults."""

    sim: CsmsSimulator
    id: str

    def _got(self, action: str, payload: dict[str, Any]) -> None:
        self.sim.received.append(Message(self.id, action, payload))
        log.info("csms_sim.message", charge_point_id=self.id, action=action)

    async def _status(self, payload: dict[str, Any]) -> None:
        faults = self.sim.faults
        if faults.status_delay:
            await asyncio.sleep(faults.status_delay)
        if faults.status_error is not None:
            error: type[exceptions.OCPPError] = _ERRORS.get(
                faults.status_error, exceptions.GenericError
            )
            raise error(description="refused by the CSMS simulator")
        self._got("StatusNotification", payload)


class Csms16(_Handlers, ChargePoint16):  # type: ignore[misc]
    @on(Action16.boot_notification)
    async def on_boot(self, **kwargs: Any) -> result16.BootNotification:
        self._got("BootNotification", kwargs)
        self.sim.booted(self.id)
        return result16.BootNotification(
            current_time=utc_now(), interval=self.sim.heartbeat_interval, status="Accepted"
        )

    @on(Action16.heartbeat)
    async def on_heartbeat(self, **kwargs: Any) -> result16.Heartbeat:
        self._got("Heartbeat", kwargs)
        return result16.Heartbeat(current_time=utc_now())

    @on(Action16.status_notification)
    async def on_status(self, **kwargs: Any) -> result16.StatusNotification:
        await self._status(kwargs)
        return result16.StatusNotification()

    @on(Action16.authorize)
    async def on_authorize(self, **kwargs: Any) -> result16.Authorize:
        self._got("Authorize", kwargs)
        return result16.Authorize(id_tag_info=ACCEPTED)

    @on(Action16.start_transaction)
    async def on_start(self, **kwargs: Any) -> result16.StartTransaction:
        self._got("StartTransaction", kwargs)
        return result16.StartTransaction(
            transaction_id=next(self.sim.transaction_ids), id_tag_info=ACCEPTED
        )

    @on(Action16.meter_values)
    async def on_meter_values(self, **kwargs: Any) -> result16.MeterValues:
        self._got("MeterValues", kwargs)
        return result16.MeterValues()

    @on(Action16.stop_transaction)
    async def on_stop(self, **kwargs: Any) -> result16.StopTransaction:
        self._got("StopTransaction", kwargs)
        return result16.StopTransaction(id_tag_info=ACCEPTED)


class Csms201(_Handlers, ChargePoint201):  # type: ignore[misc]
    @on(Action201.boot_notification)
    async def on_boot(self, **kwargs: Any) -> result201.BootNotification:
        self._got("BootNotification", kwargs)
        self.sim.booted(self.id)
        return result201.BootNotification(
            current_time=utc_now(), interval=self.sim.heartbeat_interval, status="Accepted"
        )

    @on(Action201.heartbeat)
    async def on_heartbeat(self, **kwargs: Any) -> result201.Heartbeat:
        self._got("Heartbeat", kwargs)
        return result201.Heartbeat(current_time=utc_now())

    @on(Action201.status_notification)
    async def on_status(self, **kwargs: Any) -> result201.StatusNotification:
        await self._status(kwargs)
        return result201.StatusNotification()

    @on(Action201.notify_event)
    async def on_notify_event(self, **kwargs: Any) -> result201.NotifyEvent:
        self._got("NotifyEvent", kwargs)
        return result201.NotifyEvent()

    @on(Action201.authorize)
    async def on_authorize(self, **kwargs: Any) -> result201.Authorize:
        self._got("Authorize", kwargs)
        return result201.Authorize(id_token_info=ACCEPTED)

    @on(Action201.transaction_event)
    async def on_transaction_event(self, **kwargs: Any) -> result201.TransactionEvent:
        self._got("TransactionEvent", kwargs)
        return result201.TransactionEvent()

    @on(Action201.meter_values)
    async def on_meter_values(self, **kwargs: Any) -> result201.MeterValues:
        self._got("MeterValues", kwargs)
        return result201.MeterValues()


_ERRORS: dict[str, type[exceptions.OCPPError]] = {
    "InternalError": exceptions.InternalError,
    "NotSupported": exceptions.NotSupportedError,
    "GenericError": exceptions.GenericError,
    "SecurityError": exceptions.SecurityError,
}


class CsmsSimulator:
    """The simulated CSMS: ``async with CsmsSimulator() as csms: ... csms.url``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        passwords: Mapping[str, str] | None = None,
        known: set[str] | None = None,
        heartbeat_interval: int = 60,
        remote_start_after: float | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        self.host, self.requested_port = host, port
        self.ssl = ssl  # wss (tests of the proxy's TLS trust and client certificate)
        self.passwords = dict(passwords or {})  # charge point ID → Basic password (else: none)
        self.known = known  # IDs answered 404 when not in it (None: every ID is known)
        self.heartbeat_interval = heartbeat_interval
        self.remote_start_after = remote_start_after
        self.faults = Faults()
        self.received: list[Message] = []
        self.handshakes: list[Handshake] = []
        self.charge_points: dict[str, Csms16 | Csms201] = {}
        self.connections: dict[str, ServerConnection] = {}
        self.closed: list[tuple[str, int | None, str | None]] = []  # (id, code, reason)
        self.transaction_ids = itertools.count(1)
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.requested_port,
            subprotocols=SUBPROTOCOLS,
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            ssl=self.ssl,
        )
        log.info("csms_sim.started", url=self.url.replace("{charge_point_id}", "{id}"),
                 passwords=len(self.passwords))  # fmt: skip

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        """The proxy's URL template for this CSMS."""
        scheme = "wss" if self.ssl is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}/ocpp/{{charge_point_id}}"

    # -- what tests and demos ask of it ------------------------------------------------------
    def actions(self, charge_point_id: str) -> list[str]:
        return [m.action for m in self.received if m.charge_point_id == charge_point_id]

    async def remote_start(
        self, charge_point_id: str, *, evse: int = 1, id_tag: str = "TAG1"
    ) -> Any:
        """RemoteStartTransaction (1.6) / RequestStartTransaction (2.0.1); the charger's answer."""
        cp = self.charge_points[charge_point_id]
        log.info("csms_sim.remote_start", charge_point_id=charge_point_id, evse=evse)
        if isinstance(cp, Csms16):
            return await cp.call(call16.RemoteStartTransaction(id_tag=id_tag, connector_id=evse))
        return await cp.call(
            call201.RequestStartTransaction(
                id_token={"id_token": id_tag, "type": "ISO14443"},
                remote_start_id=next(self.transaction_ids), evse_id=evse,
            )
        )  # fmt: skip

    async def disconnect(self, charge_point_id: str, code: int = 1000, reason: str = "") -> None:
        """Close a charger's connection from the CSMS side."""
        await self.connections[charge_point_id].close(code, reason)

    def booted(self, charge_point_id: str) -> None:
        if self.remote_start_after is not None:
            task = asyncio.create_task(self._remote_start_later(charge_point_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _remote_start_later(self, charge_point_id: str) -> None:
        assert self.remote_start_after is not None
        await asyncio.sleep(self.remote_start_after)
        with contextlib.suppress(Exception):  # the charger may be gone meanwhile
            answer = await self.remote_start(charge_point_id)
            log.info("csms_sim.remote_start_answered", charge_point_id=charge_point_id,
                     status=getattr(answer, "status", None))  # fmt: skip

    # -- websocket ---------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        cp_id = _charge_point_id(request.path)
        headers = request.headers
        offered = [v.strip() for h in headers.get_all("Sec-WebSocket-Protocol")
                   for v in h.split(",")]  # fmt: skip
        authorization = headers.get("Authorization")
        answer = self._decide(cp_id, authorization)
        ssl_object = connection.transport.get_extra_info("ssl_object")
        peercert = ssl_object.getpeercert() if ssl_object is not None else None
        cn = next((v for rdn in (peercert or {}).get("subject", ()) for k, v in rdn
                   if k == "commonName"), None)  # fmt: skip
        self.handshakes.append(
            Handshake(cp_id, offered, authorization, headers.get("X-Forwarded-For"), answer, cn)
        )
        if answer == 101:
            return None
        if answer == 401:
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "Unauthorized\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="CSMS simulator"'
            return response
        return connection.respond(HTTPStatus(answer), HTTPStatus(answer).phrase + "\n")

    def _decide(self, cp_id: str, authorization: str | None) -> int:
        if not cp_id or (self.known is not None and cp_id not in self.known):
            return 404
        password = self.passwords.get(cp_id)
        if password is None:
            return 101
        return 101 if _basic(authorization) == (cp_id, password) else 401

    async def _handle(self, connection: ServerConnection) -> None:
        cp_id = _charge_point_id(connection.request.path if connection.request else "")
        if connection.subprotocol is None:
            await connection.close(1002, "No supported OCPP subprotocol")
            return
        cls: type[Csms16 | Csms201] = Csms16 if connection.subprotocol == "ocpp1.6" else Csms201
        cp = cls(cp_id, connection, response_timeout=10)
        cp.sim = self
        self.charge_points[cp_id] = cp
        self.connections[cp_id] = connection
        log.info("csms_sim.connected", charge_point_id=cp_id, protocol=connection.subprotocol)
        try:
            await cp.start()
        except ConnectionClosed:
            pass
        finally:
            self.closed.append((cp_id, connection.close_code, connection.close_reason))
            log.info("csms_sim.disconnected", charge_point_id=cp_id, code=connection.close_code,
                     reason=connection.close_reason)  # fmt: skip


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    return next((p for p in SUBPROTOCOLS if p in offered), None)


def _charge_point_id(path: str) -> str:
    return unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1])


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


async def run_csms_sim(
    host: str,
    port: int,
    *,
    passwords: Mapping[str, str],
    heartbeat_interval: int,
    remote_start_after: float | None,
) -> None:
    """Serve until cancelled (``oicp-bridge csms-sim``)."""
    async with CsmsSimulator(
        host, port, passwords=passwords, heartbeat_interval=heartbeat_interval,
        remote_start_after=remote_start_after,
    ):  # fmt: skip
        await asyncio.Event().wait()
