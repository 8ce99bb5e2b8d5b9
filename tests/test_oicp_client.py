"""OicpClient against the hub simulator over real (mutual) TLS sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import gzip
import itertools
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import trustme
from aiohttp import web
from pydantic import ValidationError

from bridge.certs import certificate_days_left
from bridge.config import OicpSettings
from bridge.errors import ConfigError, HubRejectedError, HubTransportError
from bridge.hubsim import HubSimulator, server_ssl_context
from bridge.oicp.client import OicpClient, parse_retry_after
from bridge.oicp.models import ActionType, StatusRequestEncoder, build_status_request
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


async def test_pushes_leave_no_reference_cycles(client: OicpClient) -> None:
    """Every push is freed by reference counting alone: cyclic garbage from a thousand pushes a
    second makes the GC stop the event loop for tens of milliseconds (bench/RESULTS.md)."""
    await client.push_evse_status(ActionType.FULL_LOAD, [("DE*ABC*E1", AVAILABLE)])
    gc.collect()
    gc.disable()
    try:
        for status in itertools.islice(itertools.cycle((OCCUPIED, AVAILABLE)), 20):
            await client.push_evse_status(ActionType.UPDATE, [("DE*ABC*E1", status)])
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = {type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith(
            ("httpx", "aiohttp", "bridge.oicp"))}  # fmt: skip
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == set()


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


# --- request bodies written without the models (StatusRequestEncoder) ---------------------------

EVSE_IDS = ["DE*ABC*E1", "DEABCE0001*1", "DE*ABC*E0001*2*A", "+49*536*1*2", "DE*ABC*E9\n"]
ODD_NAME = 'Ä "Stadtwerke" \\ Süd\t\u2028/\x7f'  # escapes, non-ASCII, a control character


@pytest.mark.parametrize("operator", [(OP, None), (OP, "ABC Charging"), ("+49*536", ODD_NAME)])
def test_encoded_bodies_are_the_model_bytes(operator: tuple[str, str | None]) -> None:
    operator_id, name = operator
    encoder = StatusRequestEncoder(operator_id, name)
    evses = [e for e in EVSE_IDS if e.startswith(operator_id[:2])]
    record_sets: list[list[tuple[str, OicpStatus]]] = [[]]
    record_sets += [[(evse, status)] for evse in evses for status in OicpStatus]
    record_sets.append(list(zip(itertools.cycle(evses), OicpStatus, strict=False)))
    for action, records in itertools.product(ActionType, record_sets):
        expected = build_status_request(action, operator_id, name, records)
        expected_bytes = expected.model_dump_json(exclude_none=True).encode()
        first, again = encoder.encode(action, records), encoder.encode(action, records)
        assert first == again == expected_bytes, (action, records)
        validate_push_body("status", json.loads(again))


def test_encoder_leaves_anything_unusual_to_the_models() -> None:
    encoder = StatusRequestEncoder(OP, None)
    encoder.encode(ActionType.UPDATE, [("DE*ABC*E1", AVAILABLE)])  # envelope now cached
    as_text = [("DE*ABC*E1", "Available")]  # a str, not an OicpStatus: coerced by the models
    expected = build_status_request(ActionType.UPDATE, OP, None, as_text).model_dump_json()  # type: ignore[arg-type]
    assert encoder.encode(ActionType.UPDATE, as_text) == expected.encode()  # type: ignore[arg-type]
    for bad in ([("CP-1", AVAILABLE)], [("DE*ABC*E1", "Free")]):
        with pytest.raises(ValidationError):
            encoder.encode(ActionType.UPDATE, bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        encoder.encode("replace", [])  # type: ignore[arg-type]


async def test_invalid_record_is_not_sent_after_valid_ones(
    hub: HubSimulator, client: OicpClient
) -> None:
    await client.push_evse_status(ActionType.FULL_LOAD, [("DE*ABC*E1", AVAILABLE)])
    with pytest.raises(ValueError, match="EvseID"):
        await client.push_evse_status(
            ActionType.UPDATE, [("DE*ABC*E1", AVAILABLE), ("CP-1", OCCUPIED)]
        )
    assert len(hub.received) == 1


# --- the HTTP/1.1 transport: answers and failures over real sockets ----------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ACK = b'{"Result":true,"StatusCode":{"Code":"000","Description":"Success."}}'


@asynccontextmanager
async def raw_hub(handler: Handler) -> AsyncIterator[str]:
    """A plain-TCP 'hub' whose every connection is served by ``handler``; yields its base URL."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


def answer(body: bytes, *headers: bytes, status: bytes = b"200 OK") -> bytes:
    lines = [
        b"HTTP/1.1 " + status,
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
    ]
    return b"\r\n".join([*lines, *headers, b"", body])


