"""``oicp-bridge fullload``: --dry-run any time; failures say what failed and what to do."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bridge.app import Bridge
from bridge.hubsim import HubSimulator
from bridge.ops.fullload import send
from tests.conftest import charger, eventually, pushes, settings_for
from tests.procs import write_config


async def run_command(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_dry_run_while_the_bridge_runs(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator, tmp_path: Path
) -> None:
    bridge = await make_bridge()  # holds the state database
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Charging")
        await eventually(lambda: len(pushes(hub)) == 1)
    config = write_config(tmp_path / "bridge.yaml", bridge.settings.model_dump(mode="json"))

    code, out, err = await run_command("fullload", "--dry-run", "--config", str(config))
    assert code == 0, err
    body = json.loads(out)
    assert body["ActionType"] == "fullLoad"
    records = {r["EvseID"]: r["EvseStatus"] for r in body["OperatorEvseStatus"]["EvseStatusRecord"]}
    # what the running bridge would send: its current statuses
    assert records == {e: bridge.engine.status(e).value for e in bridge.engine.evse_ids()}
    assert records["DE*ABC*E16*1"] == "Occupied"

    # Sending goes through the running bridge's API: without a token the message says how.
    code, _, err = await run_command("fullload", "--config", str(config))
    assert code == 1
    assert "a bridge is running" in err and "BRIDGE_API_TOKEN" in err, err
    assert "oicp-bridge api-token" in err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_hub_is_named_with_the_reason(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    config = write_config(
        tmp_path / "bridge.yaml", settings_for(tmp_path, url).model_dump(mode="json")
    )
    code, _, err = await run_command("fullload", "--config", str(config), "--wait", "1")
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"oicp-bridge: fullLoad not sent: the hub at {url} could not be "
                           "reached within 1 s: cannot connect: ")  # fmt: skip
    assert "Check oicp.base_url, DNS and the firewall" in line


async def fullload(tmp_path: Path, hub: HubSimulator, wait: float) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    code = await send(settings_for(tmp_path, hub.base_url), wait=wait, out=out, err=err)
    return code, out.getvalue(), err.getvalue(), time.monotonic() - started


async def test_a_refused_set_up_fails_at_once_with_what_to_check(
    tmp_path: Path, hub: HubSimulator
) -> None:
    hub.faults.answer_code("017")
    code, _, err, took = await fullload(tmp_path, hub, wait=30)
    assert code == 1 and took < 10  # no point in waiting 30 s for the same answer
    assert err.startswith("oicp-bridge: fullLoad not sent: hub answered 017: ")
    assert "client certificate" in err and "DE*ABC" in err and "allow-lists" in err


async def test_a_refused_body_says_what_to_fix(tmp_path: Path, hub: HubSimulator) -> None:
    hub.faults.answer_code("018", count=1)
    code, _, err, _ = await fullload(tmp_path, hub, wait=30)
    assert code == 1
    assert err.startswith("oicp-bridge: fullLoad refused by the hub: hub answered HTTP 200, "
                          "code 018")  # fmt: skip
    assert "fix the registry" in err


async def test_a_failing_hub_is_retried_until_the_wait_ends(
    tmp_path: Path, hub: HubSimulator
) -> None:
    hub.faults.fail_http(503)
    code, _, err, took = await fullload(tmp_path, hub, wait=1)
    assert code == 1 and took >= 1
    assert "kept failing for 1 s; the last answer: hub answered HTTP 503" in err
    assert "run this command again later" in err
    assert len(hub.received) >= 2  # retried with backoff within the wait

    hub.faults.clear()
    code, out, err, _ = await fullload(tmp_path, hub, wait=5)
    assert code == 0, err
    assert out.strip() == f"fullLoad sent: 4 EVSE status records accepted by {hub.base_url}"
    assert hub.state == dict.fromkeys(("DE*ABC*E16*1", "DE*ABC*E16*2", "DE*ABC*E201*1",
                                       "DE*ABC*E201*2"), "Unknown")  # fmt: skip
