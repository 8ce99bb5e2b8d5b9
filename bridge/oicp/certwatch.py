"""The hub client certificate, key and CA bundle, reloaded when their files change.

Hubject client certificates are renewed by hand every two years or so; replacing the files must
not need a restart (which disconnects every charger). As for the OCPP port's files, the files'
size and mtime are checked every ``oicp.tls_reload_interval`` seconds and on SIGHUP; a changed
set that loads (certificate and key belong together, the certificate has not expired, the CA
bundle parses) is used for the next connection to the hub. One that does not keeps the
certificate in use and is logged once per change.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog

from bridge.certs import certificate_not_after, log_days_left
from bridge.config import OicpSettings
from bridge.errors import ConfigError
from bridge.oicp.client import ssl_context_for

__all__ = ["ClientCertWatch"]

log = structlog.get_logger("bridge.oicp")

FileStamp = tuple[tuple[str, int, int, int] | None, ...]


class ClientCertWatch:
    """Watches ``oicp.client_cert``, ``client_key`` and ``ca_bundle`` of one hub client."""

    def __init__(
        self,
        settings: OicpSettings,
        use: Callable[[ssl.SSLContext], None],
        *,
        on_loaded: Callable[[datetime | None], None] | None = None,
    ) -> None:
        self.settings = settings
        self._use = use  # OicpClient.use_tls
        self._on_loaded = on_loaded
        self.stamp = self.files_stamp()
        self._lock = asyncio.Lock()
        self._checks: set[asyncio.Task[bool]] = set()

    @property
    def paths(self) -> list[Path]:
        s = self.settings
        return [p for p in (s.client_cert, s.client_key, s.ca_bundle) if p is not None]

    def files_stamp(self) -> FileStamp:
        stamps: list[tuple[str, int, int, int] | None] = []
        for path in self.paths:
            try:
                st = os.stat(path)  # follows symlinks: a Kubernetes secret swaps one
            except OSError:
                stamps.append(None)
                continue
            # the inode too: a file renamed over the old one may keep its size and mtime
            stamps.append((str(path), st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    async def run(self, interval: float) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.check()

    def request_check(self) -> None:
        """Check now (SIGHUP), in the background."""
        task = asyncio.create_task(self.check())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def check(self) -> bool:
        """Load the files if they changed since the last check; True if new ones are in use."""
        async with self._lock:
            stamp = self.files_stamp()
            if stamp == self.stamp:
                return False
            self.stamp = stamp  # a broken set is reported once, not at every check
            try:
                context, not_after = await asyncio.to_thread(self.load)
            except ConfigError as exc:
                log.error("oicp.tls_reload_failed", field=exc.field, error=exc.reason,
                          action="the certificate in use stays")  # fmt: skip
                return False
            except Exception:  # a bug must not end the watching
                log.exception("oicp.tls_reload_failed")
                return False
            self._use(context)
            log.info("oicp.tls_reloaded", files=[str(p) for p in self.paths])
            cert = self.settings.client_cert
            if cert is not None and not_after is not None:
                log_days_left("oicp.client_cert", cert, not_after)
            if self._on_loaded is not None:
                self._on_loaded(not_after)
            return True

    def load(self) -> tuple[ssl.SSLContext, datetime | None]:
        """The context of the files as they are now, and the certificate's expiry (blocking);
        ConfigError names the file that does not load."""
        context = ssl_context_for(self.settings)
        cert = self.settings.client_cert
        if cert is None:
            return context, None
        try:
            not_after = certificate_not_after(cert)
        except (OSError, ValueError) as exc:
            raise ConfigError("oicp.client_cert", f"cannot load {cert}: {exc}") from None
        if not_after <= datetime.now(UTC):
            raise ConfigError(
                "oicp.client_cert",
                f"{cert} expired on {not_after.date().isoformat()}; the hub would answer 017",
            )
        return context, not_after

    async def close(self) -> None:
        for task in list(self._checks):
            task.cancel()
        await asyncio.gather(*self._checks, return_exceptions=True)
