"""Certificate lifetimes: how many days are left, logged with a warning when renewal is due."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import structlog
from cryptography import x509

log = structlog.get_logger("bridge.certs")

#: Hubject client certificates are renewed by hand: a month is the lead time operators need.
CERT_WARN_DAYS = 30


def certificate_days_left(path: Path) -> float:
    """Days until the first certificate in ``path`` expires (negative once expired).

    Raises OSError if the file cannot be read and ValueError if it holds no PEM certificate.
    """
    data = Path(path).read_bytes()
    start = data.find(b"-----BEGIN CERTIFICATE-----")
    if start < 0:
        raise ValueError(f"{path}: no PEM certificate found")
    cert = x509.load_pem_x509_certificate(data[start:])
    left = cert.not_valid_after_utc - datetime.now(UTC)
    return left.total_seconds() / 86400.0


def log_certificate(event: str, path: Path) -> float | None:
    """Log ``event`` with the days left (a warning under CERT_WARN_DAYS); None if unreadable."""
    try:
        days = certificate_days_left(path)
    except (OSError, ValueError) as exc:
        log.warning(event, path=str(path), error=str(exc))
        return None
    if days < CERT_WARN_DAYS:
        log.warning(event, path=str(path), days_left=round(days, 1),
                    reason=f"expires in less than {CERT_WARN_DAYS} days")  # fmt: skip
    else:
        log.info(event, path=str(path), days_left=round(days, 1))
    return days
