"""TLS of the OCPP port: the server context, revoked charger certificates, and file reloads.

Certificates are rotated by replacing files, so the files are watched: when ``tls_cert``,
``tls_key``, ``charger_ca`` or ``charger_crl`` change (size or mtime, checked every
``tls_reload_interval`` seconds or on SIGHUP) a new context is built for the next handshakes.
A file that does not load keeps the previous context and is logged; nothing stops.

With ``charger_crl`` a charger certificate listed in a CRL is refused in the handshake (OpenSSL
checks the leaf against the CRL of its issuer), and a charger already connected with a
certificate that a new CRL lists is disconnected.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from cryptography import x509

from bridge.certs import log_certificate
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.config import OcppSecuritySettings

log = structlog.get_logger("bridge.ocpp")

#: A CRL whose nextUpdate is closer than this is logged as a warning: once it passes, OpenSSL
#: refuses every certificate of that CA until a newer CRL is installed.
CRL_WARN_HOURS = 24.0
_CRL_PEM = b"-----BEGIN X509 CRL-----"


@dataclass(frozen=True, slots=True)
class CrlInfo:
    issuer: str
    next_update: datetime | None
    revoked: int


class RevocationList:
    """The revoked serial numbers per issuer from a PEM file of one or more CRLs."""

    def __init__(self, crls: Iterable[x509.CertificateRevocationList]) -> None:
        self.crls = list(crls)
        self._revoked: dict[bytes, frozenset[int]] = {}
        for crl in self.crls:
            serials = frozenset(r.serial_number for r in crl)
            issuer = crl.issuer.public_bytes()
            self._revoked[issuer] = self._revoked.get(issuer, frozenset()) | serials

    @classmethod
    def load(cls, path: Path) -> RevocationList:
        """Raises OSError if unreadable, ValueError if it holds no valid PEM CRL."""
        data = Path(path).read_bytes()
        blocks = data.split(_CRL_PEM)[1:]
        if not blocks:
            raise ValueError("no PEM CRL (-----BEGIN X509 CRL-----) in the file")
        return cls(x509.load_pem_x509_crl(_CRL_PEM + block) for block in blocks)

    def lists(self, cert_der: bytes) -> bool:
        """Whether the certificate (DER) is revoked by a CRL of its issuer."""
        cert = x509.load_der_x509_certificate(cert_der)
        serials = self._revoked.get(cert.issuer.public_bytes())
        return serials is not None and cert.serial_number in serials

    def info(self) -> list[CrlInfo]:
        return [
            CrlInfo(crl.issuer.rfc4514_string(), crl.next_update_utc, len(crl)) for crl in self.crls
        ]

    def hours_left(self, now: datetime | None = None) -> float | None:
        """Hours until the first CRL's nextUpdate passes (negative: passed); None: no date."""
        dates = [crl.next_update_utc for crl in self.crls if crl.next_update_utc is not None]
        if not dates:
            return None
        return (min(dates) - (now or datetime.now(UTC))).total_seconds() / 3600.0


def server_context(
    security: OcppSecuritySettings, client_certs: ssl.VerifyMode
) -> tuple[ssl.SSLContext | None, RevocationList | None]:
    """The OCPP port's TLS context (None for plain ws) and the CRLs it checks.

    ConfigError names the setting whose file is bad.
    """
    if security.tls_cert is None:
        return None, None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # OCPP security profiles require TLS 1.2 or newer.
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if security.tls_min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.options |= ssl.OP_NO_RENEGOTIATION
    key = str(security.tls_key) if security.tls_key is not None else None
    try:
        context.load_cert_chain(str(security.tls_cert), key)
    except (OSError, ssl.SSLError) as exc:
        # The exception text names the file, not its content.
        raise ConfigError("ocpp.security.tls_cert", f"cannot load certificate/key: {exc}") from None
    revocations: RevocationList | None = None
    if client_certs != ssl.CERT_NONE:
        if security.charger_ca is None:
            raise ConfigError("ocpp.security.charger_ca", "profile 3 needs a charger CA bundle")
        try:
            context.load_verify_locations(cafile=str(security.charger_ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "ocpp.security.charger_ca", f"cannot load {security.charger_ca}: {exc}"
            ) from None
        if security.charger_crl is not None:
            revocations = _load_crl(context, security.charger_crl)
        context.verify_mode = client_certs
    return context, revocations


def _load_crl(context: ssl.SSLContext, path: Path) -> RevocationList:
    where = "ocpp.security.charger_crl"
    try:
        revocations = RevocationList.load(path)
        context.load_verify_locations(cafile=str(path))  # OpenSSL takes the CRLs from it
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise ConfigError(where, f"cannot load {path}: {exc}") from None
    # Every certificate's issuer must have a CRL there; without one OpenSSL refuses it.
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return revocations


class TlsFiles:
    """The current TLS context of the OCPP port, rebuilt when its files change."""

    def __init__(self, security: OcppSecuritySettings, client_certs: ssl.VerifyMode) -> None:
        self.security = security
        self.client_certs = client_certs
        self._stamp = self._files_stamp()
        self.context, self.revocations = server_context(security, client_certs)  # may raise
        #: Days until the OCPP port's own certificate expires (None: no TLS or unreadable).
        self.server_cert_days_left: float | None = None

    @property
    def paths(self) -> list[Path]:
        s = self.security
        return [p for p in (s.tls_cert, s.tls_key, s.charger_ca, s.charger_crl) if p is not None]

    def _files_stamp(self) -> tuple[tuple[str, int, int] | None, ...]:
        stamps: list[tuple[str, int, int] | None] = []
        for path in self.paths:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
                continue
            stamps.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def log_state(self) -> None:
        """Log the server certificate's and the CRLs' remaining validity."""
        if self.security.tls_cert is not None:
            self.server_cert_days_left = log_certificate("ocpp.server_cert", self.security.tls_cert)
        if self.revocations is not None:
            hours = self.revocations.hours_left()
            fields = {
                "path": str(self.security.charger_crl),
                "crls": [
                    {"issuer": i.issuer, "revoked": i.revoked,
                     "next_update": i.next_update.isoformat() if i.next_update else None}
                    for i in self.revocations.info()
                ],
                "hours_left": None if hours is None else round(hours, 1),
            }  # fmt: skip
            if hours is not None and hours < CRL_WARN_HOURS:
                log.warning("ocpp.charger_crl", reason="a CRL's nextUpdate is near or past: "
                            "install a newer CRL or chargers of that CA will be refused",
                            **fields)  # fmt: skip
            else:
                log.info("ocpp.charger_crl", **fields)

    def reload_if_changed(self) -> bool:
        """Rebuild the context if a file changed; True if a new context is in use."""
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp  # a broken file is reported once, not at every check
        try:
            context, revocations = server_context(self.security, self.client_certs)
        except ConfigError as exc:
            log.error("ocpp.tls_reload_failed", field=exc.field, error=exc.reason,
                      keeping="the previous certificates")  # fmt: skip
            return False
        self.context, self.revocations = context, revocations
        log.info("ocpp.tls_reloaded", files=[str(p) for p in self.paths])
        self.log_state()
        return True
