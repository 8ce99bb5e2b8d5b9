"""``runtime.event_loop``: which loop ``oicp-bridge run`` uses, and what a wrong choice says."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import eventloop
from bridge.config import load_settings
from bridge.errors import ConfigError
from bridge.hubsim import HubSimulator
from tests.conftest import OPERATOR, eventually, pushes
from tests.procs import BridgeProcess, RawCharger, write_config


async def _loop_name() -> str:
    await asyncio.sleep(0)
    return eventloop.loop_name()


@pytest.mark.parametrize(
    ("choice", "expected"), [("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_each_choice_runs_on_its_loop(choice: eventloop.Choice, expected: str) -> None:
    assert eventloop.run(_loop_name(), choice) == expected


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes ``import uvloop`` fail
    assert eventloop.run(_loop_name(), "auto") == "asyncio"
    main = _loop_name()
    with pytest.raises(ConfigError) as info:
        eventloop.run(main, "uvloop")
    assert info.value.field == "runtime.event_loop"
    assert "uvloop is not installed" in info.value.reason
    assert main.cr_frame is None  # closed, so no "never awaited" warning


def test_tls_on_the_ocpp_port_keeps_asyncio(tmp_path: Path) -> None:
    """The OCPP port's own TLS handshake runs asyncio's TLS protocol: auto picks asyncio, and
    uvloop is refused with the reason."""
    cert = tmp_path / "server.pem"
    cert.write_text("unused: the choice is made from the settings alone\n")
    base = 'oicp: {operator_id: "DE*ABC", base_url: "https://hub.example.test"}\n'
    path = tmp_path / "bridge.yaml"
    path.write_text(base + f"ocpp: {{security: {{tls_cert: {cert}}}}}\n")
    settings = load_settings(path)
    reason = eventloop.standard_loop_needed(settings)
    assert reason is not None and "ocpp.security.tls_cert" in reason
    assert eventloop.run(_loop_name(), "auto", standard_needed=reason) == "asyncio"
    with pytest.raises(ConfigError) as info:
        eventloop.run(_loop_name(), "uvloop", standard_needed=reason)
    assert info.value.field == "runtime.event_loop" and "OCPP port's TLS" in info.value.reason
    path.write_text(base)
    assert eventloop.standard_loop_needed(load_settings(path)) is None


def test_an_unknown_loop_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "bridge.yaml"
    path.write_text(
        'oicp: {operator_id: "DE*ABC", base_url: "https://hub.example.test"}\n'
        "runtime: {event_loop: trio}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.field == "runtime.event_loop"
    assert "'auto', 'uvloop' or 'asyncio'" in info.value.reason
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "runtime.event_loop" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["auto", "asyncio"])
async def test_the_service_runs_on_the_chosen_loop(
    tmp_path: Path, hub: HubSimulator, choice: str
) -> None:
    config = write_config(tmp_path / "bridge.yaml", {
        "ocpp": {"host": "127.0.0.1", "port": 0},
        "oicp": {"base_url": hub.base_url, "operator_id": OPERATOR},
        "state": {"database": tmp_path / "state.db"},
        "fullload": {"enabled": False},
        "ops": {"enabled": False},
        "runtime": {"event_loop": choice},
        "chargers": {"CP1": {"evses": {1: "DE*ABC*E1*1"}}},
    })  # fmt: skip
    proc = await BridgeProcess(config).start()
    try:
        assert proc.named("bridge.started")[-1]["event_loop"] == (
            "uvloop" if choice == "auto" else "asyncio"
        )
        charger = await RawCharger.connect(proc.ocpp_port, "CP1")
        await charger.status(1, "Charging")
        await eventually(lambda: ("DE*ABC*E1*1", "Occupied") in hub.state.items(), within=10)
        await charger.close()
    finally:
        code = await proc.terminate()
    assert code == 0  # SIGTERM handled on either loop
    assert [p[1:] for p in pushes(hub)][-1] == ("DE*ABC*E1*1", "Occupied")
