"""Log lines strangers can cause: bounded in number, and never raw control characters."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from bridge.app import Bridge
from bridge.hubsim import HubSimulator
from bridge.ratelimit import LogLimiter
from tests.conftest import Events
from tests.procs import write_config

MakeBridge = Callable[..., Awaitable[Bridge]]
ESC = "\x1b"


async def not_ocpp(port: int, path: str, host: str = "127.0.0.1") -> int:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"ws://127.0.0.1:{port}{path}", local_addr=(host, 0)):
            pass
    return info.value.response.status_code


async def test_requests_for_other_paths_are_logged_once_per_address_and_window(
    bridge: Bridge, events: Events
) -> None:
    port = bridge.ocpp.port
    answers = await asyncio.gather(*(not_ocpp(port, f"/wp-login.php?{i}") for i in range(40)))
    assert set(answers) == {404}
    assert len(events.named("ocpp.rejected")) == 1  # not 40
    assert await not_ocpp(port, "/.env", host="127.0.0.2") == 404
    lines = events.named("ocpp.rejected")
    assert [line["peer"].split(":")[0] for line in lines] == ["127.0.0.1", "127.0.0.2"]
    assert lines[0]["repeated"] == 0


def test_log_limiter_counts_what_it_leaves_out() -> None:
    now = [0.0]
    limiter = LogLimiter(60.0, 3, max_keys=100, clock=lambda: now[0])
    assert limiter.admit("a") == 0
    assert [limiter.admit("a") for _ in range(5)] == [None] * 5
    assert limiter.admit("b") == 0 and limiter.admit("c") == 0
    assert limiter.admit("d") is None  # three lines per window in all
    assert limiter.take_over_budget() == 1 and limiter.take_over_budget() == 0
    now[0] = 60.0
    assert limiter.admit("a") == 5  # the next line says how many were left out
    for i in range(300):
        now[0] += 60.0
        limiter.admit(f"k{i}")
    assert len(limiter._keys) <= 100


async def test_console_log_escapes_control_characters(tmp_path: Path, hub: HubSimulator) -> None:
    """`log.format: console` in a real `bridge run`: what strangers send reaches the terminal
    escaped (the JSON format escapes by itself)."""
    config = write_config(tmp_path / "bridge.yaml", {
        "log": {"format": "console"},
        "ocpp": {"host": "127.0.0.1", "port": 0},
        "oicp": {"base_url": hub.base_url, "operator_id": "DE*ABC"},
        "state": {"database": tmp_path / "bridge.db"},
        "fullload": {"enabled": False}, "ops": {"enabled": False},
        "chargers": {"CP16": {"evses": {1: "DE*ABC*E16*1"}}},
    })  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", "run", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            while b"bridge.started" not in (line := await proc.stdout.readline()):
                assert line, "bridge exited"
        port = int(re.search(rb"ocpp_port=(\d+)", line)[1])  # type: ignore[index]
        assert await not_ocpp(port, "/\x1b[2J/x") == 404
        url = f"ws://127.0.0.1:{port}/ocpp/CP16"
        async with websockets.connect(url, subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            boot = {"chargePointVendor": f"V{ESC}]0;owned\x07", "chargePointModel": f"M{ESC}[2J"}
            await ws.send(json.dumps([2, "1", "BootNotification", boot]))
            assert json.loads(await ws.recv())[0] == 3
    finally:
        proc.terminate()
        async with asyncio.timeout(20):
            rest = await proc.stdout.read()
            await proc.wait()
    text = rest.decode()
    assert "charger.boot" in text and "ocpp.rejected" in text
    assert ESC not in text and "\x07" not in text
    assert "V\\x1b]0;owned\\x07" in text  # shown, escaped
