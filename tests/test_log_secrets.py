"""No password, Authorization header, password hash or private key ever reaches the log.

The bridge runs as its own process (``oicp-bridge run``) at DEBUG level, where websockets logs every
handshake header, with TLS on the OCPP port, Basic auth, client certificates and a client key
for the hub; its whole stdout and stderr are then searched for every secret involved.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme
import websockets
from websockets.exceptions import InvalidHandshake

from bridge.hubsim import HubSimulator
from bridge.passwords import hash_password

PASSWORD = "CP16-very-secret-password-4711"
FILE_PASSWORD = "password-from-a-mounted-file"
GUESSES = ["guess-number-one", "hunter2-but-longer"]
_QUIET = logging.getLogger("tests.client")
_QUIET.setLevel(logging.WARNING)
_QUIET.propagate = False


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def pem_body_lines(path: Path) -> list[str]:
    """The base64 lines of every private key block in a PEM file."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("-----BEGIN") and "PRIVATE KEY" in line:
            inside = True
        elif line.startswith("-----END"):
            inside = False
        elif inside and len(line) >= 16:
            lines.append(line)
    return lines


class Output:
    """Collects a process's output lines as they come (a full pipe would block it)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    async def collect(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.lines.append(raw.decode("utf-8", "replace"))
            self.changed.set()

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    async def wait_for(self, event: str, timeout: float = 20) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for record in self.events():
                    if record.get("event") == event:
                        return record
                self.changed.clear()
                await self.changed.wait()


async def test_no_secret_reaches_the_log(tmp_path: Path, hub: HubSimulator) -> None:
    ca, charger_ca, rogue_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    paths = {
        name: tmp_path / name
        for name in ("server.pem", "server.key", "charger-ca.pem", "hub-client.pem",
                     "hub-client.key", "cp201.pem", "rogue.pem")
    }  # fmt: skip
    server.cert_chain_pems[0].write_to_path(str(paths["server.pem"]))
    server.private_key_pem.write_to_path(str(paths["server.key"]))
    charger_ca.cert_pem.write_to_path(str(paths["charger-ca.pem"]))
    hub_client = ca.issue_cert("bridge.example.test")
    hub_client.cert_chain_pems[0].write_to_path(str(paths["hub-client.pem"]))
    hub_client.private_key_pem.write_to_path(str(paths["hub-client.key"]))
    leaf = charger_ca.issue_cert("cp201.chargers.test", common_name="CP201")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(paths["cp201.pem"]))
    rogue = rogue_ca.issue_cert("cp201.chargers.test", common_name="CP201")
    rogue.private_key_and_cert_chain_pem.write_to_path(str(paths["rogue.pem"]))
    env_hash = hash_password(PASSWORD, n=2**10)
    file_hash = hash_password(FILE_PASSWORD, n=2**10)
    (tmp_path / "cp-file.hash").write_text(file_hash + "\n")

    config = tmp_path / "bridge.yaml"
    config.write_text(
        f"""
log: {{level: DEBUG, format: json}}
ocpp:
  host: 127.0.0.1
  port: 0
  security:
    profile: 2
    tls_cert: {paths["server.pem"]}
    tls_key: {paths["server.key"]}
    charger_ca: {paths["charger-ca.pem"]}
oicp:
  base_url: {hub.base_url}
  operator_id: "DE*ABC"
  client_cert: {paths["hub-client.pem"]}
  client_key: {paths["hub-client.key"]}
state: {{database: {tmp_path / "state" / "bridge.db"}}}
fullload: {{enabled: false}}
ops: {{enabled: false}}
chargers:
  CP16: {{evses: {{1: "DE*ABC*E16*1"}}}}
  CP201: {{evses: {{1: "DE*ABC*E201*1"}}, security_profile: 3}}
  CP-File: {{evses: {{1: "DE*ABC*EFILE*1"}}, password_hash_file: {tmp_path / "cp-file.hash"}}}
"""
    )
    env = {**os.environ, "BRIDGE_CHARGERS__CP16__PASSWORD_HASH": env_hash}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "run", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    out, err = Output(), Output()
    readers = [
        asyncio.create_task(out.collect(process.stdout)),
        asyncio.create_task(err.collect(process.stderr)),
    ]
    try:
        port = (await out.wait_for("ocpp.listening"))["port"]

        def connect(cp_id: str, header: str | None, cert: Path | None = None) -> Any:
            context = ssl.create_default_context()
            ca.configure_trust(context)
            if cert is not None:
                context.load_cert_chain(str(cert))
            return websockets.connect(
                f"wss://127.0.0.1:{port}/ocpp/{cp_id}", subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                additional_headers={"Authorization": header} if header else {},
                ssl=context, logger=_QUIET,
            )  # fmt: skip

        async with connect("CP16", basic("CP16", PASSWORD)) as ws:
            status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
            await ws.send(json.dumps([2, "1", "StatusNotification", status]))
            assert json.loads(await ws.recv()) == [3, "1", {}]
        async with connect("CP-File", basic("CP-File", FILE_PASSWORD)) as ws:
            await ws.send('[2,"2","Heartbeat",{}]')
            assert json.loads(await ws.recv())[0] == 3
        async with connect("CP201", None, paths["cp201.pem"]) as ws:
            await ws.send('[2,"3","Heartbeat",{}]')
            assert json.loads(await ws.recv())[0] == 3
        for user, guess in [("CP16", GUESSES[0]), (PASSWORD, GUESSES[1]), ("CP16", FILE_PASSWORD)]:
            # The last two: a password typed into the username field, another charger's password.
            with pytest.raises(InvalidHandshake):
                async with connect("CP16", basic(user, guess)):
                    pass
        with pytest.raises((OSError, InvalidHandshake)):
            async with connect("CP201", None, paths["rogue.pem"]) as ws:
                await ws.recv()
        await out.wait_for("push.ok")
        while sum(e.get("event") == "ocpp.auth_failed" for e in out.events()) < 4:
            out.changed.clear()
            async with asyncio.timeout(10):
                await out.changed.wait()
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            await process.wait()
        await asyncio.gather(*readers)
    assert process.returncode == 0, "".join(err.lines)

    text = "".join(out.lines) + "".join(err.lines)
    # The run really went through the paths that could leak (so the search below means something).
    events = [e.get("event") for e in out.events()]
    for expected in ("ocpp.listening", "charger.connected", "status.received", "push.ok",
                     "ocpp.auth_failed", "oicp.client_cert", "ocpp.server_cert"):  # fmt: skip
        assert expected in events, expected
    assert "[redacted]" in text  # websockets' DEBUG header lines went through the filter

    secrets = [PASSWORD, FILE_PASSWORD, *GUESSES, env_hash, file_hash]
    secrets += [env_hash.rsplit(":", 1)[1], file_hash.rsplit(":", 1)[1]]  # the digests alone
    sent = [("CP16", PASSWORD), ("CP-File", FILE_PASSWORD), ("CP16", GUESSES[0]),
            (PASSWORD, GUESSES[1])]  # fmt: skip
    secrets += [basic(user, password).split()[1] for user, password in sent]
    secrets += [base64.b64encode(s.encode()).decode() for s in (PASSWORD, FILE_PASSWORD)]
    for key in ("server.key", "hub-client.key", "cp201.pem", "rogue.pem"):
        secrets += pem_body_lines(paths[key])
    assert "PRIVATE KEY" not in text
    leaked = [s for s in secrets if s in text]
    assert leaked == []
