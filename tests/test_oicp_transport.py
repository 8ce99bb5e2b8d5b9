"""The hub transport (bridge/oicp/transport.py) over real HTTPS with mutual TLS on 127.0.0.1:
connection reuse, close on error, what a failure says about the hub having the request,
certificate reload and large request bodies."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trustme
import uvloop

from bridge.config import OicpSettings
from bridge.errors import HubRejectedError, HubTransportError
from bridge.hubsim import HubSimulator, server_ssl_context
from bridge.oicp.client import OicpClient, ssl_context_for
from bridge.oicp.models import ActionType
from bridge.oicp.transport import Http11Transport
from bridge.status.table import OicpStatus

OP = "DE*ABC"
EVSE = "DE*ABC*E1"
ACK = b'{"Result":true,"StatusCode":{"Code":"000","Description":"Success."}}'
LIMITS = httpx.Limits(max_connections=2, max_keepalive_connections=2, keepalive_expiry=30.0)


# The per-module loop choice below is what pytest-asyncio still supports per module; its hook
# replacement would parametrize every test of the suite.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding the .event_loop_policy. fixture")


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    """Every test on both loops the bridge runs on (``runtime.event_loop``)."""
    if request.param == "uvloop":
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Path
    client: Path  # bridge.example.com
    renewed: Path  # renewed.example.com, same CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    blobs = {
        "ca": ca.cert_pem,
        "server": ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem,
        "client": ca.issue_cert("bridge.example.com").private_key_and_cert_chain_pem,
        "renewed": ca.issue_cert("renewed.example.com").private_key_and_cert_chain_pem,
    }
    paths = {}
    for name, blob in blobs.items():
        paths[name] = tmp / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    return Pki(**paths)


def settings_for(base_url: str, pki: Pki, **changes: object) -> OicpSettings:
    values: dict[str, object] = {
        "base_url": base_url,
        "operator_id": OP,
        "client_cert": pki.client,
        "ca_bundle": pki.ca,
        "connect_timeout": 1.0,
        "request_timeout": 2.0,
        **changes,
    }
    return OicpSettings.model_validate(values)


@dataclass
class Conn:
    """What a raw TLS hub saw of one connection."""

    client_name: str
    requests: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Conn], Awaitable[None]]


@asynccontextmanager
async def tls_hub(pki: Pki, serve: Serve) -> AsyncIterator[tuple[str, list[Conn]]]:
    """A hub on raw TLS sockets that requires a client certificate of our CA."""
    conns: list[Conn] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cert = writer.get_extra_info("peercert")
        conn = Conn(cert["subjectAltName"][0][1])
        conns.append(conn)
        try:
            await serve(reader, writer, conn)
            await reader.read()  # until the client closes
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            conn.closed.set()
            writer.close()

    context = server_ssl_context(pki.server, None, client_ca=pki.ca)
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}", conns
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request with Content-Length or chunked encoding."""
    head = await reader.readuntil(b"\r\n\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in head.rstrip(b"\r\n").split(b"\r\n")[1:])
    if fields.get(b"transfer-encoding") == b"chunked":
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size + 2)
            del body[-2:]
        await reader.readuntil(b"\r\n")
        return head, bytes(body)
    return head, await reader.readexactly(int(fields[b"content-length"]))


def answer(body: bytes = ACK, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


async def push(oicp: OicpClient) -> str:
    try:
        outcome = await oicp.push_evse_status(ActionType.UPDATE, [(EVSE, OicpStatus.AVAILABLE)])
    except HubTransportError as exc:
        return f"{'maybe' if exc.maybe_applied else 'not'} sent: {exc}"
    except HubRejectedError as exc:
        return f"rejected: {exc}"
    return f"ok {outcome.code}"


async def test_one_connection_carries_every_push(pki: Pki) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, c: Conn) -> None:
        while True:
            c.requests.append((await read_request(reader))[1])
            writer.write(answer())

    async with tls_hub(pki, serve) as (url, conns):
        async with OicpClient(settings_for(url, pki)) as oicp:
            assert [await push(oicp) for _ in range(20)] == ["ok 000"] * 20
        await asyncio.wait_for(conns[0].closed.wait(), 2)  # closed with the client
    assert len(conns) == 1
    assert conns[0].client_name == "bridge.example.com"  # mutual TLS
    assert len(conns[0].requests) == 20


