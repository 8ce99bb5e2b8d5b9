"""The ``oicp-bridge`` command for operators: --help, check-config, status, fullload --dry-run, and
the simulated chargers of the compose profile."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from bridge.app import Bridge
from bridge.cli import main
from bridge.devtools.charger_sim import Spec, run_chargers
from bridge.hubsim import HubSimulator
from bridge.ops.check_config_cmd import check_config
from bridge.ops.status_cmd import parse_oicp_statuses, status
from tests.conftest import charger, eventually, pushes, settings_for
from tests.procs import BridgeProcess, write_config

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("run", "check-config", "status", "fullload", "hub-sim")


def config_file(tmp_path: Path, **sections: Any) -> Path:
    settings: dict[str, Any] = {
        "oicp": {"base_url": "https://hub.example.test", "operator_id": "DE*ABC"},
        "state": {"database": str(tmp_path / "state" / "bridge.db")},
        "chargers": {"CP1": {"evses": {1: "DE*ABC*E1*1", 2: "DE*ABC*E1*2"}}},
    }
    for key, value in sections.items():
        settings[key] = {**settings.get(key, {}), **value}
    return write_config(tmp_path / "bridge.yaml", settings)


def run_check(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_config(path, out, err)
    return code, out.getvalue(), err.getvalue()


def pem_files(tmp_path: Path, days: float) -> tuple[Path, Path]:
    """A client certificate valid for ``days`` more days (negative: expired), and its key."""
    ca = trustme.CA()
    now = dt.datetime.now(dt.UTC)
    not_after = now + dt.timedelta(days=days)
    cert = ca.issue_cert(
        "bridge.example.test", not_before=min(now, not_after) - dt.timedelta(days=365),
        not_after=not_after,
    )  # fmt: skip
    cert_path, key_path = tmp_path / f"client-{days}.pem", tmp_path / f"client-{days}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


# -- --help ---------------------------------------------------------------------------------------
def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert f"\n    {command}" in text, command
    assert "BRIDGE_<SECTION>__<SETTING>" in text and "Exit status" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: oicp-bridge {command}")
    if command != "hub-sim":
        assert "--config" in text


def test_the_command_is_oicp_bridge_and_python_m_bridge_runs_it() -> None:
    """``bridge`` is iproute2's tool on most Linux systems: the console script must not be it."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"oicp-bridge": "bridge.cli:main"}
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"oicp-bridge {__import__('bridge').__version__}"
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "status", "--bogus"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.startswith("usage: oicp-bridge")
    assert "oicp-bridge: error: unrecognized arguments: --bogus" in proc.stderr


# -- check-config ---------------------------------------------------------------------------------
def test_check_config_summary_of_a_good_file(tmp_path: Path) -> None:
    cert, key = pem_files(tmp_path, 200)
    path = config_file(tmp_path, oicp={"client_cert": str(cert), "client_key": str(key)})
    code, out, err = run_check(path)
    assert code == 0, err
    assert "operator:" in out and "DE*ABC" in out
    assert "hub:                https://hub.example.test" in out
    assert "1 chargers, 2 EVSEs" in out
    assert "CP1: 1→DE*ABC*E1*1  2→DE*ABC*E1*2" in out
    assert f"{cert} (200 days left)" in out or f"{cert} (199 days left)" in out
    assert out.rstrip().endswith("configuration OK")
    assert err == ""


def test_check_config_names_a_bad_evse_id(tmp_path: Path) -> None:
    path = config_file(tmp_path, chargers={"CP1": {"evses": {1: "DE*ABC*X1"}}})
    code, _, err = run_check(path)
    assert code == 2
    assert "chargers.CP1.evses.1" in err and "'DE*ABC*X1'" in err
    assert "not an OICP EvseID" in err


