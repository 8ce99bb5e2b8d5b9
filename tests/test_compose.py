"""docker-compose.yml: the default profile as before, and the replicated profile consistent with
itself, with the load balancer's configuration and with the bridge's settings.

No compose engine or image registry is available to CI here (PostgreSQL and HAProxy images
cannot be pulled), so the file is checked for what would break a real ``up``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from bridge.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
REPLICAS = ("replica-a", "replica-b")


def profile(name: str | None) -> set[str]:
    return {s for s, spec in SERVICES.items() if (spec.get("profiles") or [None])[0] == name}


def test_the_default_profile_is_the_bridge_and_the_simulator() -> None:
    assert profile(None) == {"bridge", "hub-sim"}
    assert profile("chargers") == {"chargers"}
    assert profile("replicated") == {"postgres", "replicated-hub-sim", *REPLICAS,
                                     "load-balancer"}  # fmt: skip
    assert SERVICES["bridge"]["volumes"][1] == "bridge-state:/var/lib/bridge"


def test_every_service_reference_exists() -> None:
    for name, spec in SERVICES.items():
        mode = spec.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.removeprefix("service:") in SERVICES, name
        depends = spec.get("depends_on", [])
        for other in depends if isinstance(depends, list) else depends.keys():
            assert other in SERVICES, (name, other)
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in COMPOSE["volumes"], (name, source)


@pytest.mark.parametrize("replica", REPLICAS)
def test_the_replicas_settings_load(replica: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = SERVICES[replica]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = load_settings(ROOT / "config" / "bridge.example.yaml")
    assert settings.state.postgres
    assert settings.replication.replica_id == replica
    url = urlsplit(settings.state.url or "")
    db = SERVICES["postgres"]["environment"]
    assert (url.hostname, url.username, url.password, url.path) == (
        "postgres", db["POSTGRES_USER"], db["POSTGRES_PASSWORD"], "/" + db["POSTGRES_DB"]
    )  # fmt: skip
    assert SERVICES[replica]["network_mode"] == "service:replicated-hub-sim"
    assert settings.oicp.base_url == "http://127.0.0.1:9501"


def test_the_load_balancer_sends_chargers_to_the_replicas_ready_ports() -> None:
    haproxy = (ROOT / "config" / "haproxy.cfg").read_text()
    servers = re.findall(r"server (\S+) 127\.0\.0\.1:(\d+) check port (\d+)", haproxy)
    assert {name for name, _, _ in servers} == set(REPLICAS)
    for name, ocpp, ops in servers:
        env = SERVICES[name]["environment"]
        assert (env["BRIDGE_OCPP__PORT"], env["BRIDGE_OPS__PORT"]) == (ocpp, ops)
    assert "bind :9000" in haproxy and "mode tcp" in haproxy
    published = [p.split(":")[-2] for p in SERVICES["replicated-hub-sim"]["ports"]]
    ops_ports = [SERVICES[r]["environment"]["BRIDGE_OPS__PORT"] for r in REPLICAS]
    assert {"9000", "9501", *ops_ports} <= set(published)
    lb = SERVICES["load-balancer"]
    assert lb["network_mode"] == "service:replicated-hub-sim"
    assert lb["volumes"] == ["./config/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]