async def test_a_connection_that_failed_is_never_used_again(pki: Pki) -> None:
    """Garbage, a cancelled exchange and ``Connection: close`` each end their connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, c: Conn) -> None:
        number = len(conns)
        c.requests.append((await read_request(reader))[1])
        if number == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef")  # 3 too many
        elif number == 2:
            await reader.read()  # no answer: the client gives up (its total timeout)
        elif number == 3:
            writer.write(answer()[:17] + b"Connection: close\r\n" + answer()[17:])
        else:
            writer.write(answer())

    async with tls_hub(pki, serve) as (url, conns):
        oicp = OicpClient(settings_for(url, pki, request_timeout=0.3))
        results = [await push(oicp) for _ in range(4)]
        await asyncio.sleep(0.2)  # the hub's side of each close
        closed = [conn.closed.is_set() for conn in conns]  # before the client's close
        await oicp.aclose()
    assert closed == [True, True, True, False]
    assert results[0].startswith("rejected: hub answered HTTP 200 without an OICP acknowledgment")
    assert results[1] == f"maybe sent: timeout after 0.3s (POST {url}{STATUS})"
    assert results[2:] == ["ok 000", "ok 000"]
    assert len(conns) == 4
    assert [len(c.requests) for c in conns] == [1, 1, 1, 1]


STATUS = "/api/oicp/evsepush/v21/operators/DE*ABC/status-records"


@pytest.fixture
async def hub(pki: Pki) -> AsyncIterator[HubSimulator]:
    context = server_ssl_context(pki.server, None, client_ca=pki.ca)
    async with HubSimulator(ssl_context=context) as sim:
        yield sim


async def test_what_a_failure_says_about_the_hub_having_the_request(
    hub: HubSimulator, pki: Pki, unused_tcp_port: int
) -> None:
    """Only a connection that never opened is sure not to have carried the request."""
    settings = settings_for(hub.base_url, pki, request_timeout=0.3)
    async with OicpClient(settings) as oicp:
        await oicp.push_evse_status(ActionType.FULL_LOAD, [(EVSE, OicpStatus.OCCUPIED)])
        hub.faults.drop(count=1, apply=True)  # applied, then the connection closed
        assert (await push(oicp)).startswith("maybe sent: connection closed by hub")
        assert hub.state == {EVSE: "Available"}
        hub.faults.hang(5, count=1)
        assert (await push(oicp)).startswith("maybe sent: timeout after 0.3s")
        assert await push(oicp) == "ok 000"  # on a new connection
    refused = settings_for(f"https://127.0.0.1:{unused_tcp_port}", pki)
    async with OicpClient(refused) as oicp:
        assert (await push(oicp)).startswith("not sent: cannot connect")
    untrusted = settings_for(hub.base_url, pki, ca_bundle=None)  # the system store
    async with OicpClient(untrusted) as oicp:
        assert (await push(oicp)).startswith("not sent: TLS: certificate verify failed")


async def test_a_reloaded_certificate_is_used_from_the_next_connection(pki: Pki) -> None:
    gate, second = asyncio.Event(), asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, c: Conn) -> None:
        while True:
            c.requests.append((await read_request(reader))[1])
            if len(c.requests) == 2:
                second.set()
                await gate.wait()  # the reload happens while this request is in flight
            writer.write(answer())

    async with tls_hub(pki, serve) as (url, conns):
        settings = settings_for(url, pki)
        async with OicpClient(settings) as oicp:
            assert await push(oicp) == "ok 000"
            in_flight = asyncio.create_task(push(oicp))
            await asyncio.wait_for(second.wait(), 2)
            renewed = settings.model_copy(update={"client_cert": pki.renewed})
            oicp.use_tls(ssl_context_for(renewed))
            gate.set()
            assert await in_flight == "ok 000"  # finished on the old connection
            assert await push(oicp) == "ok 000"
            await asyncio.wait_for(conns[0].closed.wait(), 2)  # the old one is closed
    assert [c.client_name for c in conns] == ["bridge.example.com", "renewed.example.com"]
    assert [len(c.requests) for c in conns] == [2, 1]


async def test_large_bodies_are_streamed(pki: Pki) -> None:
    """Tens of MB as bytes and as an async iterator (chunked); the iterator is not read
    further ahead than the socket and TLS buffers while the hub does not read."""
    size = 32 * 1024 * 1024
    blob = bytes(range(256)) * (size // 256)
    produced = 0
    produced_before_hub_read: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, c: Conn) -> None:
        while True:
            if len(c.requests) == 1:
                await asyncio.sleep(0.5)  # the iterator must wait for us
                produced_before_hub_read.append(produced)
            head, body = await read_request(reader)
            c.requests.append(head)
            digest = hashlib.sha256(body).hexdigest().encode()
            writer.write(answer(b"%d %s" % (len(body), digest)))

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal produced
        for start in range(0, size, 256 * 1024):
            produced += 256 * 1024
            yield blob[start : start + 256 * 1024]

    expected = b"%d %s" % (size, hashlib.sha256(blob).hexdigest().encode())
    context = ssl_context_for(settings_for("https://x", pki))
    async with tls_hub(pki, serve) as (url, conns):
        transport = Http11Transport(context, limits=LIMITS)
        async with httpx.AsyncClient(transport=transport, timeout=20) as http:
            as_bytes = await http.post(f"{url}/data", content=blob)
            as_stream = await http.post(f"{url}/data", content=chunks())
    assert (as_bytes.status_code, as_bytes.content) == (200, expected)
    assert (as_stream.status_code, as_stream.content) == (200, expected)
    assert b"transfer-encoding: chunked" in conns[0].requests[1].lower()
    assert len(conns) == 1
    assert produced_before_hub_read[0] < size // 2


async def test_an_answer_before_the_whole_body_is_returned(pki: Pki) -> None:
    """A hub that refuses a large body (413) and closes before reading it all."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, c: Conn) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"too large", b"413 Payload Too Large"))
        await writer.drain()
        writer.close()

    context = ssl_context_for(settings_for("https://x", pki))
    async with tls_hub(pki, serve) as (url, _):
        transport = Http11Transport(context, limits=LIMITS)
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            response = await http.post(f"{url}/data", content=b"x" * (64 * 1024 * 1024))
    assert (response.status_code, response.content) == (413, b"too large")
