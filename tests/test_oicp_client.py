"""OicpClient against the hub simulator over real (mutual) TLS sockets on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import trustme
from aiohttp import web

from bridge.certs import certificate_days_left
from bridge.config import OicpSettings
from bridge.errors import ConfigError, HubRejectedError, HubTransportError
from bridge.hubsim import HubSimulator, server_ssl_context
from bridge.oicp.client import OicpClient, parse_retry_after
from bridge.oicp.models import ActionType
from bridge.status.table import OicpStatus
from tests.oicp_schema import validate_push_body

OP = "DE*ABC"
AVAILABLE, OCCUPIED = OicpStatus.AVAILABLE, OicpStatus.OCCUPIED


@dataclass(frozen=True)
class Pki:
    ca: Path  # CA that signed the hub's and the bridge's certificates
    server: Path  # hub key + certificate chain (127.0.0.1, localhost)
    client: Path  # bridge key + certificate chain
    rogue_server: Path  # hub certificate from a CA the bridge does not trust
    client_not_after: datetime


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    ca, rogue_ca = trustme.CA(), trustme.CA()
    not_after = datetime.now(UTC).replace(microsecond=0) + timedelta(days=42)
    files = {
        "ca": ca.cert_pem,
        "server": ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem,
        "client": ca.issue_cert(
            "bridge.example.com", not_after=not_after
        ).private_key_and_cert_chain_pem,
        "rogue_server": rogue_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem,
    }
    paths = {}
    for name, blob in files.items():
        paths[name] = tmp / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    return Pki(client_not_after=not_after, **paths)


@pytest.fixture
async def hub(pki: Pki) -> AsyncIterator[HubSimulator]:
    """The simulator over TLS, requiring a client certificate from our CA."""
    context = server_ssl_context(pki.server, None, client_ca=pki.ca)
    async with HubSimulator(ssl_context=context, body_validator=validate_push_body) as sim:
        yield sim


def settings_for(base_url: str, pki: Pki, **changes: object) -> OicpSettings:
    values: dict[str, object] = {
        "base_url": base_url,
        "operator_id": OP,
        "operator_name": "ABC Charging",
        "client_cert": pki.client,
        "ca_bundle": pki.ca,
        "connect_timeout": 2.0,
        "request_timeout": 3.0,
    }
    values.update(changes)
    return OicpSettings.model_validate(values)


@pytest.fixture
async def client(hub: HubSimulator, pki: Pki) -> AsyncIterator[OicpClient]:
    async with OicpClient(settings_for(hub.base_url, pki)) as oicp:
        yield oicp


async def test_push_over_mutual_tls(hub: HubSimulator, client: OicpClient) -> None:
    assert hub.base_url.startswith("https://")
    outcome = await client.push_evse_status(
        ActionType.FULL_LOAD, [("DE*ABC*E1", AVAILABLE), ("DE*ABC*E2", OCCUPIED)]
    )
    assert (outcome.code, outcome.http_status) == ("000", 200)
    assert outcome.acknowledgment.Result is True
    assert outcome.duration_ms > 0
    outcome = await client.push_evse_status(ActionType.UPDATE, [("DE*ABC*E2", AVAILABLE)])
    assert outcome.code == "000"

    assert hub.state == {"DE*ABC*E1": "Available", "DE*ABC*E2": "Available"}
    first = hub.received[0]
    assert (first.operator_id, first.action) == (OP, "fullLoad")
    assert first.body is not None
    assert first.body["OperatorEvseStatus"]["OperatorName"] == "ABC Charging"
    validate_push_body("status", first.body)
    assert hub.schema_errors == []
    assert hub.max_in_flight == 1


def test_status_url_keeps_the_operator_id_literal(pki: Pki) -> None:
    url = OicpClient(settings_for("https://hub.example", pki)).status_url
    assert url == "https://hub.example/api/oicp/evsepush/v21/operators/DE*ABC/status-records"
    assert b"/operators/DE*ABC/" in httpx.URL(url).raw_path
    din = OicpClient(settings_for("https://hub.example", pki, operator_id="+49*536")).status_url
    assert b"/operators/+49*536/" in httpx.URL(din).raw_path


async def test_hub_certificate_from_unknown_ca_is_refused(pki: Pki) -> None:
    context = server_ssl_context(pki.rogue_server)
    async with (
        HubSimulator(ssl_context=context) as rogue,
        OicpClient(settings_for(rogue.base_url, pki)) as oicp,
    ):
        with pytest.raises(HubTransportError, match="TLS: certificate verify failed") as info:
            await oicp.push_evse_status(ActionType.UPDATE, [("DE*ABC*E1", AVAILABLE)])
        assert rogue.received == []
    assert (info.value.code, info.value.http_status) == (None, None)


async def test_system_trust_store_does_not_trust_a_private_ca(pki: Pki) -> None:
    context = server_ssl_context(pki.server)
    async with (
        HubSimulator(ssl_context=context) as sim,
        OicpClient(settings_for(sim.base_url, pki, ca_bundle=None)) as oicp,
    ):
        with pytest.raises(HubTransportError, match="certificate verify failed"):
            await oicp.push_evse_status(ActionType.UPDATE, [("DE*ABC*E1", AVAILABLE)])


async def test_hub_requiring_a_client_certificate_refuses_a_client_without(
    hub: HubSimulator, pki: Pki
) -> None:
    async with OicpClient(settings_for(hub.base_url, pki, client_cert=None)) as oicp:
        with pytest.raises(HubTransportError) as info:
            await oicp.push_evse_status(ActionType.UPDATE, [("DE*ABC*E1", AVAILABLE)])
    assert hub.received == []
    assert "POST https://127.0.0.1" in str(info.value)
    assert "no client certificate configured" in str(info.value)


async def test_hub_refuses_a_client_certificate_from_another_ca(
    hub: HubSimulator, pki: Pki
) -> None:
    settings = settings_for(hub.base_url, pki, client_cert=pki.rogue_server)
    async with OicpClient(settings) as oicp:
        with pytest.raises(HubTransportError):
            await oicp.push_evse_status(ActionType.UPDATE, [("DE*ABC*E1", AVAILABLE)])
    assert hub.received == []


async def test_update_of_unknown_evse_is_022(client: OicpClient) -> None:
    with pytest.raises(HubRejectedError) as info:
        await client.push_evse_status(ActionType.UPDATE, [("DE*ABC*E404", AVAILABLE)])
    error = info.value
    assert (error.code, error.http_status, error.retry_after) == ("022", 200, None)
    assert error.additional_info is not None and "DE*ABC*E404" in error.additional_info
    assert "code 022" in str(error)


async def test_evse_of_another_operator_is_018(client: OicpClient) -> None:
    with pytest.raises(HubRejectedError) as info:
        await client.push_evse_status(ActionType.FULL_LOAD, [("DE*XYZ*E1", AVAILABLE)])
    assert (info.value.code, info.value.http_status) == ("018", 200)


@pytest.mark.parametrize("status", [503, 429])
async def test_http_errors_carry_status_and_retry_after(
    hub: HubSimulator, client: OicpClient, status: int
) -> None:
    hub.faults.fail_http(status, count=1, retry_after=30)
    with pytest.raises(HubRejectedError) as info:
        await client.push_evse_status(ActionType.FULL_LOAD, [("DE*ABC*E1", AVAILABLE)])
    assert (info.value.http_status, info.value.retry_after, info.value.code) == (status, 30.0, None)
    assert f"HTTP {status}" in str(info.value)
    # the retry goes through and the simulator saw both attempts
    await client.push_evse_status(ActionType.FULL_LOAD, [("DE*ABC*E1", AVAILABLE)])
    assert [p.http_status for p in hub.received] == [status, 200]


async def test_retry_after_as_http_date(hub: HubSimulator, client: OicpClient) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    hub.faults.fail_http(503, count=1, retry_after=when)
    with pytest.raises(HubRejectedError) as info:
        await client.push_evse_status(ActionType.FULL_LOAD, [])
    assert info.value.retry_after is not None and 100 < info.value.retry_after <= 120


async def test_unauthorized_is_017(hub: HubSimulator, client: OicpClient) -> None:
    hub.faults.answer_code("017", count=1)
    with pytest.raises(HubRejectedError) as info:
        await client.push_evse_status(ActionType.FULL_LOAD, [])
    assert (info.value.code, info.value.http_status) == ("017", 401)
    assert info.value.description == "Unauthorized Access."


async def test_forbidden_html_page(hub: HubSimulator, client: OicpClient) -> None:
    hub.faults.fail_http(403, count=1)
    with pytest.raises(HubRejectedError, match="HTTP 403") as info:
        await client.push_evse_status(ActionType.FULL_LOAD, [])
    assert info.value.code is None
    assert info.value.additional_info is not None and "403 Forbidden" in info.value.additional_info


async def test_hang_is_a_timeout(hub: HubSimulator, pki: Pki) -> None:
    hub.faults.hang(5, count=1)
    settings = settings_for(hub.base_url, pki, request_timeout=0.3)
    async with OicpClient(settings) as oicp:
        with pytest.raises(HubTransportError, match=r"timeout after 0\.3s"):
            await oicp.push_evse_status(ActionType.FULL_LOAD, [])
        # the connection is usable again afterwards
        assert (await oicp.push_evse_status(ActionType.FULL_LOAD, [])).code == "000"


async def test_connection_refused(pki: Pki) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with OicpClient(settings_for(f"https://127.0.0.1:{port}", pki)) as oicp:
        with pytest.raises(HubTransportError, match="cannot connect"):
            await oicp.push_evse_status(ActionType.FULL_LOAD, [])


async def test_non_json_200_is_rejected() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        settings = OicpSettings(base_url=f"http://127.0.0.1:{port}", operator_id=OP)
        async with OicpClient(settings) as oicp:
            with pytest.raises(HubRejectedError, match="without an OICP acknowledgment") as info:
                await oicp.push_evse_status(ActionType.FULL_LOAD, [])
        assert (info.value.code, info.value.http_status) == (None, 200)
        assert "maintenance" in str(info.value)
    finally:
        await runner.cleanup()


def test_unreadable_client_certificate_is_a_config_error(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"oicp\.client_cert"):
        OicpClient(settings_for("https://hub.example", pki, client_cert=tmp_path / "none.pem"))
    with pytest.raises(ConfigError, match=r"oicp\.client_cert"):
        OicpClient(settings_for("https://hub.example", pki, client_cert=pki.ca))  # no key


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after(None) is None
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:01:30 GMT", now=now) == 90.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") is None


def test_certificate_days_left(pki: Pki, tmp_path: Path) -> None:
    days = certificate_days_left(pki.client)  # key first, then the certificate chain
    expected = (pki.client_not_after - datetime.now(UTC)).total_seconds() / 86400
    assert days is not None and abs(days - expected) < 0.01
    with pytest.raises(ValueError, match="no PEM certificate"):
        certificate_days_left(_garbage(tmp_path))


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.pem"
    path.write_text("not a certificate\n")
    return path


async def test_invalid_record_is_not_sent(hub: HubSimulator, client: OicpClient) -> None:
    with pytest.raises(ValueError, match="EvseID"):
        await client.push_evse_status(ActionType.UPDATE, [("CP-1", AVAILABLE)])
    assert hub.received == []
