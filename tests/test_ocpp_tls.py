"""TLS files of the OCPP port: charger CRLs, rotation without a restart, SIGHUP, check-config."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
import signal
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.name import _ASN1Type
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bridge.app import Bridge
from bridge.config import load_settings
from bridge.errors import ConfigError
from bridge.ocpp.tls import TlsFiles
from bridge.ops.check_config_cmd import check_config
from tests.conftest import Events, eventually
from tests.procs import BridgeProcess, write_config
from tests.test_ocpp_security import basic

MakeBridge = Callable[..., Awaitable[Bridge]]
CHARGERS = {"CP16": {"evses": {1: "DE*ABC*E16*1"}}, "CP201": {"evses": {1: "DE*ABC*E201*1"}}}
NOW = dt.datetime.now(dt.UTC)


class Pki:
    """A server CA and a charger CA (trustme), and CRLs of the charger CA (cryptography)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.server_ca, self.charger_ca = trustme.CA(), trustme.CA()
        self.server_ca.cert_pem.write_to_path(str(tmp / "server-ca.pem"))
        self.charger_ca.cert_pem.write_to_path(str(tmp / "charger-ca.pem"))
        self.server_cert, self.server_key = tmp / "server.pem", tmp / "server.key"
        self.issue_server_cert()
        self.crl = tmp / "chargers.crl.pem"
        self.clients: dict[str, Path] = {}
        self.serials: dict[str, int] = {}
        for cp_id in CHARGERS:
            leaf = self.charger_ca.issue_cert(f"{cp_id.lower()}.test", common_name=cp_id)
            path = tmp / f"{cp_id}.pem"
            leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
            self.clients[cp_id] = path
            cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
            self.serials[cp_id] = cert.serial_number

    def issue_server_cert(self) -> int:
        """(Re)write the OCPP port's certificate and key; returns the new serial number."""
        leaf = self.server_ca.issue_cert("127.0.0.1", "localhost")
        # Write to a temporary name and rename, as certificate tools do (never half a file).
        for blob, path in ((leaf.private_key_pem, self.server_key),
                           (leaf.cert_chain_pems[0], self.server_cert)):  # fmt: skip
            blob.write_to_path(str(path.with_suffix(".tmp")))
            os.replace(path.with_suffix(".tmp"), path)
        return x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number

    def write_crl(
        self,
        *revoked: str,
        next_update: dt.datetime | None = None,
        last_update: dt.datetime | None = None,
        key: CertificateIssuerPrivateKeyTypes | None = None,
        issuer_string_type: _ASN1Type | None = None,
        extra: bytes = b"",
    ) -> None:
        """Write the charger CA's CRL (``key``: sign it with another key; ``extra``: append)."""
        ca_cert = x509.load_pem_x509_certificate(self.charger_ca.cert_pem.bytes())
        if key is None:
            key = serialization.load_pem_private_key(  # type: ignore[assignment]
                self.charger_ca.private_key_pem.bytes(), password=None
            )
            assert key is not None
        issuer = ca_cert.subject
        if issuer_string_type is not None:  # the same name, encoded as another tool might
            issuer = x509.Name([
                x509.NameAttribute(a.oid, str(a.value), _type=issuer_string_type)
                for a in issuer
            ])  # fmt: skip
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer)
            .last_update(last_update or NOW - dt.timedelta(hours=1))
            .next_update(next_update or NOW + dt.timedelta(days=7))
        )
        for cp_id in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(self.serials[cp_id])
                .revocation_date(NOW - dt.timedelta(minutes=5))
                .build()
            )
        crl = builder.sign(key, hashes.SHA256())
        tmp = self.crl.with_suffix(".tmp")
        tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM) + extra)
        os.replace(tmp, self.crl)

    def client(self, cp_id: str) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.tmp / "server-ca.pem"))
        context.load_cert_chain(str(self.clients[cp_id]))
        return context

    def ocpp(self, **security: Any) -> dict[str, Any]:
        return {
            "security": {
                "profile": 3,
                "tls_cert": self.server_cert,
                "tls_key": self.server_key,
                "charger_ca": self.tmp / "charger-ca.pem",
                "charger_crl": self.crl,
                **security,
            }
        }


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    tmp = tmp_path / "pki"
    tmp.mkdir()
    return Pki(tmp)