def test_check_config_names_an_evse_id_of_another_operator(tmp_path: Path) -> None:
    path = config_file(tmp_path, chargers={"CP1": {"evses": {1: "DE*XYZ*E1*1"}}})
    code, _, err = run_check(path)
    assert code == 2
    assert "chargers.CP1.evses.1" in err and "'DE*XYZ*E1*1'" in err and "018" in err


def test_check_config_names_a_missing_certificate_file(tmp_path: Path) -> None:
    missing = tmp_path / "certs" / "hubject-client.pem"
    path = config_file(tmp_path, oicp={"client_cert": str(missing)})
    code, out, err = run_check(path)
    assert code == 2
    assert f"oicp.client_cert: file '{missing}' not found" in err
    assert "1 problem(s) found" in err
    assert "configuration OK" not in out


def test_check_config_names_a_missing_key_file(tmp_path: Path) -> None:
    cert, _ = pem_files(tmp_path, 200)
    missing = tmp_path / "nope.key"
    path = config_file(tmp_path, oicp={"client_cert": str(cert), "client_key": str(missing)})
    code, _, err = run_check(path)
    assert code == 2 and f"oicp.client_key: file '{missing}' not found" in err


def test_check_config_refuses_an_expired_or_mismatched_certificate(tmp_path: Path) -> None:
    expired, expired_key = pem_files(tmp_path, -3)
    path = config_file(tmp_path, oicp={"client_cert": str(expired), "client_key": str(expired_key)})
    code, _, err = run_check(path)
    assert code == 2 and f"oicp.client_cert: {expired} expired 3 days ago" in err

    cert, _ = pem_files(tmp_path, 200)
    path = config_file(tmp_path, oicp={"client_cert": str(cert), "client_key": str(expired_key)})
    code, _, err = run_check(path)
    assert code == 2 and "oicp.client_key: cannot use" in err and str(expired_key) in err

    path = config_file(tmp_path, oicp={"client_cert": str(cert)})  # key in neither file
    code, _, err = run_check(path)
    assert code == 2 and "no private key inside; set oicp.client_key" in err


def test_check_config_warns_about_a_certificate_about_to_expire(tmp_path: Path) -> None:
    cert, key = pem_files(tmp_path, 10)
    path = config_file(tmp_path, oicp={"client_cert": str(cert), "client_key": str(key)})
    code, _, err = run_check(path)
    assert code == 0
    assert "oicp-bridge: warning: oicp.client_cert:" in err and "renew it" in err


def test_check_config_reads_charger_password_hash_files_without_tls(tmp_path: Path) -> None:
    """Profile 1 over plain ws: a missing hash file stops `oicp-bridge run`; check-config too."""
    missing = tmp_path / "secrets" / "cp1"
    path = config_file(
        tmp_path,
        ocpp={"security": {"profile": 1}},
        chargers={"CP1": {"evses": {1: "DE*ABC*E1*1"}, "password_hash_file": str(missing)}},
    )
    code, _, err = run_check(path)
    assert code == 2
    assert "chargers.CP1.password_hash_file" in err and str(missing) in err


def test_check_config_other_problems(tmp_path: Path) -> None:
    path = config_file(tmp_path, ocpp={"port": 9100}, ops={"port": 9100})
    code, _, err = run_check(path)
    assert code == 2 and "ops.port: 9100 is also ocpp.port" in err
    code, _, err = run_check(tmp_path / "absent.yaml")
    assert code == 2 and "absent.yaml" in err and "not found" in err
    path = config_file(tmp_path, oicp={"ca_bundle": str(tmp_path / "ca.pem")})
    code, _, err = run_check(path)
    assert code == 2 and "oicp.ca_bundle: file" in err


def test_check_config_through_the_command_line(tmp_path: Path) -> None:
    bad = config_file(tmp_path, chargers={"CP1": {"evses": {1: "DE*ABC*X1"}}})
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config", "--config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "chargers.CP1.evses.1" in proc.stderr and "DE*ABC*X1" in proc.stderr
    example = ROOT / "config" / "bridge.example.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config", "-c", str(example)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK" in proc.stdout


