"""TLS of the OCPP port: the server context, revoked charger certificates, and file reloads.

Certificates are rotated by replacing files, so the files are watched: when ``tls_cert``,
``tls_key``, ``charger_ca`` or ``charger_crl`` change (size or mtime, checked every
``tls_reload_interval`` seconds or on SIGHUP) a new context is built for the next handshakes.
A set of files that does not load, or a CRL that would lock chargers out by mistake (a bad
signature, past its nextUpdate while the current one is valid, older than the current one),
keeps the previous context and is logged; nothing stops.

With ``charger_crl`` a charger certificate listed in a CRL is refused in the handshake (OpenSSL
checks the leaf against the CRL of its issuer), and a charger already connected with a
certificate that a new CRL lists is disconnected. The CRL file may hold CRLs only: every CRL
must be signed by a CA of ``charger_ca``, and OpenSSL is given exactly the CRLs checked here,
never the file itself (which could carry a certificate it would then trust as a CA).
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bridge.certs import certificate_not_after, days_until, log_days_left
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.config import OcppSecuritySettings

log = structlog.get_logger("bridge.ocpp")

#: A CRL whose nextUpdate is closer than this is logged as a warning: once it passes, OpenSSL
#: refuses every certificate of that CA until a newer CRL is installed.
CRL_WARN_HOURS = 24.0
_CLOCK_SKEW = timedelta(minutes=5)  # a CRL issued "in the future" by less is accepted
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)


class RevocationList:
    """Checked CRLs of the charger CAs: the revoked serial numbers per issuer."""

    def __init__(self, crls: Sequence[x509.CertificateRevocationList]) -> None:
        self.crls = list(crls)
        # x509.Name equality ignores the ASN.1 string type, as OpenSSL's name matching does.
        self._revoked: dict[x509.Name, set[int]] = {}
        for crl in self.crls:
            self._revoked.setdefault(crl.issuer, set()).update(r.serial_number for r in crl)
        self.serials = frozenset().union(*self._revoked.values())

    @classmethod
    def load(cls, path: Path, cas: Sequence[x509.Certificate]) -> RevocationList:
        """Parse and check ``path``; ValueError says what is wrong, OSError if unreadable."""
        data = Path(path).read_bytes()
        crls = []
        for block in _PEM_BLOCK.finditer(data):
            label = block.group(1).decode()
            if label != "X509 CRL":
                raise ValueError(
                    f"holds a {label}: only CRLs belong in this file (OpenSSL would trust a "
                    "certificate there as a charger CA)"
                )
            crls.append(x509.load_pem_x509_crl(block.group(0)))
        if not crls:
            raise ValueError("no PEM CRL (-----BEGIN X509 CRL-----) in the file")
        now = datetime.now(UTC)
        for crl in crls:
            issuer = crl.issuer.rfc4514_string()
            signers = [ca for ca in cas if ca.subject == crl.issuer]
            if not signers:
                raise ValueError(f"the CRL of {issuer} has no issuing CA in charger_ca")
            if not any(_signed_by(crl, ca) for ca in signers):
                raise ValueError(f"the CRL of {issuer} is not signed by that CA in charger_ca")
            if crl.last_update_utc > now + _CLOCK_SKEW:
                raise ValueError(
                    f"the CRL of {issuer} is dated {crl.last_update_utc.isoformat()}, in the future"
                )
        return cls(crls)

    def pem(self) -> bytes:
        return b"".join(crl.public_bytes(Encoding.PEM) for crl in self.crls)

    def lists(self, cert: x509.Certificate) -> bool:
        """Whether the certificate is revoked by a CRL of its issuer."""
        serials = self._revoked.get(cert.issuer)
        return serials is not None and cert.serial_number in serials

    def hours_left(self) -> float | None:
        """Hours until the first CRL's nextUpdate passes (negative: passed); None: no date."""
        dates = [crl.next_update_utc for crl in self.crls if crl.next_update_utc is not None]
        if not dates:
            return None
        return (min(dates) - datetime.now(UTC)).total_seconds() / 3600.0

    def by_issuer(self) -> dict[x509.Name, x509.CertificateRevocationList]:
        """The newest CRL of each issuer."""
        newest: dict[x509.Name, x509.CertificateRevocationList] = {}
        for crl in self.crls:
            seen = newest.get(crl.issuer)
            if seen is None or crl.last_update_utc > seen.last_update_utc:
                newest[crl.issuer] = crl
        return newest


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a key type that cannot sign CRLs
        return False


def _expired(crl: x509.CertificateRevocationList, now: datetime) -> bool:
    return crl.next_update_utc is not None and crl.next_update_utc < now


def replaces_safely(old: RevocationList | None, new: RevocationList | None) -> str | None:
    """Why ``new`` must not replace ``old`` (it would refuse chargers by mistake), or None."""
    if old is None or new is None:
        return None
    now = datetime.now(UTC)
    current, coming = old.by_issuer(), new.by_issuer()
    for issuer, crl in coming.items():
        before = current.get(issuer)
        if before is None:
            continue
        name = issuer.rfc4514_string()
        if crl.last_update_utc < before.last_update_utc:
            return f"the new CRL of {name} is older than the one in use"
        if _expired(crl, now) and not _expired(before, now):
            return f"the new CRL of {name} is past its nextUpdate; the one in use is not"
    return None


@dataclass(frozen=True, slots=True)
class TlsState:
    """What one load of the files produced."""

    context: ssl.SSLContext | None
    revocations: RevocationList | None
    server_cert_not_after: datetime | None


