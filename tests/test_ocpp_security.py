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
import threading
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
from bridge.config import ChargerSettings, OcppSecuritySettings, load_settings
from bridge.errors import ConfigError
from bridge.hubsim import HubSimulator
from bridge.ocpp.auth import (
    Authenticator,
    CheckQueue,
    Failure,
    FailureThrottle,
    check_client_cert,
    parse_basic,
)
from bridge.passwords import DEFAULT_N, PasswordHash, hash_password, password_problem
from bridge.ratelimit import TokenBucket
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
    days = bridge.ocpp.tls_files.server_cert_days_left
    assert days is not None and days > 30

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
    # The refusal counts too (one more failure of 20 s): it says when to come back.
    assert 20 < int(error.response.headers["Retry-After"]) <= 40
    assert seen == ["wrong_password"] * 3 + ["throttled"]
    (blocked,) = events.named("ocpp.auth_throttled")
    assert blocked["address"] == "127.0.0.1" and blocked["limit"] == 3


async def test_concurrent_wrong_passwords_cost_at_most_the_budget(
    make_bridge: MakeBridge, events: Events
) -> None:
    """Logins sent all at once from one address: at most `auth_failure_limit` password checks
    run; the rest are refused 429 without one, and another address logs in meanwhile."""
    bridge = await make_bridge(
        ocpp={"security": {"profile": 1, "auth_failure_limit": 5, "auth_failure_window": 60}},
        chargers=chargers(),
    )
    port = bridge.ocpp.port
    checks = bridge.ocpp.auth.checks

    async def guess(i: int) -> int:
        cp_id = "CP16" if i % 2 else f"CP-X{i}"  # wrong passwords and unknown IDs alike
        try:
            async with connect(port, cp_id, password=f"guess-{i}"):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async with asyncio.timeout(30):
        answers = await asyncio.gather(*(guess(i) for i in range(200)))
    assert checks.done <= 5, checks.done
    assert answers.count(401) == checks.done and answers.count(429) == 200 - checks.done
    assert len(events.named("ocpp.auth_throttled")) == 1
    # Another address has its own budget and is not queued behind the guesses.
    async with websockets.connect(
        f"ws://127.0.0.1:{port}/ocpp/CP201", subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
        additional_headers={"Authorization": basic("CP201", PASSWORDS["CP201"])},
        local_addr=("127.0.0.2", 0), logger=_QUIET, open_timeout=5,
    ) as ws:  # fmt: skip
        assert (await heartbeat(ws))[0] == 3
    # Refusals counted: the address stays blocked while it keeps trying.
    before = bridge.ocpp.throttle.retry_after("127.0.0.1")
    assert (await guess(1)) == 429
    assert bridge.ocpp.throttle.retry_after("127.0.0.1") > before


