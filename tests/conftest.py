"""Shared fixtures: a real hub simulator, a real bridge, real websocket chargers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201

from bridge.api.tokens import hash_token
from bridge.app import Bridge
from bridge.config import Settings
from bridge.hubsim import HubSimulator
from bridge.ops.logging import add_tap, remove_tap, setup_logging
from tests.oicp_schema import validate_push_body

OPERATOR = "DE*ABC"
#: API tokens of the test configuration (their hashes are in settings_for).
WRITE_TOKEN = "test-write-token-0123456789abcdef0123456789"
READ_TOKEN = "test-read-token-0123456789abcdef01234567890"
AUTH = {"Authorization": f"Token {WRITE_TOKEN}"}
READ_AUTH = {"Authorization": f"Token {READ_TOKEN}"}
OPERATOR_FACTS = {"hotline_phone": "+4930123456", "accessibility": "Free publicly accessible",
                  "payment_options": ["Contract"], "calibration_law": "Local"}  # fmt: skip
CHARGERS = {
    "CP16": {"evses": {1: "DE*ABC*E16*1", 2: "DE*ABC*E16*2"}},
    "CP201": {"evses": {1: "DE*ABC*E201*1", 2: "DE*ABC*E201*2"}},
}


@pytest.fixture(autouse=True, scope="session")
def _logging() -> None:
    setup_logging("INFO", "console")


@pytest.fixture
async def hub() -> AsyncIterator[HubSimulator]:
    """The hub simulator; validates every body it receives against the official OpenAPI."""
    async with HubSimulator(body_validator=validate_push_body) as sim:
        yield sim
    assert sim.schema_errors == [], sim.schema_errors


class Events:
    """Every log event (as a dict) logged while the ``events`` fixture is active."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def named(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("event") == event]


@pytest.fixture
def events() -> Iterator[Events]:
    sink = Events()
    add_tap(sink.records.append)
    yield sink
    remove_tap(sink.records.append)


def settings_for(tmp_path: Path, hub_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "ocpp": {"host": "127.0.0.1", "port": 0, "heartbeat_interval": 60},
        "oicp": {"base_url": hub_url, "operator_id": OPERATOR, "operator_name": "ABC Charging"},
        "state": {"database": tmp_path / "state" / "bridge.db", "group_commit_ms": 1},
        "fullload": {"enabled": False},
        "delivery": {
            "rate_limit_per_minute": 60000,
            "retry_initial": 0.05,
            "retry_max": 0.5,
            "pause_retry": 0.3,
        },
        "chargers": CHARGERS,
        # What the hub's EVSE data needs and OCPI has no field for (catalog stations' data).
        "catalog": {"operator_defaults": OPERATOR_FACTS},
        "ops": {"host": "127.0.0.1", "port": 0},
        "api": {
            "tokens": [
                {"name": "crm", "hash": hash_token(WRITE_TOKEN), "scope": "write"},
                {"name": "portal", "hash": hash_token(READ_TOKEN), "scope": "read"},
            ]
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings(**values)


@pytest.fixture
async def make_bridge(
    tmp_path: Path, hub: HubSimulator
) -> AsyncIterator[Callable[..., Awaitable[Bridge]]]:
    """Start bridges (in this process, real sockets) against the hub; all stopped at the end."""
    started: list[Bridge] = []

    async def make(**overrides: Any) -> Bridge:
        bridge = Bridge(settings_for(tmp_path, hub.base_url, **overrides))
        await bridge.start()
        started.append(bridge)
        return bridge

    yield make
    for bridge in started:
        if not bridge._stopped.is_set():
            await bridge.stop()


@pytest.fixture
async def bridge(make_bridge: Callable[..., Awaitable[Bridge]]) -> Bridge:
    return await make_bridge()


class Charger:
    """A charger made of the ``ocpp`` package's client-side ChargePoint over a real socket."""

    def __init__(self, cp: Any, ws: Any, task: asyncio.Task[None], version: str) -> None:
        self.cp, self.ws, self.task, self.version = cp, ws, task, version

    async def boot(self) -> Any:
        if self.version == "1.6":
            return await self.cp.call(
                call16.BootNotification(charge_point_model="M1", charge_point_vendor="V")
            )
        return await self.cp.call(
            call201.BootNotification(
                charging_station={"model": "M2", "vendor_name": "V"}, reason="PowerUp"
            )
        )

    async def status(self, connector: int, status: str, *, evse: int | None = None) -> Any:
        if self.version == "1.6":
            return await self.cp.call(
                call16.StatusNotification(
                    connector_id=connector, error_code="NoError", status=status
                )
            )
        return await self.cp.call(
            call201.StatusNotification(
                timestamp=now_z(),
                connector_status=status,
                evse_id=evse if evse is not None else connector,
                connector_id=1,
            )
        )

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


def now_z() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@contextlib.asynccontextmanager
async def charger(port: int, cp_id: str, version: str = "1.6") -> AsyncIterator[Charger]:
    cls = ChargePoint16 if version == "1.6" else ChargePoint201
    url = f"ws://127.0.0.1:{port}/ocpp/{cp_id}"
    async with websockets.connect(url, subprotocols=[f"ocpp{version}"]) as ws:  # type: ignore[list-item]
        cp = cls(cp_id, ws, response_timeout=5)
        task = asyncio.create_task(cp.start())
        c = Charger(cp, ws, task, version)
        try:
            yield c
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``check()`` holds (state reached over sockets needs a moment)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def pushes(hub: HubSimulator) -> list[tuple[str, str, str]]:
    """(action, EvseID, status) of every successful single-record status push, in order."""
    out = []
    for push in hub.received:
        if push.endpoint == "status" and push.code == "000":
            for evse_id, status in push.records:
                out.append((push.action, evse_id, status or ""))
    return out


# -- PostgreSQL -------------------------------------------------------------------------------
# Every machine of this project runs PostgreSQL on 127.0.0.1:5432 (user postgres, trust). Each
# test that needs one creates its own database, named after this checkout, this process and a
# counter, and drops it afterwards. BRIDGE_TEST_PG points elsewhere (an admin URL).
PG_ADMIN = os.environ.get("BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_CHECKOUT = re.sub(r"[^a-z0-9]+", "_", Path(__file__).resolve().parents[1].name.lower())
PG_PREFIX = os.environ.get("BRIDGE_TEST_DB_PREFIX", _CHECKOUT)[:30]
_databases = itertools.count()


def pg_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; its URL. Dropped afterwards."""
    import psycopg

    name = f"{PG_PREFIX}_{os.getpid()}_{next(_databases)}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise AssertionError(
            f"PostgreSQL is not reachable at {PG_ADMIN} ({exc}); the storage tests run on "
            "both backends and need it (see docs/development.md)"
        ) from None
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_url(name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The ``state`` settings of one backend: each storage test runs on both."""
    if request.param == "sqlite":
        yield {"database": tmp_path / "state" / "bridge.db"}
        return
    with pg_database() as url:
        yield {"url": url, "database": tmp_path / "state" / "bridge.db"}


@pytest.fixture
def postgres() -> Iterator[str]:
    """A fresh PostgreSQL database (its URL) for tests of replicas."""
    with pg_database() as url:
        yield url