def load_state(security: OcppSecuritySettings, client_certs: ssl.VerifyMode) -> TlsState:
    """Build the OCPP port's TLS context (None for plain ws); ConfigError names the bad file."""
    if security.tls_cert is None:
        return TlsState(None, None, None)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # OCPP security profiles require TLS 1.2 or newer.
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if security.tls_min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.options |= ssl.OP_NO_RENEGOTIATION
    key = str(security.tls_key) if security.tls_key is not None else None
    try:
        context.load_cert_chain(str(security.tls_cert), key)
        not_after = certificate_not_after(security.tls_cert)
    except (OSError, ssl.SSLError, ValueError) as exc:
        # The exception text names the file, not its content.
        raise ConfigError("ocpp.security.tls_cert", f"cannot load certificate/key: {exc}") from None
    revocations: RevocationList | None = None
    if client_certs != ssl.CERT_NONE:
        if security.charger_ca is None:
            raise ConfigError("ocpp.security.charger_ca", "profile 3 needs a charger CA bundle")
        try:
            context.load_verify_locations(cafile=str(security.charger_ca))
            cas = x509.load_pem_x509_certificates(security.charger_ca.read_bytes())
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                "ocpp.security.charger_ca", f"cannot load {security.charger_ca}: {exc}"
            ) from None
        if security.charger_crl is not None:
            revocations = _load_crl(context, security.charger_crl, cas)
        context.verify_mode = client_certs
    return TlsState(context, revocations, not_after)


def _load_crl(
    context: ssl.SSLContext, path: Path, cas: Sequence[x509.Certificate]
) -> RevocationList:
    try:
        revocations = RevocationList.load(path, cas)
        with _pem_file(revocations.pem()) as checked:
            context.load_verify_locations(cafile=checked)
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise ConfigError("ocpp.security.charger_crl", f"cannot load {path}: {exc}") from None
    # Every certificate's issuer must have a CRL there; without one OpenSSL refuses it.
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return revocations


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    """A path holding ``data``: OpenSSL reads CRLs only from files."""
    if hasattr(os, "memfd_create"):  # Linux: in memory, works on a read-only filesystem
        fd = os.memfd_create("charger-crl", os.MFD_CLOEXEC)
        try:
            with open(fd, "wb", closefd=False) as out:
                out.write(data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(prefix="charger-crl-", suffix=".pem") as out:
        out.write(data)
        out.flush()
        yield out.name


FileStamp = tuple[tuple[str, int, int] | None, ...]


class TlsFiles:
    """The current TLS state of the OCPP port and the stamp of the files it came from."""

    def __init__(self, security: OcppSecuritySettings, client_certs: ssl.VerifyMode) -> None:
        self.security = security
        self.client_certs = client_certs
        self.stamp = self.files_stamp()
        self.state = load_state(security, client_certs)  # raises ConfigError at start

    @property
    def crl_unused(self) -> bool:
        """A CRL is configured, but no charger uses client certificates (profile 3)."""
        return self.security.charger_crl is not None and self.client_certs == ssl.CERT_NONE

    @property
    def context(self) -> ssl.SSLContext | None:
        return self.state.context

    @property
    def revocations(self) -> RevocationList | None:
        return self.state.revocations

    @property
    def server_cert_days_left(self) -> float | None:
        """Days until the certificate being served expires (None: no TLS)."""
        not_after = self.state.server_cert_not_after
        return None if not_after is None else days_until(not_after)

    @property
    def paths(self) -> list[Path]:
        s = self.security
        return [p for p in (s.tls_cert, s.tls_key, s.charger_ca, s.charger_crl) if p is not None]

    def note_change(self) -> bool:
        """Whether a file changed since the last call (each change is reported once, so a
        broken file is not reloaded and logged at every check)."""
        stamp = self.files_stamp()
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        return True

    def files_stamp(self) -> FileStamp:
        stamps: list[tuple[str, int, int] | None] = []
        for path in self.paths:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
                continue
            stamps.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def build(self) -> TlsState:
        """Load the files again (blocking: run it off the event loop); ConfigError if bad."""
        state = load_state(self.security, self.client_certs)
        problem = replaces_safely(self.state.revocations, state.revocations)
        if problem is not None:
            raise ConfigError("ocpp.security.charger_crl", problem)
        return state

    def use(self, state: TlsState) -> None:
        self.state = state
        log.info("ocpp.tls_reloaded", files=[str(p) for p in self.paths])
        self.log_state()

    def log_state(self) -> None:
        """Log the served certificate's and the CRLs' remaining validity."""
        if self.crl_unused:
            log.warning("ocpp.charger_crl_unused", path=str(self.security.charger_crl),
                        reason="no charger uses security profile 3")  # fmt: skip
        cert, not_after = self.security.tls_cert, self.state.server_cert_not_after
        if cert is not None and not_after is not None:
            log_days_left("ocpp.server_cert", cert, not_after)
        revocations = self.state.revocations
        if revocations is None:
            return
        hours = revocations.hours_left()
        fields = {
            "path": str(self.security.charger_crl),
            "crls": [
                {"issuer": crl.issuer.rfc4514_string(), "revoked": len(crl),
                 "last_update": crl.last_update_utc.isoformat(),
                 "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc else None}
                for crl in revocations.crls
            ],
            "hours_left": None if hours is None else round(hours, 1),
        }  # fmt: skip
        if hours is not None and hours < CRL_WARN_HOURS:
            log.warning("ocpp.charger_crl", reason="a CRL's nextUpdate is near or past: "
                        "install a newer CRL or chargers of that CA will be refused",
                        **fields)  # fmt: skip
        else:
            log.info("ocpp.charger_crl", **fields)