@pytest.fixture
async def bridge(make_bridge: MakeBridge, pki: Pki, events: Events) -> Bridge:
    """Profile 3 with an empty CRL; the files are re-read only when a test calls reload_tls.

    (``events`` first, so that a test sees the start-up lines too.)
    """
    pki.write_crl()
    return await make_bridge(ocpp=pki.ocpp(tls_reload_interval=0), chargers=CHARGERS)


def open_ws(port: int, cp_id: str, context: ssl.SSLContext) -> Any:
    return websockets.connect(
        f"wss://127.0.0.1:{port}/ocpp/{cp_id}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        ssl=context,
        open_timeout=5,
    )


async def heartbeat(ws: ClientConnection) -> str:
    await ws.send('[2,"hb","Heartbeat",{}]')
    return str(await asyncio.wait_for(ws.recv(), 5))


async def answered(ws: ClientConnection) -> bool:
    """The bridge answers a Heartbeat with a CALLRESULT."""
    return (await heartbeat(ws)).startswith('[3,"hb"')


async def refused_in_tls(port: int, cp_id: str, context: ssl.SSLContext) -> None:
    with pytest.raises((OSError, websockets.InvalidHandshake, ConnectionClosed)):
        async with open_ws(port, cp_id, context) as ws:
            await heartbeat(ws)  # TLS 1.3 reports a refused client certificate on first read


def server_serial(ws: ClientConnection) -> int:
    der = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


async def test_revoked_charger_certificate_is_refused(
    make_bridge: MakeBridge, pki: Pki, events: Events
) -> None:
    pki.write_crl("CP201")
    bridge = await make_bridge(ocpp=pki.ocpp(), chargers=CHARGERS)
    port = bridge.ocpp.port
    async with open_ws(port, "CP16", pki.client("CP16")) as ws:
        assert await answered(ws)
    await refused_in_tls(port, "CP201", pki.client("CP201"))
    await eventually(lambda: bool(events.named("ocpp.auth_failed")))
    (failed,) = events.named("ocpp.auth_failed")
    assert failed["reason"] == "client_cert_rejected" and "revoked" in failed["detail"]
    (crl_line,) = events.named("ocpp.charger_crl")
    assert crl_line["level"] == "info" and crl_line["crls"][0]["revoked"] == 1
    body, _ = bridge.metrics.render()
    assert b"bridge_ocpp_charger_crl_hours_left 1" in body  # ~167 h: 7 days minus a bit
    assert b"bridge_ocpp_server_cert_days_left " in body


async def test_new_crl_disconnects_the_revoked_charger_and_keeps_the_others(
    make_bridge: MakeBridge, pki: Pki, events: Events
) -> None:
    pki.write_crl()
    bridge = await make_bridge(ocpp=pki.ocpp(tls_reload_interval=0.1), chargers=CHARGERS)
    port = bridge.ocpp.port
    async with open_ws(port, "CP16", pki.client("CP16")) as cp16, \
            open_ws(port, "CP201", pki.client("CP201")) as cp201:  # fmt: skip
        assert await answered(cp201)
        pki.write_crl("CP201")
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(5):
                await cp201.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "certificate revoked")
        assert await answered(cp16)  # still connected, still answered
    (revoked,) = events.named("ocpp.cert_revoked")
    assert revoked["charge_point_id"] == "CP201"
    assert events.named("ocpp.tls_reloaded")
    await refused_in_tls(port, "CP201", pki.client("CP201"))


async def test_rotated_server_certificate_is_served_without_a_restart(
    bridge: Bridge, pki: Pki, events: Events
) -> None:
    port = bridge.ocpp.port
    async with open_ws(port, "CP16", pki.client("CP16")) as ws:
        first = server_serial(ws)
    assert await bridge.ocpp.reload_tls() is False  # nothing changed
    rotated = pki.issue_server_cert()
    assert rotated != first
    assert await bridge.ocpp.reload_tls() is True
    async with open_ws(port, "CP16", pki.client("CP16")) as ws:
        assert server_serial(ws) == rotated
        assert await answered(ws)
    assert len(events.named("ocpp.server_cert")) == 2  # at start and after the reload


async def test_a_broken_new_file_keeps_the_previous_certificates(
    bridge: Bridge, pki: Pki, events: Events
) -> None:
    pki.crl.write_text("not a CRL\n")
    assert await bridge.ocpp.reload_tls() is False
    (failed,) = events.named("ocpp.tls_reload_failed")
    assert failed["level"] == "error" and failed["field"] == "ocpp.security.charger_crl"
    assert await bridge.ocpp.reload_tls() is False  # reported once per change, not at every check
    assert len(events.named("ocpp.tls_reload_failed")) == 1
    async with open_ws(bridge.ocpp.port, "CP201", pki.client("CP201")) as ws:
        assert await answered(ws)
    pki.write_crl("CP201")  # fixed: the next check takes it
    assert await bridge.ocpp.reload_tls() is True
    await refused_in_tls(bridge.ocpp.port, "CP201", pki.client("CP201"))


