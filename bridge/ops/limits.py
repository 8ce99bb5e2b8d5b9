"""Process limits a fleet needs: every charger connection is an open file.

Many hosts start services with a soft limit of 1,024 open files; a bridge for 10,000 chargers
would then refuse connections (``accept`` fails with EMFILE) long before the CPU or memory
run short. The soft limit can be raised to the hard limit without privileges, so ``bridge
run`` does that at start, as most servers do, and says so when even the hard limit is too low.
"""

from __future__ import annotations

import contextlib
import resource

import structlog

log = structlog.get_logger("bridge")

#: Files the bridge needs besides charger connections: the database and its WAL, the hub
#: connections, the ops port, log output, TLS files being read, accept headroom.
RESERVED_FILES = 256


def files_needed(chargers: int) -> int:
    return chargers + RESERVED_FILES


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        # ValueError/OSError: e.g. a hard limit above the kernel's nr_open; keep what we have.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def shortfall(limit: int, chargers: int) -> str | None:
    """Why ``limit`` open files are too few for ``chargers`` (None if they are enough)."""
    needed = files_needed(chargers)
    if limit == resource.RLIM_INFINITY or limit >= needed:
        return None
    return (
        f"{chargers} chargers need about {needed} open files: raise the nofile limit "
        "(ulimit -n, docker run --ulimit nofile=…, LimitNOFILE= in systemd)"
    )


def log_open_file_limit(chargers: int, *, allow_unlisted: bool) -> None:
    """Raise the limit and log ``bridge.open_files`` (a warning if too low for the registry)."""
    soft, hard = raise_open_file_limit()
    fields = {"soft": soft, "hard": hard, "chargers": chargers, "needed": files_needed(chargers)}
    if (short := shortfall(soft, chargers)) is not None:
        log.warning("bridge.open_files", reason=f"only {soft} allowed; {short}", **fields)
    else:
        log.info("bridge.open_files", unlisted_chargers_allowed=allow_unlisted, **fields)
