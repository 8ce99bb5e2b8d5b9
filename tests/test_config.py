"""Configuration: file + environment, validation messages naming the field, CLI exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import load_settings
from bridge.errors import ConfigError

GOOD = """
oicp: {operator_id: "DE*ABC", base_url: "https://hub.example.test"}
chargers:
  CP1: {evses: {1: "DE*ABC*E1*1", 2: "DE*ABC*E1*2"}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.yaml"
    path.write_text(text)
    return path


def test_example_config_loads() -> None:
    settings = load_settings(Path(__file__).parent.parent / "config" / "bridge.example.yaml")
    assert settings.oicp.operator_id == "DE*ABC"
    assert settings.chargers["CP-0001"].evses[1] == "DE*ABC*E0001*1"


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_OCPP__PORT", "9100")
    monkeypatch.setenv("BRIDGE_OICP__BASE_URL", "https://qa.example.test")
    monkeypatch.setenv("BRIDGE_FULLLOAD__TIME", "04:30")
    settings = load_settings(write(tmp_path, GOOD))
    assert settings.ocpp.port == 9100
    assert settings.oicp.base_url == "https://qa.example.test"
    assert settings.fullload.time.hour == 4 and settings.fullload.time.minute == 30


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (
            GOOD.replace('"DE*ABC*E1*1"', '"DE*ABC*X1"'),
            "chargers.CP1.evses.1",
            "not an OICP EvseID",
        ),
        (GOOD.replace('"DE*ABC*E1*1"', '"DE*XYZ*E1*1"'), "chargers.CP1.evses.1", "operator prefix"),
        (
            GOOD.replace('operator_id: "DE*ABC"', 'operator_id: "D*ABC"'),
            "oicp.operator_id",
            "not an OICP OperatorID",
        ),
        (
            GOOD.replace("https://hub.example.test", "http://hub.example.test"),
            "oicp.base_url",
            "loopback",
        ),
        (GOOD + "fullload: {timezone: Mars/Base}\n", "fullload.timezone", "unknown time zone"),
        (GOOD + "ocpp: {port: 70000}\n", "ocpp.port", "less than or equal"),
        (GOOD + "ocpp: {bogus: 1}\n", "ocpp.bogus", "Extra inputs"),
        (
            GOOD + "status: {overrides: {Faulted: EvseNotFound}}\n",
            "status.overrides",
            "EvseNotFound",
        ),
        (GOOD + '  CP2: {evses: {1: "DE*ABC*E1*1"}}\n', "chargers.CP2.evses.1", "also used"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.field == field
    assert reason in info.value.reason


def test_cli_exits_2_on_bad_config(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('"DE*ABC*E1*2"', '"DE*XYZ*E1*2"'))
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "chargers.CP1.evses.2" in proc.stderr and "DE*XYZ*E1*2" in proc.stderr


def test_cli_exits_2_on_missing_file(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_every_problem_is_listed_with_its_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
oicp: {base_url: "http://hub.example.test", operator_id: "DEX"}
ocpp: {port: 70000, ping_interval: soon}
fullload: {timezone: Mars/Base}
chargers: {CP1: {evses: {1: "DE*ABC*X1"}}}
""",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    problems = dict(info.value.problems)
    assert list(problems) == [
        "ocpp.port", "ocpp.ping_interval", "oicp.base_url", "oicp.operator_id",
        "fullload.timezone", "chargers.CP1.evses.1",
    ]  # fmt: skip
    assert "less than or equal to 65535" in problems["ocpp.port"]
    assert "'DEX' is not an OICP OperatorID" in problems["oicp.operator_id"]
    assert (info.value.field, info.value.reason) == ("ocpp.port", problems["ocpp.port"])
    assert str(info.value).splitlines() == [f"{f}: {r}" for f, r in problems.items()]

    # The same through the command line: check-config and run print one line per problem.
    for command in ("check-config", "run"):
        proc = subprocess.run(
            [sys.executable, "-m", "bridge", command, "--config", str(path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 2
        lines = [line for line in proc.stderr.splitlines() if "configuration error" in line]
        assert lines == [f"oicp-bridge: configuration error: {f}: {r}" for f, r in problems.items()]
        assert "more problem" not in proc.stderr


def test_a_model_check_names_the_setting_it_is_about(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "ocpp: {allow_unlisted: true}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.problems == [("ocpp.allow_unlisted", "needs ocpp.evse_id_template")]


def test_checks_across_settings_report_every_problem(tmp_path: Path) -> None:
    """Two EvseIDs of another operator and a charger whose profile needs TLS: all named."""
    path = tmp_path / "bridge.yaml"
    path.write_text(
        'oicp: {operator_id: "DE*ABC"}\n'
        "chargers:\n"
        '  CP1: {evses: {1: "DE*XYZ*E1*1", 2: "DE*XYZ*E1*2"}}\n'
        '  CP2: {evses: {1: "DE*ABC*E2*1"}, security_profile: 2}\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    fields = [field for field, _ in info.value.problems]
    assert fields == [
        "chargers.CP1.evses.1",
        "chargers.CP1.evses.2",
        "chargers.CP2.security_profile",
        "chargers.CP2.password_hash",
    ]
    assert "operator prefix 'DE*ABC'" in dict(info.value.problems)["chargers.CP1.evses.2"]