def test_bad_or_missing_crl_is_a_config_error_naming_the_field(pki: Pki, tmp_path: Path) -> None:
    for content in (None, "garbage\n"):
        if content is None:
            pki.crl.unlink(missing_ok=True)
        else:
            pki.crl.write_text(content)
        path = write_config(tmp_path / "bridge.yaml", {
            "oicp": {"base_url": "https://hub.example.test", "operator_id": "DE*ABC"},
            "ocpp": pki.ocpp(), "chargers": CHARGERS,
        })  # fmt: skip
        settings = load_settings(path)
        with pytest.raises(ConfigError) as info:
            TlsFiles(settings.ocpp.security, ssl.CERT_REQUIRED)
        assert info.value.field == "ocpp.security.charger_crl"
        err = io.StringIO()
        assert check_config(path, io.StringIO(), err) == 2
        assert "ocpp.security.charger_crl" in err.getvalue()


def test_check_config_shows_tls_files_and_warns_about_a_crl_near_its_next_update(
    pki: Pki, tmp_path: Path
) -> None:
    pki.write_crl("CP201", next_update=NOW + dt.timedelta(hours=5))
    path = write_config(tmp_path / "bridge.yaml", {
        "oicp": {"base_url": "https://hub.example.test", "operator_id": "DE*ABC"},
        "state": {"database": str(tmp_path / "state" / "bridge.db")},
        "ocpp": pki.ocpp(), "chargers": CHARGERS,
    })  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    assert check_config(path, out, err) == 0
    text = out.getvalue()
    assert "OCPP endpoint:" in text and "wss://" in text
    assert f"OCPP certificate:   {pki.server_cert} (" in text
    assert f"charger CRL:        {pki.crl} (1 CRL(s), next update in " in text
    assert "ocpp.security.charger_crl" in err.getvalue() and "expires in" in err.getvalue()


async def test_sighup_reloads_changed_tls_files(pki: Pki, tmp_path: Path) -> None:
    pki.write_crl()
    state = tmp_path / "state"
    config = write_config(tmp_path / "bridge.yaml", {
        "ocpp": {"host": "127.0.0.1", "port": 0, **pki.ocpp(tls_reload_interval=0)},
        "oicp": {"base_url": "http://127.0.0.1:9", "operator_id": "DE*ABC"},
        "state": {"database": str(state / "bridge.db")},
        "ops": {"enabled": False}, "fullload": {"enabled": False},
        "chargers": CHARGERS,
    })  # fmt: skip
    proc = await BridgeProcess(config).start()
    try:
        async with open_ws(proc.ocpp_port, "CP201", pki.client("CP201")) as ws:
            assert await answered(ws)
            pki.write_crl("CP201")
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGHUP)
            await eventually(lambda: bool(proc.named("ocpp.cert_revoked")), within=10)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(5):
                    await ws.recv()
        assert proc.named("bridge.sighup") and proc.named("ocpp.tls_reloaded")
    finally:
        assert await proc.terminate() == 0


async def test_a_handshake_finished_before_a_new_crl_is_refused_at_the_upgrade(
    bridge: Bridge, pki: Pki, events: Events
) -> None:
    """TLS done under the old CRL, HTTP upgrade after the new one: 403, not a way around it."""
    port = bridge.ocpp.port
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=pki.client("CP201"), server_hostname="127.0.0.1"
    )
    try:
        pki.write_crl("CP201")
        assert await bridge.ocpp.reload_tls() is True
        writer.write(
            b"GET /ocpp/CP201 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
        )
        status_line = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 403"), status_line
    (failed,) = events.named("ocpp.auth_failed")
    assert (failed["reason"], failed["detail"]) == ("client_cert_rejected", "certificate revoked")


