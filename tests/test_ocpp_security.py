"""OCPP security profiles 0-3, failed-login throttling, secrets from env/files, certificates.

Chargers are real websocket clients; TLS material comes from trustme (one CA for the OCPP
port, one for charger client certificates, one rogue CA).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidHandshake, InvalidStatus

from bridge.app import Bridge
from bridge.config import load_settings
from bridge.errors import ConfigError
from bridge.hubsim import HubSimulator
from bridge.ocpp.auth import (
    Failure,
    FailureThrottle,
    PasswordHash,
    check_client_cert,
    hash_password,
    parse_basic,
)
from bridge.ocpp.server import MessageBudget
from tests.conftest import Events, eventually, pushes

PASSWORDS = {"CP16": "correct horse battery staple", "CP201": "Tr0ub4dor&3-second-charger"}
FAST = {"n": 2**10}  # cheap hashes keep the tests quick; the format carries the cost


def basic(user: str, password: str | bytes) -> str:
    raw = user.encode() + b":" + (password if isinstance(password, bytes) else password.encode())
    return "Basic " + base64.b64encode(raw).decode("ascii")


def chargers(**profiles: int | None) -> dict[str, Any]:
    """The conftest registry plus password hashes (and per-charger profiles if given)."""
    evses = {"CP16": {1: "DE*ABC*E16*1", 2: "DE*ABC*E16*2"}, "CP201": {1: "DE*ABC*E201*1"}}
    out: dict[str, Any] = {}
    for cp_id, mapping in evses.items():
        entry: dict[str, Any] = {
            "evses": mapping,
            "password_hash": hash_password(PASSWORDS[cp_id], **FAST),
        }
        if profiles.get(cp_id) is not None:
            entry["security_profile"] = profiles[cp_id]
        out[cp_id] = entry
    return out


@dataclass
class Pki:
    server_ca: Path  # trusted by chargers for the OCPP port
    server_cert: Path
    server_key: Path
    charger_ca: Path
    client: dict[str, Path]  # name → PEM with key and certificate
    ca: trustme.CA
    charger_ca_obj: trustme.CA
    rogue_ca_obj: trustme.CA
    tmp: Path

    def client_context(self, cert: str | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.server_ca))
        if cert is not None:
            context.load_cert_chain(str(self.client[cert]))
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    ca, charger_ca, rogue_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp / "server-ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(tmp / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp / "server.key"))
    charger_ca.cert_pem.write_to_path(str(tmp / "charger-ca.pem"))
    client = {}
    for name, issuer, cn in (
        ("CP16", charger_ca, "CP16"),
        ("CP201", charger_ca, "CP201"),
        ("CP-NEW", charger_ca, "CP-NEW"),
        ("rogue-CP16", rogue_ca, "CP16"),
    ):
        leaf = issuer.issue_cert(f"{cn.lower()}.chargers.test", common_name=cn)
        path = tmp / f"client-{name}.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
        client[name] = path
    return Pki(
        tmp / "server-ca.pem", tmp / "server.pem", tmp / "server.key",
        tmp / "charger-ca.pem", client, ca, charger_ca, rogue_ca, tmp,
    )  # fmt: skip


def tls_settings(pki: Pki, profile: int, **extra: Any) -> dict[str, Any]:
    return {
        "security": {
            "profile": profile,
            "tls_cert": pki.server_cert,
            "tls_key": pki.server_key,
            "charger_ca": pki.charger_ca,
            **extra,
        }
    }


_QUIET = logging.getLogger("tests.client")  # the test clients' own header logs stay out
_QUIET.setLevel(logging.WARNING)
_QUIET.propagate = False


def connect(
    port: int,
    cp_id: str,
    *,
    user: str | None = None,
    password: str | bytes | None = None,
    header: str | None = None,
    tls: ssl.SSLContext | None = None,
    version: str = "1.6",
) -> Any:
    headers = {}
    if header is not None:
        headers["Authorization"] = header
    elif password is not None:
        headers["Authorization"] = basic(user if user is not None else cp_id, password)
    scheme = "wss" if tls is not None else "ws"
    return websockets.connect(
        f"{scheme}://127.0.0.1:{port}/ocpp/{cp_id}",
        subprotocols=[f"ocpp{version}"],  # type: ignore[list-item]
        additional_headers=headers,
        ssl=tls,
        logger=_QUIET,
        open_timeout=5,
    )


async def heartbeat(ws: ClientConnection) -> list[Any]:
    await ws.send('[2,"hb-1","Heartbeat",{}]')
    answer: list[Any] = json.loads(await ws.recv())
    return answer


async def refused(opening: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        async with opening:
            pass
    return info.value


async def tls_refused(opening: Any) -> None:
    """The TLS handshake fails: no HTTP answer at all."""
    with pytest.raises((OSError, InvalidHandshake)) as info:
        async with opening as ws:
            await heartbeat(ws)  # TLS 1.3 reports a refused client certificate on first read
    assert not isinstance(info.value, InvalidStatus)


MakeBridge = Callable[..., Awaitable[Bridge]]


# -- profile 1: Basic auth over ws --------------------------------------------------------------
async def test_profile1_basic_auth(
    make_bridge: MakeBridge, hub: HubSimulator, events: Events
) -> None:
    bridge = await make_bridge(ocpp={"security": {"profile": 1}}, chargers=chargers())
    port = bridge.ocpp.port
    seen: list[str] = []
    bridge.ocpp.on_auth_failure = seen.append

    async with connect(port, "CP16", password=PASSWORDS["CP16"]) as ws:
        assert (await heartbeat(ws))[:2] == [3, "hb-1"]
        status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        await ws.send(json.dumps([2, "sn-1", "StatusNotification", status]))
        assert json.loads(await ws.recv()) == [3, "sn-1", {}]
        await eventually(lambda: pushes(hub) == [("insert", "DE*ABC*E16*1", "Available")])

    cases = [
        ("wrong password", connect(port, "CP16", password="guess"), Failure.WRONG_PASSWORD),
        (
            "another charger's credentials",
            connect(port, "CP16", user="CP201", password=PASSWORDS["CP201"]),
            Failure.WRONG_USERNAME,
        ),
        ("no credentials", connect(port, "CP16"), Failure.MISSING_CREDENTIALS),
        ("not Basic", connect(port, "CP16", header="Bearer abc"), Failure.MALFORMED_CREDENTIALS),
        # Unknown IDs answer exactly like a wrong password: no way to enumerate IDs.
        ("unknown ID", connect(port, "CP-X", password="guess"), Failure.UNKNOWN_CHARGE_POINT),
        ("unknown ID, no credentials", connect(port, "CP-X"), Failure.MISSING_CREDENTIALS),
    ]
    for label, opening, reason in cases:
        error = await refused(opening)
        assert error.response.status_code == 401, label
        assert error.response.headers["WWW-Authenticate"].startswith("Basic realm="), label
        assert error.response.body == b"Unauthorized\n", label
        assert seen[-1] == reason.value, label
    failed = events.named("ocpp.auth_failed")
    assert [e["reason"] for e in failed] == [reason.value for _, _, reason in cases]
    assert all(e["peer"].startswith("127.0.0.1:") and e["status"] == 401 for e in failed)

    # Not an OCPP path at all: nothing secret about that.
    error = await refused(websockets.connect(f"ws://127.0.0.1:{port}/other/CP16", logger=_QUIET))
    assert error.response.status_code == 404


async def test_profile1_binary_password_and_hash_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub: HubSimulator
) -> None:
    """An OCPP 1.6 AuthorizationKey (raw bytes) whose hash comes from an environment variable."""
    key = bytes.fromhex("00ff10e0a1b2c3d4e5f60718293a4b5c6d7e8f90")  # not UTF-8
    monkeypatch.setenv("BRIDGE_CHARGERS__CP-Bin__PASSWORD_HASH", hash_password(key, **FAST))
    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"""
