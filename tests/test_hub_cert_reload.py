"""The hub client certificate is reloaded when its files change, like the OCPP port's files."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

from bridge.app import Bridge
from bridge.hubsim import HubSimulator, server_ssl_context
from tests.conftest import Events, charger, eventually, pushes
from tests.oicp_schema import validate_push_body


@dataclass
class Pki:
    tmp: Path
    ca: trustme.CA  # the hub's CA: it signs the hub's certificate and accepted client ones
    rogue: trustme.CA  # a CA the hub does not accept client certificates from
    ca_file: Path
    server: Path
    client: Path  # the file the bridge is configured with (key and certificate chain)

    def issue(self, days: float, *, rogue: bool = False) -> None:
        """Replace the client certificate file, as a renewal tool does (write, then rename)."""
        now = datetime.now(UTC)
        leaf = (self.rogue if rogue else self.ca).issue_cert(
            "bridge.example.com", not_before=now - timedelta(days=400),
            not_after=now + timedelta(days=days),
        )  # fmt: skip
        partial = self.client.with_suffix(".new")
        leaf.private_key_and_cert_chain_pem.write_to_path(str(partial))
        os.replace(partial, self.client)

    def mismatch(self) -> None:
        """A certificate with another certificate's key: a half-finished renewal."""
        one, other = self.ca.issue_cert("a.example.com"), self.ca.issue_cert("b.example.com")
        partial = self.client.with_suffix(".new")
        partial.write_bytes(other.private_key_pem.bytes() + one.cert_chain_pems[0].bytes())
        os.replace(partial, self.client)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, rogue = trustme.CA(), trustme.CA()
    pki = Pki(tmp_path, ca, rogue, tmp_path / "ca.pem", tmp_path / "hub.pem", tmp_path / "me.pem")
    ca.cert_pem.write_to_path(str(pki.ca_file))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pki.server))
    return pki


@pytest.fixture
async def tls_hub(pki: Pki) -> AsyncIterator[HubSimulator]:
    """The hub over TLS, accepting client certificates of ``pki.ca`` only."""
    context = server_ssl_context(pki.server, None, client_ca=pki.ca_file)
    async with HubSimulator(ssl_context=context, body_validator=validate_push_body) as sim:
        yield sim


@pytest.fixture
async def start(
    make_bridge: Callable[..., Awaitable[Bridge]], tls_hub: HubSimulator, pki: Pki
) -> Callable[..., Awaitable[Bridge]]:
    async def start(interval: float = 0.05) -> Bridge:
        oicp = {"base_url": tls_hub.base_url, "client_cert": pki.client, "ca_bundle": pki.ca_file,
                "tls_reload_interval": interval, "request_timeout": 2.0}  # fmt: skip
        return await make_bridge(oicp=oicp)

    return start


async def test_a_renewed_certificate_is_used_without_a_restart(
    start: Callable[..., Awaitable[Bridge]], tls_hub: HubSimulator, pki: Pki, events: Events
) -> None:
    pki.issue(days=200, rogue=True)  # the hub does not accept this one
    bridge = await start()
    assert bridge.client_cert_days_left is not None and bridge.client_cert_days_left > 199
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await eventually(lambda: bridge.hub.consecutive_failures >= 2)
        assert tls_hub.received == [] and bridge.hub.reachable is False

        pki.issue(days=42)  # the renewed certificate: the next connection uses it
        await eventually(lambda: pushes(tls_hub) == [("insert", "DE*ABC*E16*1", "Available")])
        assert len(events.named("oicp.tls_reloaded")) == 1
        (logged,) = [e for e in events.named("oicp.client_cert") if e["days_left"] < 100]
        assert 41 < logged["days_left"] <= 42
        days = bridge.client_cert_days_left
        assert days is not None and 41 < days <= 42  # the metric follows the certificate in use

        await cp.status(1, "Charging")  # and it stays in use
        await eventually(lambda: len(pushes(tls_hub)) == 2)
    assert events.named("oicp.tls_reload_failed") == []


@pytest.mark.parametrize(("replace", "reason"), [
    (lambda pki: pki.mismatch(), "cannot load"),
    (lambda pki: pki.issue(days=-1), "expired on"),
])  # fmt: skip
async def test_files_that_do_not_load_keep_the_certificate_in_use(
    start: Callable[..., Awaitable[Bridge]],
    *,
    tls_hub: HubSimulator,
    pki: Pki,
    events: Events,
    replace: Callable[[Pki], None],
    reason: str,
) -> None:
    pki.issue(days=300)
    bridge = await start()
    async with charger(bridge.ocpp.port, "CP16", "1.6") as cp:
        await cp.status(1, "Available")
        await eventually(lambda: len(pushes(tls_hub)) == 1)
        replace(pki)
        await eventually(lambda: len(events.named("oicp.tls_reload_failed")) == 1)
        (failed,) = events.named("oicp.tls_reload_failed")
        assert failed["field"] == "oicp.client_cert" and reason in failed["error"]
        assert failed["level"] == "error"
        await asyncio.sleep(0.2)  # reported once per change, not at every check
        assert len(events.named("oicp.tls_reload_failed")) == 1
        days = bridge.client_cert_days_left
        assert days is not None and days > 299  # still the certificate in use
        await cp.status(1, "Charging")  # pushes go on with the previous certificate
        await eventually(lambda: len(pushes(tls_hub)) == 2)
    assert events.named("oicp.tls_reloaded") == []


async def test_sighup_reloads_the_hub_certificate_at_once(
    start: Callable[..., Awaitable[Bridge]], pki: Pki, events: Events
) -> None:
    pki.issue(days=300)
    bridge = await start(interval=0)  # no periodic check: only SIGHUP
    pki.issue(days=100)
    await asyncio.sleep(0.1)
    assert events.named("oicp.tls_reloaded") == []
    bridge._on_sighup()  # what the SIGHUP handler of `oicp-bridge run` calls
    await eventually(lambda: len(events.named("oicp.tls_reloaded")) == 1)
    (sighup,) = events.named("bridge.sighup")
    assert "the hub client's" in sighup["action"]
    days = bridge.client_cert_days_left
    assert days is not None and 99 < days <= 100
