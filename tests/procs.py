"""Run the bridge as a real child process (for crash, restart and signal tests)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import yaml


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(_plain(settings), sort_keys=False))
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


class BridgeProcess:
    """``oicp-bridge run`` in a child process; learns its OCPP port from ``bridge.started``."""

    def __init__(self, config: Path, *, nofile: tuple[int, int] | None = None) -> None:
        self.config = config
        self.nofile = nofile  # RLIMIT_NOFILE (soft, hard) to start the child with
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self.ocpp_port = 0
        self.ops_port: int | None = None
        self._started = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 20.0) -> BridgeProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env = {k: v for k, v in env.items() if not k.startswith("BRIDGE_")}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "run", "--config", str(self.config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
            preexec_fn=self._limit if self.nofile is not None else None,
        )  # fmt: skip
        self._started.clear()
        self._reader = asyncio.create_task(self._read())
        try:
            await asyncio.wait_for(self._started.wait(), timeout)
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"bridge did not start: {self.events[-5:]}") from None
        return self

    def _limit(self) -> None:  # runs in the child between fork and exec
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").strip()
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "raw", "line": line}
            self.events.append(event)
            if event.get("event") == "bridge.started":
                self.ocpp_port = int(event["ocpp_port"])
                self.ops_port = event.get("ops_port")
                self._started.set()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    async def kill(self) -> int:
        """SIGKILL: no chance to flush anything."""
        return await self._signal(signal.SIGKILL, 10)

    async def terminate(self, timeout: float = 15.0) -> int:
        return await self._signal(signal.SIGTERM, timeout)

    async def _signal(self, sig: int, timeout: float) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code


class RawCharger:
    """A minimal OCPP-J charger on a raw websocket: one outstanding CALL, as OCPP-J requires."""

    def __init__(self, ws: Any, cp_id: str, version: str) -> None:
        self.ws, self.cp_id, self.version = ws, cp_id, version
        self._next = 0

    @classmethod
    async def connect(cls, port: int, cp_id: str, version: str = "1.6") -> RawCharger:
        import websockets

        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/ocpp/{cp_id}",
            subprotocols=[f"ocpp{version}"],  # type: ignore[list-item]
            open_timeout=5,
        )
        return cls(ws, cp_id, version)

    async def call(self, action: str, payload: dict[str, Any], timeout: float = 5.0) -> Any:
        self._next += 1
        unique_id = f"{self.cp_id}-{self._next}"
        await self.ws.send(json.dumps([2, unique_id, action, payload]))
        answer = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        if answer[0] != 3 or answer[1] != unique_id:
            raise AssertionError(f"unexpected answer {answer}")
        return answer[2]

    async def status(self, key: int, status: str) -> None:
        """StatusNotification for 1.6 connector ``key`` or 2.0.1 EVSE ``key`` (connector 1)."""
        if self.version == "1.6":
            payload: dict[str, Any] = {"connectorId": key, "errorCode": "NoError", "status": status}
        else:
            payload = {"timestamp": "2026-11-21T10:00:00Z", "connectorStatus": status,
                       "evseId": key, "connectorId": 1}  # fmt: skip
        await self.call("StatusNotification", payload)

    async def close(self) -> None:
        await self.ws.close()