async def push_to(base_url: str, count: int = 1, **changes: object) -> list[str]:
    """Push ``count`` times; what each push gave (``ok 000`` or the error's text)."""
    settings = OicpSettings.model_validate(
        {
            "base_url": base_url,
            "operator_id": OP,
            "connect_timeout": 0.3,
            "request_timeout": 0.5,
            **changes,
        }
    )
    results = []
    async with OicpClient(settings) as oicp:
        for _ in range(count):
            try:
                outcome = await oicp.push_evse_status(ActionType.UPDATE, [("DE*ABC*E1", AVAILABLE)])
                results.append(f"ok {outcome.code}")
            except (HubTransportError, HubRejectedError) as exc:
                results.append(str(exc))
    return results


async def test_request_on_the_wire() -> None:
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            requests.append(await read_request(reader))
            writer.write(answer(ACK))

    async with raw_hub(serve) as url:
        assert await push_to(url, 2) == ["ok 000", "ok 000"]
    assert len(requests) == 2  # one connection, kept alive
    head, body = requests[0].split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/oicp/evsepush/v21/operators/DE*ABC/status-records HTTP/1.1"
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    assert headers.pop(b"User-Agent").startswith(b"python-httpx/")  # httpx built the request
    assert headers == {
        b"Host": url.removeprefix("http://").encode(),
        b"Accept": b"application/json",
        b"Accept-Encoding": b"gzip, deflate",
        b"Connection": b"keep-alive",
        b"Content-Type": b"application/json; charset=utf-8",
        b"Content-Length": str(len(body)).encode(),
    }
    expected = build_status_request(ActionType.UPDATE, OP, None, [("DE*ABC*E1", AVAILABLE)])
    assert body == expected.model_dump_json().encode()


async def test_changing_acknowledgments_are_each_parsed() -> None:
    answers = [b'{"Result":true,"StatusCode":{"Code":"000"},"SessionID":"s1"}',
               b'{"Result":true,"StatusCode":{"Code":"000"},"SessionID":"s1"}',
               b'{"Result":true,"StatusCode":{"Code":"000"},"SessionID":"s2"}',
               b'{"Result":false,"StatusCode":{"Code":"000"},"SessionID":"s1"}']  # fmt: skip

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for body in answers:
            await read_request(reader)
            writer.write(answer(body))

    settings = OicpSettings(base_url="http://127.0.0.1:1", operator_id=OP)
    async with raw_hub(serve) as url:
        settings = settings.model_copy(update={"base_url": url})
        async with OicpClient(settings) as oicp:
            record = [("DE*ABC*E1", AVAILABLE)]
            outcomes = [await oicp.push_evse_status(ActionType.UPDATE, record) for _ in range(3)]
            with pytest.raises(HubRejectedError, match="Result false"):
                await oicp.push_evse_status(ActionType.UPDATE, record)
    assert [o.acknowledgment.SessionID for o in outcomes] == ["s1", "s1", "s2"]


async def test_compressed_and_chunked_answers() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(gzip.compress(ACK), b"Content-Encoding: gzip"))
        await read_request(reader)
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(ACK), ACK)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
        await read_request(reader)
        writer.write(answer(b"not gzip", b"Content-Encoding: gzip"))

    async with raw_hub(serve) as url:
        results = await push_to(url, 3)
    assert results[:2] == ["ok 000", "ok 000"]
    assert results[2].startswith("DecodingError: ")


async def test_a_keep_alive_connection_closed_by_the_hub_is_replaced() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(ACK))  # keep-alive, but then the hub closes it while idle

    async with raw_hub(serve) as url:
        settings = OicpSettings(base_url=url, operator_id=OP)
        async with OicpClient(settings) as oicp:
            for _ in range(3):
                await oicp.push_evse_status(ActionType.UPDATE, [("DE*ABC*E1", AVAILABLE)])
                await asyncio.sleep(0.05)


async def _no_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)


async def _not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


async def _short_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(answer(ACK)[:-5])


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _stall_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(answer(ACK)[:-5])
    await asyncio.sleep(5)


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (_no_answer, "connection closed by hub: Server disconnected without sending a response."),
        (_not_http, "connection closed by hub: Bad status line"),
        (_short_body, "connection closed by hub: Not enough data"),
        (_reset, "read error: Connection reset by peer"),
        (_stall_body, "timeout after 0.5s"),
    ],
)
async def test_broken_answers_are_transport_errors(handler: Handler, expected: str) -> None:
    async with raw_hub(handler) as url:
        (result,) = await push_to(url)
    assert result.startswith(expected)
    assert result.endswith(f"(POST {url}/api/oicp/evsepush/v21/operators/DE*ABC/status-records)")


async def test_tls_handshake_that_never_completes_is_a_connect_timeout(pki: Pki) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)  # accepts TCP, never answers the ClientHello

    async with raw_hub(silent) as url:
        https = url.replace("http:", "https:")
        (result,) = await push_to(https, ca_bundle=pki.ca, connect_timeout=0.2)
    assert result.startswith("connect timeout after 0.2s (POST https://")


def test_parse_retry_after_ignores_non_ascii_digits() -> None:
    assert parse_retry_after("²") is None  # str.isdigit() is true, float() refuses it
