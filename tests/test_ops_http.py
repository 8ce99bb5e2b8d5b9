"""The ops port over real sockets: liveness, readiness, and metrics after a scripted run."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trustme
import websockets
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from bridge.app import Bridge
from bridge.errors import ConfigError
from bridge.hubsim import HubSimulator
from bridge.ops.metric_table import METRICS
from bridge.ops.metrics import BridgeMetrics
from bridge.passwords import hash_password
from tests.conftest import charger, eventually, pushes, settings_for


def ops_url(bridge: Bridge) -> str:
    assert bridge.ops_server is not None
    return f"http://127.0.0.1:{bridge.ops_server.port}"


async def get(bridge: Bridge, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=ops_url(bridge), timeout=5) as client:
        return await client.get(path)


class Scrape:
    """One /metrics answer, parsed with prometheus-client's own parser."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def total(self, name: str, **labels: str) -> float:
        """Sum over every series of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)


async def scrape(bridge: Bridge) -> Scrape:
    response = await get(bridge, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return Scrape(response.text)


# -- liveness and readiness -----------------------------------------------------------------------
async def test_healthz_and_readyz_when_all_is_well(bridge: Bridge) -> None:
    health = await get(bridge, "/healthz")
    assert health.status_code == 200
    details = health.json().pop("details")
    assert health.json() | {"details": None} == {
        "status": "ok", "alive": True, "checks": {"tasks": True}, "reasons": [], "details": None,
    }  # fmt: skip
    # No request to the hub yet since the start: nothing known about it.
    assert details == {
        "replica": {"mode": "single", "role": "single"},
        "hub": {"reachable": None, "paused": None, "consecutive_failures": 0,
                "last_success_at": None, "last_failure_at": None, "last_error": None},
        "push": {"pending": 0, "oldest_pending_age_s": 0.0, "parked": 0, "in_flight": False,
                 "last_full_load": None},
    }  # fmt: skip
    ready = await get(bridge, "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "checks": {"ocpp_listening": True, "state_store": True, "tasks": True},
        "reasons": [],
        "role": "single",
    }


async def test_ready_while_hub_answers_017_and_healthz_details_say_so(
    bridge: Bridge, hub: HubSimulator
) -> None:
    """Readiness is about taking chargers: a paused bridge keeps recording, so it stays in."""
    hub.faults.answer_code("017")  # until cleared: the certificate does not match the operator
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await eventually(
            lambda: bridge.worker is not None and bridge.worker.paused_reason is not None
        )
        ready = await get(bridge, "/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        health = await get(bridge, "/healthz")
        assert health.status_code == 200  # not a restart's business either
        hub_details = health.json()["details"]["hub"]
        assert "017" in hub_details["paused"] and hub_details["reachable"] is True
        assert hub_details["consecutive_failures"] >= 1 and "017" in hub_details["last_error"]
        assert health.json()["details"]["push"]["pending"] == 1
        metrics = await scrape(bridge)
        assert metrics.value("bridge_push_paused") == 1
        assert metrics.value("bridge_push_pending") == 1
        assert metrics.value("bridge_hub_reachable") == 1  # it answers, with a refusal
        assert metrics.total("bridge_pushes_total", outcome="pause", code="017") >= 1
        assert metrics.total("bridge_pushes_total", outcome="ok") == 0

        hub.faults.clear()  # the operator fixed the certificate; the paused retry goes through
        await eventually(lambda: not bridge.outbox)
        health = await get(bridge, "/healthz")
        assert health.json()["details"]["hub"]["paused"] is None
        metrics = await scrape(bridge)
        assert metrics.value("bridge_push_paused") == 0
        assert metrics.value("bridge_hub_consecutive_failures") == 0
        assert metrics.value("bridge_pushes_total", action="insert", outcome="ok", code="000") == 1
    assert hub.state == {"DE*ABC*E16*1": "Available"}


async def test_an_unreachable_hub_and_the_backlog_show_on_healthz_and_metrics(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator
) -> None:
    bridge = await make_bridge(oicp={"request_timeout": 0.2})
    assert (await scrape(bridge)).value("bridge_hub_reachable") is None  # nothing known yet
    hub.faults.hang(5.0)  # every push times out: no HTTP answer reaches the bridge
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await cp.status(2, "Charging")
        await eventually(lambda: bridge.hub.consecutive_failures >= 2)
        health = await get(bridge, "/healthz")
        assert health.status_code == 200
        details = health.json()["details"]
        assert details["hub"]["reachable"] is False and details["hub"]["paused"] is None
        assert details["hub"]["last_error"].startswith("timeout after 0.2s")
        assert details["hub"]["last_success_at"] is None and details["hub"]["last_failure_at"]
        assert details["push"]["pending"] == 2 and details["push"]["oldest_pending_age_s"] >= 0
        ready = await get(bridge, "/readyz")
        assert ready.status_code == 200  # chargers are still taken and recorded
        metrics = await scrape(bridge)
        assert metrics.value("bridge_hub_reachable") == 0
        assert metrics.value("bridge_hub_consecutive_failures") >= 2
        assert metrics.value("bridge_push_pending") == 2

        hub.faults.clear()
        await eventually(lambda: not bridge.outbox, within=10)
        details = (await get(bridge, "/healthz")).json()["details"]
        assert details["hub"]["reachable"] is True and details["hub"]["consecutive_failures"] == 0
        assert details["hub"]["last_success_at"] is not None and details["push"]["pending"] == 0
        assert (await scrape(bridge)).value("bridge_hub_reachable") == 1


async def test_not_ready_while_stopping_but_alive_until_stopped(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator
) -> None:
    bridge = await make_bridge(delivery={"shutdown_timeout": 1.0})
    server = bridge.ops_server
    assert server is not None
    hub.faults.hang(5.0, count=1)  # a push stays in flight, so stop() waits for it
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await eventually(lambda: hub.in_flight == 1)
    stopping = asyncio.create_task(bridge.stop())
    await eventually(lambda: bridge.stopping)
    ready = await get(bridge, "/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["ocpp_listening"] is False
    assert "shutting down" in ready.json()["reasons"][0]
    assert (await get(bridge, "/healthz")).status_code == 200
    await stopping
    with pytest.raises(httpx.ConnectError):  # the ops port closes with the bridge
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(f"http://127.0.0.1:{server.port}/healthz")


async def test_not_alive_when_a_needed_task_died(
    make_bridge: Callable[..., Awaitable[Bridge]],
) -> None:
    bridge = await make_bridge(fullload={"enabled": True})
    scheduler = next(t for t in bridge.tasks if t.get_name() == "fullload-scheduler")
    scheduler.cancel()  # as if it had died: nothing would send the daily fullLoad any more
    await asyncio.gather(scheduler, return_exceptions=True)
    health = await get(bridge, "/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "failing"
    assert health.json()["reasons"] == ["fullload-scheduler stopped"]
    ready = await get(bridge, "/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["tasks"] is False


# -- metrics ------------------------------------------------------------------------------------
async def test_metrics_reflect_a_scripted_run(bridge: Bridge, hub: HubSimulator) -> None:
    before = await scrape(bridge)
    assert before.value("bridge_chargers_connected", protocol="1.6") == 0
    assert before.value("bridge_chargers_connected", protocol="2.0.1") == 0
    assert before.value("bridge_evses", oicp_status="Unknown") == 4
    assert before.value("bridge_fullload_last_success_timestamp_seconds") == 0
    assert before.value("bridge_hub_client_cert_days_left") is None  # no client certificate

    async with charger(bridge.ocpp.port, "CP16", "1.6") as c16:
        async with charger(bridge.ocpp.port, "CP201", "2.0.1") as c201:
            await c16.boot()
            await c201.boot()
            await c16.status(1, "Available")
            await c16.status(2, "Charging")
            await c16.status(1, "Preparing")
            await c201.status(1, "Available", evse=1)
            await eventually(lambda: len(pushes(hub)) == 4 and not bridge.outbox)

            m = await scrape(bridge)
            assert m.value("bridge_chargers_connected", protocol="1.6") == 1
            assert m.value("bridge_chargers_connected", protocol="2.0.1") == 1
            received = {
                ("1.6", "Available"): 1, ("1.6", "Charging"): 1, ("1.6", "Preparing"): 1,
                ("2.0.1", "Available"): 1,
            }  # fmt: skip
            for (protocol, status), count in received.items():
                assert m.value("bridge_status_notifications_total", protocol=protocol,
                               ocpp_status=status) == count  # fmt: skip
            assert m.total("bridge_status_notifications_total") == 4
            # Every push the hub accepted is counted once, by action, with its code.
            for action in ("insert", "update"):
                accepted = sum(1 for a, _, _ in pushes(hub) if a == action)
                assert m.value("bridge_pushes_total", action=action, outcome="ok",
                               code="000") == accepted  # fmt: skip
                assert m.value("bridge_push_duration_seconds_count", action=action) == accepted
            assert m.value("bridge_pushes_total", action="insert", outcome="ok", code="000") == 3
            assert m.value("bridge_pushes_total", action="update", outcome="ok", code="000") == 1
            assert (m.value("bridge_push_duration_seconds_sum", action="insert") or 0) > 0
            assert m.value("bridge_push_pending") == 0
            assert m.value("bridge_push_oldest_pending_age_seconds") == 0
            assert m.value("bridge_evses", oicp_status="Occupied") == 2
            assert m.value("bridge_evses", oicp_status="Available") == 1
            assert m.value("bridge_evses", oicp_status="Unknown") == 1

            # The hub falls over: the change waits, and the queue shows its depth and age.
            hub.faults.fail_http(503)
            await c201.status(1, "Occupied", evse=2)
            await eventually(lambda: any(p.http_status == 503 for p in hub.received))
            await eventually(lambda: bridge.outbox.oldest_pending_age() > 0.05)
            m = await scrape(bridge)
            assert m.value("bridge_push_pending") == 1
            assert (m.value("bridge_push_oldest_pending_age_seconds") or 0) > 0.05
            retries = sum(1 for p in hub.received if p.http_status == 503)
            assert m.value("bridge_pushes_total", action="insert", outcome="retry",
                           code="http_503") == pytest.approx(retries, abs=1)  # fmt: skip
            assert m.value("bridge_push_paused") == 0  # a 503 is transient, not a set-up error
            hub.faults.clear()
            await eventually(lambda: not bridge.outbox)
        await eventually(lambda: bridge.ocpp.connected_by_protocol() == {"1.6": 1})
        m = await scrape(bridge)
        assert m.value("bridge_chargers_connected", protocol="2.0.1") == 0
        assert m.value("bridge_chargers_connected", protocol="1.6") == 1
        assert m.value("bridge_push_pending") == 0

    assert bridge.worker is not None
    started = time.time()
    await bridge.worker.request_full_load()
    m = await scrape(bridge)
    last = m.value("bridge_fullload_last_success_timestamp_seconds") or 0
    assert started <= last <= time.time()
    assert m.value("bridge_pushes_total", action="fullLoad", outcome="ok", code="000") == 1
    assert m.value("bridge_info", version=__import__("bridge").__version__) == 1


async def test_offline_chargers_and_parked_evses(
    make_bridge: Callable[..., Awaitable[Bridge]], hub: HubSimulator
) -> None:
    bridge = await make_bridge(ocpp={"offline_grace": 0.1})
    hub.faults.answer_code("018", count=1)  # the hub refuses this EvseID once: it is parked
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await eventually(lambda: any(p.code == "018" for p in hub.received))
        await eventually(lambda: not bridge.outbox)
        m = await scrape(bridge)
        assert m.value("bridge_evses_parked") == 1
        assert m.value("bridge_pushes_total", action="insert", outcome="park", code="018") == 1
        assert m.value("bridge_chargers_offline") == 0
    await eventually(lambda: bridge.ingest.charge_points["CP16"].offline)
    m = await scrape(bridge)
    assert m.value("bridge_chargers_offline") == 1
    # Offline (Unknown) is a new status for the parked EVSE: it gets a new try, and goes in.
    await eventually(lambda: hub.state == {"DE*ABC*E16*1": "Unknown"})
    assert (await scrape(bridge)).value("bridge_evses_parked") == 0
    async with charger(bridge.ocpp.port, "CP16", "1.6"):
        await eventually(lambda: not bridge.ingest.charge_points["CP16"].offline)
        assert (await scrape(bridge)).value("bridge_chargers_offline") == 0


async def test_last_full_load_survives_a_restart(
    make_bridge: Callable[..., Awaitable[Bridge]],
) -> None:
    first = await make_bridge()
    assert first.worker is not None
    await first.worker.request_full_load()
    done = first.last_full_load
    assert done is not None
    await first.stop()
    second = await make_bridge()
    m = await scrape(second)
    assert m.value("bridge_fullload_last_success_timestamp_seconds") == done


async def test_client_certificate_days_left(
    make_bridge: Callable[..., Awaitable[Bridge]], tmp_path: Path
) -> None:
    ca = trustme.CA()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    cert = ca.issue_cert("bridge.example.test", not_after=expires)
    pem = tmp_path / "client.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    bridge = await make_bridge(oicp={"client_cert": pem})
    days = (await scrape(bridge)).value("bridge_hub_client_cert_days_left")
    assert days is not None and 29.9 < days <= 30.0


async def test_refused_logins_are_counted(
    make_bridge: Callable[..., Awaitable[Bridge]],
) -> None:
    secured = {"evses": {1: "DE*ABC*E16*1"}, "security_profile": 1,
               "password_hash": hash_password("s3cret", n=2**10)}  # fmt: skip
    bridge = await make_bridge(chargers={"CP16": secured})
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"CP16:guess").decode()}):
        with pytest.raises(InvalidStatus):
            async with websockets.connect(
                f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16",
                subprotocols=[Subprotocol("ocpp1.6")],
                additional_headers=headers, open_timeout=5,
            ):  # fmt: skip
                pass
    m = await scrape(bridge)
    assert m.value("bridge_ocpp_auth_failures_total", reason="missing_credentials") == 1
    assert m.value("bridge_ocpp_auth_failures_total", reason="wrong_password") == 1
    assert m.value("bridge_chargers_connected", protocol="1.6") == 0


def test_auth_failures_are_counted_by_reason_only() -> None:
    metrics = BridgeMetrics()
    metrics.observe_auth_failure("wrong_password")
    metrics.observe_auth_failure("wrong_password")
    metrics.observe_auth_failure("CP-made-up-by-a-stranger")
    body, _ = metrics.render()
    text = body.decode()
    assert 'bridge_ocpp_auth_failures_total{reason="wrong_password"} 2.0' in text
    assert 'bridge_ocpp_auth_failures_total{reason="other"} 1.0' in text
    assert "made-up" not in text


async def test_metrics_speak_openmetrics_when_asked(bridge: Bridge) -> None:
    async with httpx.AsyncClient(base_url=ops_url(bridge), timeout=5) as client:
        response = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    assert "bridge_push_pending 0" in response.text


async def test_every_exposed_metric_is_documented(bridge: Bridge) -> None:
    text = (await get(bridge, "/metrics")).text
    exposed = {f.name for f in text_string_to_metric_families(text)}  # counters without _total
    documented = {m.name.removesuffix("_total") for m in METRICS}
    assert exposed <= documented, exposed - documented
    # Only the certificate gauges are absent here (no client certificate, no TLS, no CRL;
    # tests/test_ocpp_tls.py sees the OCPP ones) and hub reachability (no request yet).
    assert documented - exposed == {
        "bridge_hub_reachable",
        "bridge_hub_client_cert_days_left",
        "bridge_ocpp_server_cert_days_left",
        "bridge_ocpp_charger_crl_hours_left",
    }


# -- the port itself ------------------------------------------------------------------------------
async def test_ops_port_can_be_disabled(make_bridge: Callable[..., Awaitable[Bridge]]) -> None:
    bridge = await make_bridge(ops={"enabled": False})
    assert bridge.ops_server is None


async def test_ops_port_in_use_is_a_clear_configuration_error(
    tmp_path: Path, hub: HubSimulator
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        bridge = Bridge(settings_for(tmp_path, hub.base_url, ops={"port": port}))
        with pytest.raises(ConfigError) as caught:
            await bridge.start()
        await bridge.stop()
    assert caught.value.field == "ops.port"
    assert f"127.0.0.1:{port}" in str(caught.value)


async def test_unknown_path_is_404(bridge: Bridge) -> None:
    assert (await get(bridge, "/nope")).status_code == 404
