"""Certificate lifetimes: how many days are left, logged with a warning when renewal is due."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import structlog
from cryptography import x509

log = structlog.get_logger("bridge.certs")

#: Hubject client certificates are renewed by hand: a month is the lead time operators need.
CERT_WARN_DAYS = 30


def certificate_not_after(path: Path) -> datetime:
    """When the first certificate in ``path`` expires.

    Raises OSError if the file cannot be read and ValueError if it holds no PEM certificate.
    """
    data = Path(path).read_bytes()
    start = data.find(b"-----BEGIN CERTIFICATE-----")
    if start < 0:
        raise ValueError(f"{path}: no PEM certificate found")
    return x509.load_pem_x509_certificate(data[start:]).not_valid_after_utc


def days_until(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds() / 86400.0


def certificate_days_left(path: Path) -> float:
    """Days until the first certificate in ``path`` expires (negative once expired)."""
    return days_until(certificate_not_after(path))


def log_certificate(event: str, path: Path) -> datetime | None:
    """Log ``event`` with the days left (a warning under CERT_WARN_DAYS); the expiry, or None
    if the file is unreadable."""
    try:
        not_after = certificate_not_after(path)
    except (OSError, ValueError) as exc:
        log.warning(event, path=str(path), error=str(exc))
        return None
    log_days_left(event, path, not_after)
    return not_after


def log_days_left(event: str, path: Path, not_after: datetime) -> None:
    days = days_until(not_after)
    if days < CERT_WARN_DAYS:
        log.warning(event, path=str(path), days_left=round(days, 1),
                    reason=f"expires in less than {CERT_WARN_DAYS} days")  # fmt: skip
    else:
        log.info(event, path=str(path), days_left=round(days, 1))