async def test_crl_issuer_name_in_another_string_encoding_still_matches(
    bridge: Bridge, pki: Pki, events: Events
) -> None:
    """OpenSSL compares names normalised; so must the check of connected chargers."""
    async with open_ws(bridge.ocpp.port, "CP201", pki.client("CP201")) as ws:
        pki.write_crl("CP201", issuer_string_type=_ASN1Type.BMPString)
        assert await bridge.ocpp.reload_tls() is True
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()
    assert [e["charge_point_id"] for e in events.named("ocpp.cert_revoked")] == ["CP201"]
    await refused_in_tls(bridge.ocpp.port, "CP201", pki.client("CP201"))


def test_crl_file_must_hold_only_crls_signed_by_a_charger_ca(pki: Pki) -> None:
    """A certificate in the CRL file would become a trusted charger CA; a forged CRL would
    refuse everyone: both are configuration errors naming the setting."""
    from bridge.config import OcppSecuritySettings

    settings = OcppSecuritySettings.model_validate(pki.ocpp()["security"])
    intruder = trustme.CA()
    cases = {
        "only CRLs belong": {"extra": intruder.cert_pem.bytes()},
        "not signed by that CA": {"key": ec.generate_private_key(ec.SECP256R1())},
        "in the future": {"last_update": NOW + dt.timedelta(hours=2)},
    }
    for expected, kwargs in cases.items():
        pki.write_crl(**kwargs)
        with pytest.raises(ConfigError) as info:
            TlsFiles(settings, ssl.CERT_REQUIRED)
        assert info.value.field == "ocpp.security.charger_crl", expected
        assert expected in info.value.reason


async def test_a_crl_that_would_lock_chargers_out_by_mistake_is_not_loaded(
    make_bridge: MakeBridge, pki: Pki, events: Events
) -> None:
    pki.write_crl(last_update=NOW - dt.timedelta(hours=1))
    bridge = await make_bridge(ocpp=pki.ocpp(tls_reload_interval=0), chargers=CHARGERS)
    refusals = {
        "past its nextUpdate": {"last_update": NOW - dt.timedelta(minutes=30),
                                "next_update": NOW - dt.timedelta(minutes=1)},
        "older than the one in use": {"last_update": NOW - dt.timedelta(hours=3)},
        "not signed by that CA": {"key": ec.generate_private_key(ec.SECP256R1())},
    }  # fmt: skip
    for expected, kwargs in refusals.items():
        pki.write_crl("CP16", **kwargs)
        assert await bridge.ocpp.reload_tls() is False, expected
        assert expected in events.named("ocpp.tls_reload_failed")[-1]["error"]
        async with open_ws(bridge.ocpp.port, "CP16", pki.client("CP16")) as ws:
            assert await answered(ws)  # the previous CRL still applies


async def test_metric_shows_the_certificate_being_served_not_the_file(
    bridge: Bridge, pki: Pki
) -> None:
    served = bridge.ocpp.tls_files.server_cert_days_left
    assert served is not None
    # A new certificate without its new key: the pair does not load, the old one stays.
    leaf = pki.server_ca.issue_cert(
        "127.0.0.1", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=900)
    )
    leaf.cert_chain_pems[0].write_to_path(str(pki.server_cert))
    assert await bridge.ocpp.reload_tls() is False
    assert bridge.ocpp.tls_files.server_cert_days_left == pytest.approx(served, abs=0.01)
    body, _ = bridge.metrics.render()
    line = next(x for x in body.decode().splitlines()
                if x.startswith("bridge_ocpp_server_cert_days_left "))  # fmt: skip
    assert float(line.split()[1]) == pytest.approx(served, abs=0.01)


async def test_crl_with_mixed_profiles(make_bridge: MakeBridge, pki: Pki) -> None:
    """Global profile 2 (password over TLS), CP201 on profile 3 with a revoked certificate."""
    from bridge.passwords import hash_password

    pki.write_crl("CP201")
    password = "a-long-random-charger-secret"
    chargers = {
        "CP16": {**CHARGERS["CP16"], "password_hash": hash_password(password, n=2**10)},
        "CP201": {**CHARGERS["CP201"], "security_profile": 3},
    }
    bridge = await make_bridge(ocpp=pki.ocpp(profile=2), chargers=chargers)
    no_cert = ssl.create_default_context(cafile=str(pki.tmp / "server-ca.pem"))
    async with websockets.connect(
        f"wss://127.0.0.1:{bridge.ocpp.port}/ocpp/CP16", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        ssl=no_cert, additional_headers={"Authorization": basic("CP16", password)},
    ) as ws:  # fmt: skip
        assert await answered(ws)
    await refused_in_tls(bridge.ocpp.port, "CP201", pki.client("CP201"))
