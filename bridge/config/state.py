"""Where the state lives: SQLite or PostgreSQL, and replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from bridge.config.base import _Model


class StateSettings(_Model):
    """Where the bridge keeps its durable state: one SQLite file, or a PostgreSQL database
    shared by several replicas."""

    url: str | None = Field(
        None,
        description="The state database as a URL: `sqlite:///state/bridge.db` (a relative "
        "path after the three slashes, an absolute one after four) or "
        "`postgresql://user:password@host:5432/dbname` (several replicas may share it; see "
        "`replication`). Null: the SQLite file `database`. The password may also come from "
        "the usual PostgreSQL variables (PGPASSWORD, ~/.pgpass).",
    )
    database: Path = Field(
        Path("state/bridge.db"),
        description="SQLite state database file (when `url` is null or a sqlite:/// URL, "
        "which sets it). With PostgreSQL, its directory still holds this replica's small "
        "local files (the API address file of the CLI).",
    )
    group_commit_ms: float = Field(
        2.0,
        ge=0,
        le=100,
        description="A busy bridge (see `group_commit_rows`) waits this many ms before each "
        "commit so that more writes share it (0: never waits). Commits always batch what "
        "arrives while one is being written.",
    )
    group_commit_rows: int = Field(
        16,
        ge=0,
        description="The `group_commit_ms` wait applies after a commit of at least this many "
        "rows; after a smaller one a commit a charger's answer waits for is written at once, "
        "so that at a moderate rate the answer does not wait for the window (0: always wait). "
        "Writes nobody waits for (acknowledgments of pushes) still wait the window.",
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="SQLite synchronous mode: FULL survives power loss, NORMAL only crashes.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme == "sqlite" and value.startswith("sqlite:///") and len(value) > 10:
            return value
        if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            parts = urlsplit(value)
            if not parts.path.strip("/"):
                raise ValueError(f"{_redact(value)!r} names no database (…/dbname)")
            return value
        raise ValueError(
            f"{_redact(value)!r} is neither sqlite:///PATH nor postgresql://HOST/DBNAME"
        )

    @model_validator(mode="after")
    def _sqlite_url_sets_database(self) -> StateSettings:
        if self.url is not None and self.url.startswith("sqlite:///"):
            object.__setattr__(self, "database", Path(self.url.removeprefix("sqlite:///")))
        return self

    @property
    def postgres(self) -> bool:
        """Whether the state is in PostgreSQL (replicas possible) rather than SQLite."""
        return self.url is not None and not self.url.startswith("sqlite:")

    @property
    def where(self) -> str:
        """The database for messages and logs (a PostgreSQL URL without its password)."""
        return _redact(self.url) if self.postgres and self.url else str(self.database)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class ReplicationSettings(_Model):
    """Several replicas on one PostgreSQL database: one push leader, fast failover.

    Only with a PostgreSQL `state.url`. The leader holds a lease row (with an epoch) that it
    renews every `lease_ttl` / 4; it sends a hub request only while its lease, counted by its own
    clock from when it sent the last renewal, outlives that request's timeout. Another replica
    takes the lease only after it expired by the database's clock, then waits the settle time
    if a push was in flight. Failover after a crash: at most `lease_ttl` + `acquire_interval`
    (+ `push_timeout` when a push was in flight).
    """

    replica_id: str | None = Field(
        None,
        max_length=63,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="This replica's name in the database, logs and metrics (unique per "
        "running replica). Null: host name and process ID.",
    )
    lease_ttl: float = Field(
        6.0,
        ge=1,
        le=60,
        description="Seconds a leader's lease lasts without renewal. A dead leader is replaced "
        "after at most this long plus `acquire_interval` (plus the settle time when a push was "
        "in flight): 8.5 s with the defaults.",
    )
    acquire_interval: float = Field(
        0.5, gt=0, le=10, description="Seconds between a follower's attempts to take the lease."
    )
    push_timeout: float = Field(
        2.0,
        gt=0,
        description="Whole-request timeout (s) of a single push in replicated mode (it replaces "
        "`oicp.request_timeout`, which is made for one process): it must be below half the "
        "lease, so that the leader can send between renewals; it is also the settle time a new "
        "leader waits when a push was in flight (unless `delivery.settle_time` is set).",
    )
    replica_timeout: float = Field(
        15.0,
        gt=0,
        description="A replica whose heartbeat (every `lease_ttl` / 4) is older than this is "
        "dead: the leader takes its chargers as disconnected then, and they go offline after "
        "`ocpp.offline_grace` unless they connect again.",
    )

    @model_validator(mode="after")
    def _timeouts(self) -> ReplicationSettings:
        if self.push_timeout > self.lease_ttl / 2:
            raise ValueError(
                f"replication.push_timeout: {self.push_timeout:g} s must be at most half of "
                f"replication.lease_ttl ({self.lease_ttl:g} s): the leader sends only while its "
                "lease outlives the request"
            )
        if self.replica_timeout <= self.lease_ttl:
            raise ValueError(
                f"replication.replica_timeout: {self.replica_timeout:g} s must exceed "
                f"replication.lease_ttl ({self.lease_ttl:g} s)"
            )
        return self
