"""Proxy mode: the handshake. The CSMS connection opens first; the charger gets its verdict.

Upstream down or slow → 503 + Retry-After; the CSMS's 401/403/404 → the same status; other
answers → 502. Subprotocols offered unchanged, the CSMS's choice answered; credentials passed
through, per charger, or a client certificate of the bridge; the bridge's own checks still apply.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import trustme
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from bridge.app import Bridge
from bridge.config import load_settings
from bridge.devtools.csms_sim import CsmsSimulator
from bridge.errors import ConfigError
from bridge.hubsim import HubSimulator
from bridge.passwords import hash_password
from tests.conftest import CHARGERS, Events, eventually, pushes
from tests.proxied import proxy_ocpp, session_charger

MakeBridge = Callable[..., Awaitable[Bridge]]
PASSWORD = "a-charger-password-of-20"
LOGIN = {"Authorization": "Basic " + base64.b64encode(f"CP16:{PASSWORD}".encode()).decode()}
EVSES = {"CP16": {"evses": {1: "DE*ABC*E16*1", 2: "DE*ABC*E16*2"}}}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def refused(port: int, cp_id: str = "CP16", **headers: str) -> Any:
    """The HTTP response of a refused charger handshake."""
    with pytest.raises(InvalidStatus) as caught:
        await websockets.connect(f"ws://127.0.0.1:{port}/ocpp/{cp_id}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                 additional_headers=headers, open_timeout=10)  # fmt: skip
    return caught.value.response


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the CSMS cannot be used -----------------------------------------------------------------------
async def test_upstream_down_at_connect_is_503_with_retry_after(
    make_bridge: MakeBridge, events: Events
) -> None:
    url = f"ws://127.0.0.1:{free_port()}/ocpp/{{charge_point_id}}"  # nothing listens there
    bridge = await make_bridge(ocpp=proxy_ocpp(url))
    for _ in range(3):
        response = await refused(bridge.ocpp.port)
        assert response.status_code == 503 and response.headers["Retry-After"] == "7"
    assert bridge.ocpp.sessions == {}
    lines = events.named("proxy.upstream_refused")
    assert len(lines) == 1  # a CSMS outage is one line per window, not one per charger
    assert lines[0]["reason"] == "unreachable" and lines[0]["refused"] == 1
    assert bridge.ocpp.proxy is not None
    assert bridge.ocpp.proxy.stats.handshakes["unreachable"] == 3
    assert events.named("ocpp.auth_failed") == []  # not the charger's fault: no throttling


async def test_silent_csms_is_503_after_connect_timeout(make_bridge: MakeBridge) -> None:
    silent: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # TCP accepted, never an HTTP answer

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        ocpp = proxy_ocpp(f"ws://127.0.0.1:{port}/ocpp/{{charge_point_id}}", connect_timeout=0.3)
        bridge = await make_bridge(ocpp=ocpp)
        response = await refused(bridge.ocpp.port)
        assert response.status_code == 503 and response.headers["Retry-After"] == "7"
        assert bridge.ocpp.proxy is not None
        assert bridge.ocpp.proxy.stats.handshakes["timeout"] == 1
    finally:
        for writer in silent:
            writer.close()
        server.close()


@contextlib.asynccontextmanager
async def answering(status: int, **headers: str) -> AsyncIterator[str]:
    """A websocket server refusing every handshake with ``status``; yields the URL template."""

    def process_request(connection: ServerConnection, request: Request) -> Response:
        response = connection.respond(HTTPStatus(status), "csms-internal-detail\n")
        for name, value in headers.items():
            response.headers[name] = value
        return response

    async with serve(lambda c: asyncio.sleep(0), "127.0.0.1", 0,
                     process_request=process_request) as server:  # fmt: skip
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ocpp/{{charge_point_id}}"


@pytest.mark.parametrize(
    ("csms_status", "csms_headers", "status", "retry_after"),
    [
        (500, {}, 502, "7"),
        (400, {}, 502, "7"),
        (503, {"Retry-After": "42"}, 503, "42"),  # the CSMS's own Retry-After is kept
        (429, {}, 503, "7"),
        (403, {}, 403, None),
        (404, {}, 404, None),
    ],
)
async def test_csms_answers_are_mapped(
    make_bridge: MakeBridge,
    csms_status: int,
    csms_headers: dict[str, str],
    status: int,
    retry_after: str | None,
) -> None:
    async with answering(csms_status, **csms_headers) as url:
        bridge = await make_bridge(ocpp=proxy_ocpp(url))
        response = await refused(bridge.ocpp.port)
    assert response.status_code == status
    assert response.headers.get("Retry-After") == retry_after
    assert b"csms-internal-detail" not in response.body  # the CSMS body stays here


async def test_csms_refusals_are_relayed_and_throttled_as_failed_logins(
    make_bridge: MakeBridge, events: Events
) -> None:
    async with CsmsSimulator(passwords={"CP16": PASSWORD}, known={"CP16"}) as csms:
        ocpp = proxy_ocpp(csms.url)
        ocpp["security"] = {"profile": 1, "auth_failure_limit": 2}
        bridge = await make_bridge(ocpp=ocpp, chargers=EVSES)  # profile 1, no hash: pass-through
        port = bridge.ocpp.port
        wrong = await refused(port, Authorization=basic("CP16", "not-the-password-1234"))
        assert wrong.status_code == 401
        assert wrong.headers["WWW-Authenticate"] == 'Basic realm="CSMS simulator"'
        # Right password: the CSMS accepts it, the bridge never saw a hash for it.
        async with session_charger(port, "CP16",
                                   headers=LOGIN) as cp:  # fmt: skip
            assert (await cp.boot()).status == "Accepted"
        assert csms.handshakes[-1].authorization == basic("CP16", PASSWORD)
        # A second CSMS refusal uses up the address's budget; then 429 without asking the CSMS.
        again = await refused(port, Authorization=basic("CP16", "still-wrong-123456"))
        assert again.status_code == 401
        asked = len(csms.handshakes)
        throttled = await refused(port, Authorization=basic("CP16", PASSWORD))
        assert throttled.status_code == 429 and len(csms.handshakes) == asked
    failures = events.named("ocpp.auth_failed")
    assert [f["reason"] for f in failures][:2] == ["upstream_refused", "upstream_refused"]
    assert failures[0]["detail"] == "the CSMS answered 401"
    assert len(events.named("ocpp.auth_throttled")) == 1


async def test_username_is_checked_by_the_bridge_even_in_pass_through(
    make_bridge: MakeBridge,
) -> None:
    async with CsmsSimulator() as csms:
        ocpp = {**proxy_ocpp(csms.url), "security": {"profile": 1}}
        bridge = await make_bridge(ocpp=ocpp, chargers=EVSES)
        # CP16 may not log in with another charger's name, whatever the CSMS would say.
        response = await refused(bridge.ocpp.port, Authorization=basic("CP201", PASSWORD))
        assert response.status_code == 401
        assert csms.handshakes == []


async def test_bridge_checks_its_own_hash_first_when_it_has_one(make_bridge: MakeBridge) -> None:
    async with CsmsSimulator(passwords={"CP16": PASSWORD}) as csms:
        chargers = {"CP16": {"evses": EVSES["CP16"]["evses"],
                             "password_hash": hash_password(PASSWORD, n=2**10)}}  # fmt: skip
        ocpp = {**proxy_ocpp(csms.url), "security": {"profile": 1}}
        bridge = await make_bridge(ocpp=ocpp, chargers=chargers)
        response = await refused(bridge.ocpp.port, Authorization=basic("CP16", "x" * 20))
        assert response.status_code == 401 and csms.handshakes == []
        async with session_charger(bridge.ocpp.port, "CP16",
                                   headers=LOGIN) as cp:  # fmt: skip
            assert (await cp.boot()).status == "Accepted"  # and passed on to the CSMS


async def test_per_charger_credentials_replace_the_chargers_own(make_bridge: MakeBridge) -> None:
    async with CsmsSimulator(passwords={"CP16": "upstream-secret-for-CP16"}) as csms:
        digest = hash_password(PASSWORD, n=2**10)
        chargers = {  # the conftest registry's CP201 is merged in: it needs the same keys
            cp_id: {**entry, "password_hash": digest,
                    "upstream_password": f"upstream-secret-for-{cp_id}"}
            for cp_id, entry in CHARGERS.items()
        }  # fmt: skip
        ocpp = {**proxy_ocpp(csms.url, credentials="per_charger"), "security": {"profile": 1}}
        bridge = await make_bridge(ocpp=ocpp, chargers=chargers)
        async with session_charger(bridge.ocpp.port, "CP16",
                                   headers=LOGIN) as cp:  # fmt: skip
            assert (await cp.boot()).status == "Accepted"
        assert csms.handshakes[0].authorization == basic("CP16", "upstream-secret-for-CP16")
        assert csms.handshakes[0].forwarded_for == "127.0.0.1"


async def test_sighup_rereads_upstream_password_files_all_or_nothing(
    make_bridge: MakeBridge, tmp_path: Path, events: Events
) -> None:
    files = {cp_id: tmp_path / f"{cp_id}.upstream" for cp_id in CHARGERS}
    for cp_id, path in files.items():
        path.write_text(f"old-secret-for-{cp_id}\n")
    async with CsmsSimulator(passwords={"CP16": "old-secret-for-CP16"}) as csms:
        digest = hash_password(PASSWORD, n=2**10)
        chargers = {cp_id: {**entry, "password_hash": digest,
                            "upstream_password_file": files[cp_id]}
                    for cp_id, entry in CHARGERS.items()}  # fmt: skip
        ocpp = {**proxy_ocpp(csms.url, credentials="per_charger"), "security": {"profile": 1}}
        bridge = await make_bridge(ocpp=ocpp, chargers=chargers)
        async with session_charger(bridge.ocpp.port, "CP16", headers=LOGIN) as cp:
            assert (await cp.boot()).status == "Accepted"
            # The CSMS's password changes; the file is renewed, then the bridge is told.
            csms.passwords["CP16"] = "new-secret-for-CP16"
            files["CP16"].write_text("new-secret-for-CP16\n")
            files["CP201"].write_text("")  # unusable: nothing of this reload is taken
            bridge._on_sighup()  # what the SIGHUP handler of `oicp-bridge run` calls
            (failed,) = events.named("proxy.reload_failed")
            assert failed["field"] == "chargers.CP201.upstream_password_file"
            assert (await cp.boot()).status == "Accepted"  # the open connection is not touched
        assert [h.authorization for h in csms.handshakes] == [basic("CP16", "old-secret-for-CP16")]
        files["CP201"].write_text("new-secret-for-CP201\n")
        bridge._on_sighup()
        assert "the CSMS connection's" in events.named("bridge.sighup")[-1]["action"]
        async with session_charger(bridge.ocpp.port, "CP16", headers=LOGIN) as cp:
            assert (await cp.boot()).status == "Accepted"
        assert csms.handshakes[-1].authorization == basic("CP16", "new-secret-for-CP16")


# -- subprotocols ----------------------------------------------------------------------------------
async def test_offers_exactly_what_the_charger_offered_and_answers_the_csms_choice(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    async with CsmsSimulator() as csms:
        bridge = await make_bridge(ocpp=proxy_ocpp(csms.url))
        offered = ["ocpp1.6", "ocpp2.0.1", "ocpp9.9"]
        async with session_charger(bridge.ocpp.port, "CP201", "2.0.1",
                                   subprotocols=offered) as cp:  # fmt: skip
            assert cp.ws.subprotocol == "ocpp2.0.1"  # the CSMS prefers 2.0.1; the bridge follows
            await cp.status(1, "Occupied")
            await eventually(lambda: pushes(hub) == [("insert", "DE*ABC*E201*1", "Occupied")])
        assert csms.handshakes[0].offered == offered


async def test_a_subprotocol_the_bridge_does_not_know_is_relayed_untapped(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    received: list[str | bytes] = []

    async def echo(connection: ServerConnection) -> None:
        async for frame in connection:
            received.append(frame)
            await connection.send(frame)

    async with serve(echo, "127.0.0.1", 0, subprotocols=["ocpp2.1"]) as csms:  # type: ignore[list-item]
        port = next(iter(csms.sockets)).getsockname()[1]
        bridge = await make_bridge(ocpp=proxy_ocpp(f"ws://127.0.0.1:{port}/o/{{charge_point_id}}"))
        async with websockets.connect(f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16",
                                      subprotocols=["ocpp2.1"]) as ws:  # type: ignore[list-item]  # fmt: skip
            assert ws.subprotocol == "ocpp2.1"
            frame = '[2,"1","StatusNotification",{"evseId":1,"connectorId":1}]'
            await ws.send(frame)
            assert await ws.recv() == frame
            assert bridge.ocpp.connected_by_protocol() == {"ocpp2.1": 1}
    assert received == [frame] and hub.received == []  # relayed, not tapped


async def test_no_subprotocol_the_csms_closes_and_the_charger_hears_it(
    make_bridge: MakeBridge,
) -> None:
    async with CsmsSimulator() as csms:
        bridge = await make_bridge(ocpp=proxy_ocpp(csms.url))
        async with websockets.connect(f"ws://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16") as ws:
            assert ws.subprotocol is None
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1002  # the CSMS's own close code, relayed


# -- TLS toward the CSMS ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def csms_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("csms-pki")
    ca, bridge_ca, other = trustme.CA(), trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.configure_cert(context)
    bridge_ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED  # the CSMS wants profile 3 from its clients
    ca.cert_pem.write_to_path(str(tmp / "csms-ca.pem"))
    other.cert_pem.write_to_path(str(tmp / "other-ca.pem"))
    bridge_ca.issue_cert("bridge.example", common_name="ocpp-oicp-bridge") \
        .private_key_and_cert_chain_pem.write_to_path(str(tmp / "bridge.pem"))  # fmt: skip
    return {"context": context, "ca": tmp / "csms-ca.pem", "other": tmp / "other-ca.pem",
            "cert": tmp / "bridge.pem"}  # fmt: skip


async def test_bridge_client_certificate_for_a_profile_3_csms(
    make_bridge: MakeBridge, csms_pki: dict[str, Any]
) -> None:
    async with CsmsSimulator(ssl=csms_pki["context"]) as csms:
        ocpp = proxy_ocpp(csms.url, credentials="none", ca_bundle=csms_pki["ca"],
                          client_cert=csms_pki["cert"])  # fmt: skip
        bridge = await make_bridge(ocpp=ocpp)
        async with session_charger(bridge.ocpp.port, "CP16",
                                   headers=LOGIN) as cp:  # fmt: skip
            assert (await cp.boot()).status == "Accepted"
        shake = csms.handshakes[0]
        assert shake.client_cert_cn == "ocpp-oicp-bridge" and shake.authorization is None


async def test_untrusted_csms_certificate_is_502(
    make_bridge: MakeBridge, csms_pki: dict[str, Any], events: Events
) -> None:
    async with CsmsSimulator(ssl=csms_pki["context"]) as csms:
        ocpp = proxy_ocpp(csms.url, ca_bundle=csms_pki["other"], client_cert=csms_pki["cert"])
        bridge = await make_bridge(ocpp=ocpp)
        response = await refused(bridge.ocpp.port)
    assert response.status_code == 502 and response.headers["Retry-After"] == "7"
    assert events.named("proxy.upstream_refused")[0]["reason"] == "tls"


# -- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ocpp", "chargers", "field", "words"),
    [
        ({"mode": "proxy"}, {}, "ocpp.upstream.url", "CSMS URL is needed"),
        ({}, {"CP1": {"evses": {1: "DE*ABC*E1*1"}, "mode": "proxy"}}, "ocpp.upstream.url",
         "CP1 is proxied"),
        ({"upstream": {"url": "wss://csms.example/ocpp"}}, {}, "ocpp.upstream.url",
         "{charge_point_id}"),
        ({"upstream": {"url": "https://csms.example/{charge_point_id}"}}, {}, "ocpp.upstream.url",
         "ws:// or wss://"),
        ({"upstream": {"url": "wss://u:p@csms.example/{charge_point_id}"}}, {},
         "ocpp.upstream.url", "no credentials in the URL"),
        ({"upstream": {"url": "wss://csms.example/{cp}"}}, {}, "ocpp.upstream.url",
         "unknown placeholder"),
        ({"upstream": {"url": "ws://csms.example/{charge_point_id}", "client_cert": "/x.pem"}},
         {}, "ocpp.upstream", "use wss://"),
        ({"mode": "proxy", "upstream": {"url": "wss://c/{charge_point_id}",
                                        "connect_timeout": 10}},
         {}, "ocpp.upstream.connect_timeout", "below ocpp.security.handshake_timeout"),
        ({"mode": "proxy", "upstream": {"url": "wss://c/{charge_point_id}",
                                        "credentials": "per_charger"}},
         {"CP1": {"evses": {1: "DE*ABC*E1*1"}}}, "chargers.CP1.upstream_password",
         "per_charger"),
        ({"mode": "csms", "security": {"profile": 1}}, {"CP1": {"evses": {1: "DE*ABC*E1*1"}}},
         "chargers.CP1.password_hash", "needs a password hash"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_field(
    tmp_path: Path, ocpp: dict[str, Any], chargers: dict[str, Any], field: str, words: str
) -> None:
    import yaml

    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump({"ocpp": ocpp, "chargers": chargers}))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.field == field, caught.value
    assert words in caught.value.reason


def test_pass_through_needs_no_hash_and_allows_unlisted_chargers_with_passwords(
    tmp_path: Path,
) -> None:
    import yaml

    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump({
        "ocpp": {"mode": "proxy", "allow_unlisted": True,
                 "evse_id_template": "{operator}*E{charge_point}*{evse}",
                 "security": {"profile": 1},
                 "upstream": {"url": "wss://csms.example/ocpp/{charge_point_id}"}},
        "chargers": {"CP1": {"evses": {1: "DE*ABC*E1*1"}}},
    }))  # fmt: skip
    settings = load_settings(path)
    assert settings.ocpp.upstream.credentials == "pass_through"


def test_check_config_loads_the_upstream_files(tmp_path: Path) -> None:
    from bridge.ops.check_config_cmd import check_settings

    (tmp_path / "not-a-ca.pem").write_text("nothing here\n")
    base = {"mode": "proxy", "upstream": {"url": "wss://csms.example/ocpp/{charge_point_id}"}}
    settings = load_settings(None, ocpp=base)
    assert check_settings(settings).facts["proxy"].startswith("wss://csms.example/ocpp/")
    bad_ca = {**base, "upstream": {**base["upstream"], "ca_bundle": tmp_path / "not-a-ca.pem"}}
    problems = check_settings(load_settings(None, ocpp=bad_ca)).problems
    assert any(p.startswith("ocpp.upstream.ca_bundle:") for p in problems), problems
    per_charger = {**base, "upstream": {**base["upstream"], "credentials": "per_charger"}}
    chargers = {"CP1": {"evses": {1: "DE*ABC*E1*1"},
                        "upstream_password_file": tmp_path / "missing"}}  # fmt: skip
    problems = check_settings(load_settings(None, ocpp=per_charger, chargers=chargers)).problems
    assert any(p.startswith("chargers.CP1.upstream_password_file:") for p in problems), problems
    plain = {**base, "upstream": {"url": "ws://10.1.2.3/ocpp/{charge_point_id}"}}
    assert any("plain ws://" in w for w in check_settings(load_settings(None, ocpp=plain)).warnings)


async def test_unlisted_chargers_log_in_at_the_csms_through_the_bridge(
    make_bridge: MakeBridge, hub: HubSimulator
) -> None:
    async with CsmsSimulator(passwords={"CP-NEW": PASSWORD}) as csms:
        ocpp = {**proxy_ocpp(csms.url), "security": {"profile": 1}, "allow_unlisted": True,
                "evse_id_template": "{operator}*E{charge_point}*{evse}"}  # fmt: skip
        bridge = await make_bridge(ocpp=ocpp, chargers=EVSES)
        login = {"Authorization": basic("CP-NEW", PASSWORD)}
        async with session_charger(bridge.ocpp.port, "CP-NEW", headers=login) as cp:
            await cp.status(1, "Charging")
            await eventually(lambda: hub.state == {"DE*ABC*ECPNEW*1": "Occupied"})
        assert (await refused(bridge.ocpp.port, "CP-NEW", **{"Authorization": basic(
            "CP-NEW", "wrong-password-123456")})).status_code == 401  # fmt: skip