ocpp: {{host: 127.0.0.1, port: 0, security: {{profile: 1}}}}
oicp: {{base_url: "{hub.base_url}", operator_id: "DE*ABC"}}
state: {{database: "{tmp_path / "state.db"}"}}
fullload: {{enabled: false}}
ops: {{enabled: false}}
chargers:
  CP-Bin: {{evses: {{1: "DE*ABC*EBIN*1"}}}}
"""
    )
    settings = load_settings(config)
    assert settings.chargers["CP-Bin"].password_hash is not None  # case kept, merged with YAML
    assert "cp-bin" not in settings.chargers
    bridge = Bridge(settings)
    await bridge.start()
    try:
        async with connect(bridge.ocpp.port, "CP-Bin", password=key) as ws:
            assert (await heartbeat(ws))[0] == 3
        error = await refused(connect(bridge.ocpp.port, "CP-Bin", password=key[:-1]))
        assert error.response.status_code == 401
    finally:
        await bridge.stop()


# -- profile 2: TLS + Basic auth --------------------------------------------------------------
async def test_profile2_tls_and_basic_auth(
    make_bridge: MakeBridge, pki: Pki, events: Events
) -> None:
    bridge = await make_bridge(ocpp=tls_settings(pki, 2), chargers=chargers())
    port = bridge.ocpp.port
    assert bridge.ocpp.server_cert_days_left is not None and bridge.ocpp.server_cert_days_left > 30

    async with connect(port, "CP201", password=PASSWORDS["CP201"], tls=pki.client_context(),
                       version="2.0.1") as ws:  # fmt: skip
        assert ws.subprotocol == "ocpp2.0.1"
        assert (await heartbeat(ws))[:2] == [3, "hb-1"]

    for opening in (
        connect(port, "CP201", password="wrong", tls=pki.client_context()),
        connect(port, "CP201", user="CP16", password=PASSWORDS["CP201"], tls=pki.client_context()),
        connect(port, "CP201", tls=pki.client_context()),
    ):
        error = await refused(opening)
        assert error.response.status_code == 401
        assert "WWW-Authenticate" in error.response.headers

    # Plain ws on the TLS port: the handshake fails, logged as a TLS failure with the peer.
    with pytest.raises((OSError, InvalidHandshake)):
        async with connect(port, "CP201", password=PASSWORDS["CP201"]):
            pass
    await eventually(lambda: bool(events.named("ocpp.tls_failed")))
    assert events.named("ocpp.tls_failed")[0]["peer"].startswith("127.0.0.1:")


# -- profile 3: client certificates -----------------------------------------------------------
async def test_profile3_client_certificates(
    make_bridge: MakeBridge, pki: Pki, events: Events
) -> None:
    bridge = await make_bridge(ocpp=tls_settings(pki, 3), chargers=chargers())
    port = bridge.ocpp.port
    seen: list[str] = []
    bridge.ocpp.on_auth_failure = seen.append

    async with connect(port, "CP16", tls=pki.client_context("CP16")) as ws:
        assert (await heartbeat(ws))[:2] == [3, "hb-1"]
    # Basic credentials are irrelevant under profile 3; the certificate decides.
    async with connect(port, "CP16", password="ignored", tls=pki.client_context("CP16")) as ws:
        assert (await heartbeat(ws))[0] == 3

    # A valid certificate of another charger: authenticated, but not as CP16.
    error = await refused(connect(port, "CP16", tls=pki.client_context("CP201")))
    assert error.response.status_code == 403
    assert seen[-1] == Failure.CLIENT_CERT_MISMATCH.value
    # A charger with a valid certificate for an ID we do not know: told so.
    error = await refused(connect(port, "CP-NEW", tls=pki.client_context("CP-NEW")))
    assert error.response.status_code == 404

    # Certificate from another CA, and no certificate at all: refused in the TLS handshake.
    await tls_refused(connect(port, "CP16", tls=pki.client_context("rogue-CP16")))
    await eventually(lambda: seen[-1] == Failure.CLIENT_CERT_REJECTED.value)
    await tls_refused(connect(port, "CP16", tls=pki.client_context()))
    await eventually(lambda: seen[-1] == Failure.CLIENT_CERT_MISSING.value)

    failed = events.named("ocpp.auth_failed")
    assert [e["reason"] for e in failed] == [
        "client_cert_mismatch", "unknown_charge_point", "client_cert_rejected",
        "client_cert_missing",
    ]  # fmt: skip
    assert all(e["peer"].startswith("127.0.0.1:") for e in failed)
    assert "certificate verify failed" in failed[2]["detail"]


async def test_mixed_profiles_on_one_tls_port(make_bridge: MakeBridge, pki: Pki) -> None:
    """Global profile 2, CP16 on profile 3: client certificates become optional at TLS level."""
    bridge = await make_bridge(ocpp=tls_settings(pki, 2), chargers=chargers(CP16=3))
    port = bridge.ocpp.port
    async with connect(port, "CP16", tls=pki.client_context("CP16")) as ws:
        assert (await heartbeat(ws))[0] == 3
    async with connect(port, "CP201", password=PASSWORDS["CP201"],
                       tls=pki.client_context()) as ws:  # fmt: skip
        assert (await heartbeat(ws))[0] == 3
    # CP16 must show its certificate; its (profile 2) password alone is not enough.
    error = await refused(
        connect(port, "CP16", password=PASSWORDS["CP16"], tls=pki.client_context())
    )
    assert error.response.status_code == 403
    # CP201's certificate does not make it CP16.
    error = await refused(connect(port, "CP16", tls=pki.client_context("CP201")))
    assert error.response.status_code == 403


async def test_stalled_tls_handshake_times_out(
    make_bridge: MakeBridge, pki: Pki, events: Events
) -> None:
    bridge = await make_bridge(
        ocpp=tls_settings(pki, 2, handshake_timeout=0.3), chargers=chargers()
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.ocpp.port)
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # the bridge gave up on the silent peer
    writer.close()
    await eventually(lambda: bool(events.named("ocpp.tls_failed")))
    assert "taking longer than 0.3 seconds" in events.named("ocpp.tls_failed")[0]["reason"]


# -- throttling -------------------------------------------------------------------------------
async def test_repeated_failures_from_one_address_are_throttled(
    make_bridge: MakeBridge, events: Events
) -> None:
    bridge = await make_bridge(
        ocpp={"security": {"profile": 1, "auth_failure_limit": 3, "auth_failure_window": 60}},
        chargers=chargers(),
    )
    port = bridge.ocpp.port
    seen: list[str] = []
    bridge.ocpp.on_auth_failure = seen.append
    for _ in range(3):
        assert (await refused(connect(port, "CP16", password="guess"))).response.status_code == 401
    # Budget used up: even the right password is not looked at now.
    error = await refused(connect(port, "CP16", password=PASSWORDS["CP16"]))
    assert error.response.status_code == 429
    assert 1 <= int(error.response.headers["Retry-After"]) <= 20
    assert seen == ["wrong_password"] * 3 + ["throttled"]
    (blocked,) = events.named("ocpp.auth_throttled")
    assert blocked["address"] == "127.0.0.1" and blocked["limit"] == 3


def test_throttle_refills_and_groups_ipv6_per_64() -> None:
    now = [0.0]
    throttle = FailureThrottle(2, 10.0, clock=lambda: now[0])
    assert throttle.retry_after("203.0.113.9") == 0
    assert throttle.failed("203.0.113.9") is False
    assert throttle.failed("203.0.113.9") is True  # the second failure uses the budget up
    assert throttle.retry_after("203.0.113.9") == pytest.approx(5.0)
    assert throttle.failed("203.0.113.9") is False  # announced once, not again while blocked
    assert throttle.retry_after("203.0.113.10") == 0  # other addresses are unaffected
    now[0] = 5.0
    assert throttle.retry_after("203.0.113.9") == 0
    # One subscriber's /64 is one budget; IPv4-mapped IPv6 is the IPv4 address.
    assert throttle.key("2001:db8:1:2:aaaa::1") == throttle.key("2001:db8:1:2:bbbb::2")
    assert throttle.key("2001:db8:1:3::1") != throttle.key("2001:db8:1:2::1")
    assert throttle.key("::ffff:198.51.100.7") == "198.51.100.7"


def test_throttle_memory_is_bounded() -> None:
    now = [0.0]
    throttle = FailureThrottle(5, 10.0, clock=lambda: now[0], max_tracked=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._buckets) <= 100
    assert throttle.retry_after("10.0.3.231") == 0  # the newest survive, with their budget
    assert throttle._buckets[throttle.key("10.0.3.231")][0] == 4


def test_message_budget_delays_instead_of_dropping() -> None:
    now = [0.0]
    budget = MessageBudget(10.0, 3, clock=lambda: now[0])
    assert [budget.take() for _ in range(3)] == [0, 0, 0]
    assert budget.take() == pytest.approx(0.1)
    assert budget.take() == pytest.approx(0.2)  # waits add up: nothing is skipped
    now[0] = 10.0
    assert budget.take() == 0


# -- passwords and credentials ----------------------------------------------------------------
def test_password_hash_roundtrip_and_format() -> None:
    text = hash_password("s3cret", **FAST)
    parsed = PasswordHash.parse(text)
    assert text.startswith("scrypt:1024:8:1:") and str(parsed) == text
    assert parsed.verify(b"s3cret") and not parsed.verify(b"s3cret ")
    assert "s3cret" not in text and "s3cret" not in repr(parsed)
    assert hash_password("s3cret", **FAST) != text  # salted
    for bad in ("s3cret", "scrypt:1000:8:1:AAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAAA", "bcrypt$2b$..."):
        with pytest.raises(ValueError) as info:
            PasswordHash.parse(bad)
        assert bad not in str(info.value)


def test_parse_basic() -> None:
    assert parse_basic([basic("CP1", "pw:with:colons")]) == ("CP1", b"pw:with:colons")
    assert parse_basic(["basic " + base64.b64encode(b"CP1:").decode()]) == ("CP1", b"")
    no_colon = "Basic " + base64.b64encode(b"nocolon").decode()
    twice = [basic("a", "b"), basic("a", "b")]
    for values in ([], ["Bearer x"], ["Basic !!!"], [no_colon], twice):
        assert parse_basic(values) is None


def test_client_certificate_names_exactly_one_charger() -> None:
    def cert(*cns: str) -> dict[str, Any]:
        rdns = tuple((("commonName", cn),) for cn in cns)
        return {"subject": (*rdns, (("countryName", "DE"),))}

    assert check_client_cert("CP1", cert("CP1")) is None
    assert check_client_cert("CP1", cert("CP2")) is Failure.CLIENT_CERT_MISMATCH
    assert check_client_cert("CP1", cert("CP1", "CP2")) is Failure.CLIENT_CERT_MISMATCH
    assert check_client_cert("CP1", cert()) is Failure.CLIENT_CERT_MISMATCH
    assert check_client_cert("CP1", None) is Failure.CLIENT_CERT_MISSING


# -- configuration ----------------------------------------------------------------------------
BASE = """
oicp: {operator_id: "DE*ABC", base_url: "https://hub.example.test"}
"""


def load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "bridge.yaml"
    path.write_text(BASE + text)
    return load_settings(path)


def test_config_requires_what_each_profile_needs(tmp_path: Path) -> None:
    cases = [
        ("ocpp: {security: {profile: 2}}\n", "ocpp.security", "needs tls_cert"),
        (
            f"ocpp: {{security: {{profile: 3, tls_cert: {tmp_path}}}}}\n",
            "ocpp.security",
            "needs charger_ca",
        ),
        (
            "ocpp: {security: {profile: 1}}\nchargers: {CP1: {evses: {1: 'DE*ABC*E1*1'}}}\n",
            "chargers.CP1.password_hash",
            "hash-password",
        ),
        (
            "chargers: {CP1: {evses: {1: 'DE*ABC*E1*1'}, security_profile: 2,"
            " password_hash_file: x}}\n",
            "chargers.CP1.security_profile",
            "needs ocpp.security.tls_cert",
        ),
        (
            "ocpp: {allow_unlisted: true, evse_id_template: '{operator}*E{charge_point}*{evse}',"
            " security: {profile: 1}}\n",
            "ocpp.allow_unlisted",
            "cannot log in",
        ),
        ("ocpp: {security: {profile: 4}}\n", "ocpp.security.profile", "less than or equal"),
    ]
    for text, field, reason in cases:
        with pytest.raises(ConfigError) as info:
            load(tmp_path, text)
        assert info.value.field == field, text
        assert reason in info.value.reason, text


def test_bad_password_hash_is_named_but_never_quoted(tmp_path: Path) -> None:
    secret = "my-plain-password-by-mistake"
    with pytest.raises(ConfigError) as info:
        load(
            tmp_path,
            f"chargers: {{CP1: {{evses: {{1: 'DE*ABC*E1*1'}}, password_hash: {secret}}}}}\n",
        )
    assert info.value.field == "chargers.CP1.password_hash"
    assert secret not in str(info.value)


async def test_password_hash_file(tmp_path: Path, hub: HubSimulator) -> None:
    secret_file = tmp_path / "cp1.hash"
    secret_file.write_text(hash_password("from-a-file", **FAST) + "\n")
    text = (
        f"ocpp: {{host: 127.0.0.1, port: 0, security: {{profile: 1}}}}\n"
        f"state: {{database: '{tmp_path / 'db.sqlite'}'}}\nops: {{enabled: false}}\n"
        f"fullload: {{enabled: false}}\n"
        f"chargers: {{CP1: {{evses: {{1: 'DE*ABC*E1*1'}}, password_hash_file: '{secret_file}'}}}}\n"
    )
    settings = load(tmp_path, text.replace("https://hub.example.test", hub.base_url))
    settings = settings.model_copy(update={"oicp": settings.oicp.model_copy(
        update={"base_url": hub.base_url})})  # fmt: skip
    bridge = Bridge(settings)
    await bridge.start()
    try:
        async with connect(bridge.ocpp.port, "CP1", password="from-a-file") as ws:
            assert (await heartbeat(ws))[0] == 3
    finally:
        await bridge.stop()
    # A missing or unreadable file stops the start with the field named, not its content.
    secret_file.write_text("plaintext-instead-of-a-hash\n")
    with pytest.raises(ConfigError) as info:
        Bridge(settings)
    assert info.value.field == "chargers.CP1.password_hash_file"
    assert "plaintext-instead-of-a-hash" not in str(info.value)
    secret_file.unlink()
    with pytest.raises(ConfigError) as info:
        Bridge(settings)
    assert info.value.field == "chargers.CP1.password_hash_file"


def test_cli_hash_password_reads_stdin() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "hash-password"],
        input="pass word with spaces\n", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert PasswordHash.parse(out.stdout).verify(b"pass word with spaces")
    out = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "hash-password", "--hex"],
        input="00FF10", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert PasswordHash.parse(out.stdout).verify(b"\x00\xff\x10")
    out = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "hash-password"],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 1 and "empty password" in out.stderr


# -- certificate lifetimes ----------------------------------------------------------------------
async def test_client_cert_days_left_logged_and_exposed(
    make_bridge: MakeBridge, pki: Pki, events: Events
) -> None:
    soon = pki.ca.issue_cert(
        "bridge.example.test", not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=12)
    )
    cert = pki.tmp / "client-soon.pem"
    soon.private_key_and_cert_chain_pem.write_to_path(str(cert))
    bridge = await make_bridge(oicp={"client_cert": cert})
    assert bridge.client_cert_days_left is not None
    assert 11 < bridge.client_cert_days_left <= 12
    (line,) = events.named("oicp.client_cert")
    assert line["level"] == "warning" and line["days_left"] == pytest.approx(12, abs=1)