async def test_logins_that_wait_too_long_for_a_check_get_503_not_a_timeout(
    make_bridge: MakeBridge, events: Events, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconnect storm: a login whose password check cannot start within half the handshake
    timeout gets 503 + Retry-After; chargers verified since the start are not queued at all."""
    bridge = await make_bridge(
        ocpp={"security": {"profile": 1, "handshake_timeout": 3.0}}, chargers=chargers()
    )
    port = bridge.ocpp.port
    seen: list[str] = []
    bridge.ocpp.on_auth_failure = seen.append
    async with connect(port, "CP201", password=PASSWORDS["CP201"], version="2.0.1") as ws:
        assert (await heartbeat(ws))[0] == 3  # verified once: its reconnects skip the queue

    started: list[bytes] = []
    release = threading.Event()
    real_verify = PasswordHash.verify

    def held_verify(self: PasswordHash, password: bytes) -> bool:
        started.append(password)
        release.wait(10)
        return real_verify(self, password)

    monkeypatch.setattr(PasswordHash, "verify", held_verify)

    async def login(cp_id: str, password: str) -> list[Any] | int:
        try:
            async with connect(port, cp_id, password=password) as ws:
                return await heartbeat(ws)
        except InvalidStatus as exc:
            return exc.response.status_code

    # Both check threads busy: a correct login and an unknown ID (its decoy check).
    held = [
        asyncio.create_task(login("CP16", PASSWORDS["CP16"])),
        asyncio.create_task(login("CP-X", "guess")),
    ]
    try:
        await eventually(lambda: len(started) == 2)
        waiting = [
            connect(port, "CP16", password=PASSWORDS["CP16"]),  # right, but not yet verified
            connect(port, "CP16", password="guess"),
            connect(port, "CP-X", password="guess"),  # unknown IDs: the same answer
        ]
        for error in await asyncio.gather(*(refused(opening) for opening in waiting)):
            assert error.response.status_code == 503
            assert 1 <= int(error.response.headers["Retry-After"]) <= 120
            assert b"try again later" in error.response.body
        async with connect(port, "CP201", password=PASSWORDS["CP201"], version="2.0.1") as ws:
            assert (await heartbeat(ws))[0] == 3
    finally:
        release.set()
    answer = await held[0]
    assert isinstance(answer, list) and answer[:2] == [3, "hb-1"]  # it waited, then got in
    assert await held[1] == 401
    assert len(started) == 2  # no check was spent on the refused logins
    assert seen == ["busy"] * 3 + ["unknown_charge_point"]
    (busy,) = events.named("ocpp.auth_busy")  # one line per window, not one per charger
    assert busy["refused"] == 1 and busy["retry_after"] >= 1
    # Not failed logins: only the unknown ID is logged as one, and the address is not throttled.
    assert [e["reason"] for e in events.named("ocpp.auth_failed")] == ["unknown_charge_point"]
    assert bridge.ocpp.throttle.retry_after("127.0.0.1") == 0


async def test_check_queue_gives_up_on_checks_that_cannot_start_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = CheckQueue(limit=0.2, parallel=1)
    assert queue.wait() == 0 and queue.retry_after() == 1
    stored = PasswordHash.parse(hash_password("a password of 16+ chars", **FAST))
    assert await queue.run(stored, b"a password of 16+ chars") is True
    assert await queue.run(stored, b"wrong") is False
    assert queue.wait() == 0 and queue.seconds_per_work > 0  # nothing queued, cost measured

    entered, release = threading.Event(), threading.Event()
    real_verify = PasswordHash.verify

    def held_verify(self: PasswordHash, password: bytes) -> bool:
        if password == b"hold":
            entered.set()
            release.wait(10)
        return real_verify(self, password)

    monkeypatch.setattr(PasswordHash, "verify", held_verify)
    first = asyncio.create_task(queue.run(stored, b"hold"))
    await eventually(entered.is_set)
    assert await queue.run(stored, b"a password of 16+ chars") is None  # the slot stayed taken
    release.set()
    assert await first is False
    assert await queue.run(stored, b"a password of 16+ chars") is True  # the slot was returned

    queue.seconds_per_work = 1.0 / stored.work  # one second per check
    queue._queued_work = 12 * stored.work  # twelve checks waiting on one thread
    assert queue.wait() == pytest.approx(12.0)
    assert 12 <= queue.retry_after() <= 24  # spread, so refused chargers do not return at once


def test_unknown_ids_cost_what_most_chargers_cost() -> None:
    """The decoy check for unknown IDs uses the fleet's most common cost, old or new."""
    security = OcppSecuritySettings(profile=1)
    fleet = {
        f"CP{i}": ChargerSettings(
            evses={1: f"DE*ABC*E{i}*1"},
            password_hash=hash_password("sixteen chars ok", n=2**12 if i < 3 else 2**10),
        )
        for i in range(5)
    }
    auth = Authenticator(security, fleet)
    assert (auth._decoy.n, auth._decoy.r, auth._decoy.p) == (2**12, 8, 1)
    assert auth.hash_costs() == {"scrypt:1024:8:1": 2, "scrypt:4096:8:1": 3}
    assert Authenticator(security, {})._decoy.n == DEFAULT_N


def test_throttle_refills_and_groups_ipv6_per_64() -> None:
    now = [0.0]
    throttle = FailureThrottle(2, 10.0, clock=lambda: now[0])
    assert throttle.retry_after("203.0.113.9") == 0
    assert throttle.failed("203.0.113.9") is False
    assert throttle.failed("203.0.113.9") is True  # the second failure uses the budget up
    assert throttle.retry_after("203.0.113.9") == pytest.approx(5.0)
    assert throttle.failed("203.0.113.9") is False  # announced once, not again while blocked
    assert throttle.retry_after("203.0.113.10") == 0  # other addresses are unaffected
    # Refusals count too: the bucket went into debt, one more failure's refill.
    assert throttle.retry_after("203.0.113.9") == pytest.approx(10.0)
    for _ in range(10):  # ... but at most `limit` deep: an address is never shut out for long
        throttle.failed("203.0.113.9")
    assert throttle.retry_after("203.0.113.9") == pytest.approx(15.0)
    now[0] = 15.0
    assert throttle.retry_after("203.0.113.9") == 0
    # One subscriber's /64 is one budget; IPv4-mapped IPv6 is the IPv4 address.
    assert throttle.key("2001:db8:1:2:aaaa::1") == throttle.key("2001:db8:1:2:bbbb::2")
    assert throttle.key("2001:db8:1:3::1") != throttle.key("2001:db8:1:2::1")
    assert throttle.key("::ffff:198.51.100.7") == "198.51.100.7"


async def test_throttle_reserves_the_budget_before_the_check() -> None:
    """Checks of one address run only while it has budget; a login in progress counts."""
    now = [0.0]
    throttle = FailureThrottle(2, 60.0, clock=lambda: now[0])
    address = "198.51.100.7"
    assert await throttle.reserve(address, 1.0) is None
    assert await throttle.reserve(address, 1.0) is None
    # Budget taken by two checks in progress: a third waits for their outcome.
    third = asyncio.create_task(throttle.reserve(address, 5.0))
    await asyncio.sleep(0.01)
    assert not third.done()
    throttle.settle(address, ok=True)  # a right password gives its token back
    assert await third is None
    assert throttle.settle(address, ok=False) is True  # spent; the last one is reserved
    fourth = asyncio.create_task(throttle.reserve(address, 5.0))
    await asyncio.sleep(0.01)
    assert throttle.settle(address, ok=False) is False  # announced once already
    assert await fourth is Failure.THROTTLED  # nothing left and nothing in progress
    assert throttle.retry_after(address) > 0
    assert await throttle.reserve("198.51.100.8", 1.0) is None  # other addresses unaffected
    # Waiting for the address's checks has a deadline (the caller answers 503).
    other = "203.0.113.1"
    assert await throttle.reserve(other, 1.0) is None
    assert await throttle.reserve(other, 1.0) is None
    assert await throttle.reserve(other, 0.05) is Failure.BUSY


async def test_throttle_wakes_one_waiter_per_token_given_back() -> None:
    """Thousands of logins behind one NAT wait for the address's checks: a right password
    lets exactly the next one in (no stampede), a last failure refuses all of them."""
    throttle = FailureThrottle(1, 60.0)
    address = "198.51.100.9"
    assert await throttle.reserve(address, 1.0) is None
    waiting = [asyncio.create_task(throttle.reserve(address, 5.0)) for _ in range(5)]
    await asyncio.sleep(0.01)
    throttle.settle(address, ok=True)
    await asyncio.sleep(0.01)
    assert [t.done() for t in waiting] == [True, False, False, False, False]
    assert waiting[0].result() is None
    throttle.settle(address, ok=False)  # the last one in progress failed: no budget left
    assert await asyncio.gather(*waiting[1:]) == [Failure.THROTTLED] * 4
    # Thousands refused at once are woken in batches, other connections served in between.
    assert await throttle.reserve("198.51.100.10", 1.0) is None
    many = [asyncio.create_task(throttle.reserve("198.51.100.10", 5.0)) for _ in range(200)]
    await asyncio.sleep(0.01)
    throttle.settle("198.51.100.10", ok=False)
    await asyncio.sleep(0)  # one event-loop turn
    assert 0 < sum(t.done() for t in many) <= 64
    assert await asyncio.gather(*many) == [Failure.THROTTLED] * 200


def test_throttle_memory_is_bounded() -> None:
    now = [0.0]
    throttle = FailureThrottle(5, 10.0, clock=lambda: now[0], max_tracked=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._buckets) <= 100
    assert throttle.retry_after("10.0.3.231") == 0  # the newest survive, with their budget
    assert throttle._buckets[throttle.key("10.0.3.231")].tokens == 4


def test_message_budget_delays_instead_of_dropping() -> None:
    now = [0.0]
    budget = TokenBucket(10.0, 3, clock=lambda: now[0])
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
    too_cheap = "scrypt:512:8:1:AAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAAA"  # < 1 MiB per check
    for bad in ("s3cret", "scrypt:1000:8:1:AAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAAA", "bcrypt$2b$...",
                too_cheap):  # fmt: skip
        with pytest.raises(ValueError) as info:
            PasswordHash.parse(bad)
        assert bad not in str(info.value)
    with pytest.raises(ValueError, match="1 MiB"):
        hash_password("s3cret", n=2**10, r=4)
    # Hashes of the former default cost (2^14) keep working.
    old = PasswordHash.parse(hash_password("an older charger!", n=2**14))
    assert old.verify(b"an older charger!") and not old.verify(b"an older charger?")


def test_charger_passwords_need_the_ocpp_minimum_length() -> None:
    assert password_problem("x" * 16) is None and password_problem(bytes(16)) is None
    text = password_problem("fifteen chars!!")
    assert text is not None and "15 characters" in text and "at least 16" in text
    binary = password_problem(bytes(15))
    assert binary is not None and "15 bytes" in binary


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
    def hash_cli(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bridge", "hash-password", *args],
            input=stdin, capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    out = hash_cli(stdin="pass word with spaces\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"scrypt:{DEFAULT_N}:8:1:")
    assert PasswordHash.parse(out.stdout).verify(b"pass word with spaces")
    key = "00FF10E0A1B2C3D4E5F60718293A4B5C"  # 16 bytes
    out = hash_cli("--hex", "--cost", "12", stdin=key)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("scrypt:4096:8:1:")
    assert PasswordHash.parse(out.stdout).verify(bytes.fromhex(key))
    out = hash_cli(stdin="")
    assert out.returncode == 1 and "empty password" in out.stderr
    # Shorter than OCPP allows: refused with the rule, nothing printed.
    short = [((), "fifteen chars!!", "characters"), (("--hex",), key[:-2], "bytes")]
    for args, stdin, unit in short:
        out = hash_cli(*args, stdin=stdin)
        assert out.returncode == 1 and out.stdout == ""
        assert f"15 {unit}" in out.stderr and "at least 16" in out.stderr, out.stderr
    out = hash_cli("--cost", "9", stdin="pass word with spaces")
    assert out.returncode == 2 and "--cost" in out.stderr


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


# -- unlisted chargers ----------------------------------------------------------------------
async def test_an_unlisted_id_cannot_take_over_a_listed_chargers_evse(
    make_bridge: MakeBridge, hub: HubSimulator, events: Events
) -> None:
    """allow_unlisted with the README's template: '/ocpp/16' would map to CP16's EvseIDs."""
    registry = chargers(CP16=1, CP201=1)
    registry["CP16"]["evses"] = {1: "DE*ABC*E16*1"}
    bridge = await make_bridge(
        ocpp={"allow_unlisted": True, "evse_id_template": "{operator}*E{charge_point}*{evse}",
              "max_unlisted_chargers": 2},
        chargers=registry,
    )  # fmt: skip
    port = bridge.ocpp.port
    for cp_id in ("16", "1-6", "1.6"):  # profile 0 (the default) for unlisted IDs
        error = await refused(connect(port, cp_id))
        assert error.response.status_code == 403
    taken = events.named("ocpp.auth_failed")
    assert [e["reason"] for e in taken] == ["evse_id_taken"] * 3
    assert taken[0]["profile"] == 0 and "DE*ABC*E16*1" in taken[0]["detail"]
    # A new unlisted charger works, and owns its EvseIDs from then on.
    async with connect(port, "NEW-1") as ws:
        status = {"connectorId": 1, "errorCode": "NoError", "status": "Faulted"}
        await ws.send(json.dumps([2, "1", "StatusNotification", status]))
        assert json.loads(await ws.recv()) == [3, "1", {}]
    await eventually(lambda: ("insert", "DE*ABC*ENEW1*1", "OutOfService") in pushes(hub))
    assert (await refused(connect(port, "NEW1"))).response.status_code == 403
    # The listed charger's EVSE was never touched.
    assert bridge.engine.charge_point_of("DE*ABC*E16*1") == "CP16"
    assert all(evse_id != "DE*ABC*E16*1" for _, evse_id, _ in pushes(hub))
    # At most max_unlisted_chargers unlisted IDs: made-up IDs cannot fill the hub.
    async with connect(port, "NEW2") as ws:
        assert (await heartbeat(ws))[0] == 3
    error = await refused(connect(port, "NEW3"))
    assert error.response.status_code == 403
    assert events.named("ocpp.auth_failed")[-1]["reason"] == "unlisted_limit"
    async with connect(port, "NEW-1") as ws:  # those admitted come back
        assert (await heartbeat(ws))[0] == 3