# -- status ---------------------------------------------------------------------------------------
async def test_status_table_from_the_state_database(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator, tmp_path: Path
) -> None:
    bridge = await make_bridge()
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Charging")
        await eventually(lambda: len(pushes(hub)) == 1 and not bridge.outbox)
        hub.faults.fail_http(503)
        await cp.status(2, "Faulted")
        await eventually(lambda: any(p.http_status == 503 for p in hub.received))
    await bridge.stop()
    settings = settings_for(tmp_path, hub.base_url)

    out = io.StringIO()
    assert status(settings, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["EVSE", "ID", "CHARGE", "POINT", "OCPP", "OICP", "HUB", "PENDING",
                                "LAST", "PUSH", "DATA"]  # fmt: skip
    table = {line.split()[0]: line.split() for line in lines[1:] if line.startswith("DE*")}
    assert table["DE*ABC*E16*1"][1:6] == ["CP16", "Charging", "Occupied", "Occupied", "-"]
    assert table["DE*ABC*E16*1"][6:] == ["ok", "000", "-"]  # a file station: no EVSE data
    assert table["DE*ABC*E16*2"][1:5] == ["CP16", "Faulted", "OutOfService", "-"]
    assert table["DE*ABC*E16*2"][5].endswith("s") and table["DE*ABC*E16*2"][6] == "retry"
    assert table["DE*ABC*E201*1"][1:] == ["CP201", "-", "Unknown", "-", "-", "-", "-"]
    assert "4 EVSEs, 1 pending" in out.getvalue()

    out = io.StringIO()
    status(settings, pending_only=True, as_json=True, out=out)
    pending = json.loads(out.getvalue())
    assert [(e["evse_id"], e["status"], e["last_outcome"]) for e in pending] == [
        ("DE*ABC*E16*2", "OutOfService", "retry")
    ]
    out = io.StringIO()
    status(settings, oicp_statuses=parse_oicp_statuses("occupied"), as_json=True, out=out)
    assert [e["evse_id"] for e in json.loads(out.getvalue())] == ["DE*ABC*E16*1"]
    out = io.StringIO()
    status(settings, oicp_statuses=parse_oicp_statuses("Occupied, UNKNOWN"), as_json=True, out=out)
    assert [e["evse_id"] for e in json.loads(out.getvalue())] == ["DE*ABC*E16*1", "DE*ABC*E201*1",
                                                                  "DE*ABC*E201*2"]  # fmt: skip

    # The same through the command line, from a YAML file (a separate process).
    path = write_config(tmp_path / "bridge.yaml", settings.model_dump(mode="json"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "status", "-c", str(path), "--pending",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr
    assert b"DE*ABC*E16*2" in stdout and b"DE*ABC*E16*1" not in stdout


@pytest.mark.parametrize("value", ["Bogus", "Occupied,Bogus", "EvseNotFound", ""])
def test_status_refuses_an_unknown_oicp_status_like_the_api(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The API answers 2001 for these; the command says so too instead of an empty table."""
    with pytest.raises(SystemExit) as done:
        main(["status", "-c", str(config_file(tmp_path)), "--status", value])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "argument --status:" in err and "is not an OICP status" in err
    assert "Available, Reserved, Occupied, OutOfService, Unknown" in err


def test_status_without_a_database_says_so(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "status", "-c", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "bridge.db does not exist" in proc.stderr


def test_fullload_dry_run_prints_the_body(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "fullload", "--dry-run", "-c", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert body["ActionType"] == "fullLoad"
    records = body["OperatorEvseStatus"]["EvseStatusRecord"]
    assert {(r["EvseID"], r["EvseStatus"]) for r in records} == {
        ("DE*ABC*E1*1", "Unknown"), ("DE*ABC*E1*2", "Unknown"),
    }  # fmt: skip


# -- simulated chargers ---------------------------------------------------------------------------
async def test_simulated_chargers_drive_the_bridge(bridge: Bridge, hub: HubSimulator) -> None:
    url = f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp"
    specs = [Spec.parse("CP16:1.6:2"), Spec.parse("CP201:2.0.1:2")]
    chargers = await run_chargers(url, specs, interval=0.01, steps=6, seed=7)
    assert [c.sent for c in chargers] == [6, 6]
    families = text_string_to_metric_families(bridge.metrics.render()[0].decode())
    counted = sum(s.value for f in families if f.name == "bridge_status_notifications"
                  for s in f.samples)  # fmt: skip
    assert counted == 12  # every notification of both chargers went through the metrics hook
    await eventually(lambda: not bridge.outbox and len(hub.state) == 4)
    # What the hub holds is what the bridge computed from the simulated sessions.
    assert hub.state == {e: bridge.engine.status(e).value for e in bridge.engine.evse_ids()}


@pytest.mark.parametrize("text", ["CP1:1.5", "CP1:1.6:0", "CP1:1.6:x", "CP1:1.6:1:9"])
def test_simulated_charger_spec_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="CP1"):
        Spec.parse(text)


# -- hub-sim --------------------------------------------------------------------------------------
def test_hub_sim_ends_cleanly_on_sigterm(tmp_path: Path) -> None:
    """``docker stop`` sends SIGTERM: the simulator must exit 0, not wait to be killed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "hub-sim", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the simulator has started (or died)
        assert json.loads(line)["event"] == "hubsim.started", line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- open files -----------------------------------------------------------------------------------
def small_fleet_config(tmp_path: Path, chargers: int) -> Path:
    return write_config(tmp_path / "fleet.yaml", {
        "ocpp": {"host": "127.0.0.1", "port": 0},
        "oicp": {"base_url": "http://127.0.0.1:9", "operator_id": "DE*ABC"},
        "state": {"database": str(tmp_path / "state" / "bridge.db")},
        "ops": {"enabled": False}, "fullload": {"enabled": False},
        "chargers": {f"CP{n}": {"evses": {1: f"DE*ABC*E{n}*1"}} for n in range(chargers)},
    })  # fmt: skip


async def test_run_raises_its_open_file_soft_limit_to_the_hard_limit(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"the hard open-file limit ({hard}) leaves nothing to raise")
    proc = await BridgeProcess(small_fleet_config(tmp_path, 3), nofile=(512, hard)).start()
    try:
        (line,) = proc.named("bridge.open_files")
        assert line["level"] == "info" and line["soft"] == line["hard"] > 512
        assert (line["chargers"], line["needed"]) == (3, 3 + 256)
    finally:
        assert await proc.terminate() == 0


async def test_a_hard_limit_too_low_for_the_registry_is_a_warning(tmp_path: Path) -> None:
    config = small_fleet_config(tmp_path, 200)  # needs ~456 files
    proc = await BridgeProcess(config, nofile=(300, 300)).start()
    try:
        (line,) = proc.named("bridge.open_files")
        assert line["level"] == "warning" and (line["soft"], line["needed"]) == (300, 456)
        assert "nofile" in line["reason"]
    finally:
        assert await proc.terminate() == 0
    checked = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bridge", "check-config", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300)),
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "open files:         300 allowed, ~456 needed for 200 chargers" in checked.stdout
    assert "open files: the hard limit is 300" in checked.stderr


def test_a_port_in_use_is_named_with_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = config_file(tmp_path, ocpp={"host": "127.0.0.1", "port": port},
                           ops={"enabled": False}, fullload={"enabled": False})  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "bridge", "run", "--config", str(path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"oicp-bridge: configuration error: ocpp.port: cannot listen on 127.0.0.1:{port}: "
        "Address already in use; stop what uses it or choose another port"
    )
