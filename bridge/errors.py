"""The one exception hierarchy of the bridge.

Every error the bridge raises on purpose derives from :class:`BridgeError`, so callers at the
edges (CLI, server loops) can tell "ours, with a clear message" from a bug.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Exit statuses of the ``bridge`` command.
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


class BridgeError(Exception):
    """Base of all errors raised on purpose by the bridge."""


class ConfigError(BridgeError):
    """The configuration is invalid; ``field`` names the offending setting.

    One error may carry several problems (``more``): ``problems`` lists every one as
    (field, reason), the first being ``field``/``reason``; the message has one line each.
    """

    def __init__(self, field: str, reason: str, *, more: Sequence[tuple[str, str]] = ()) -> None:
        self.problems = [(field, reason), *more]
        super().__init__("\n".join(f"{f}: {r}" for f, r in self.problems))
        self.field = field
        self.reason = reason


class StoreError(BridgeError):
    """The state database cannot be opened or written."""


class DatabaseLockedError(StoreError):
    """Another bridge process holds the state database (one bridge per database)."""


class NotLeaderError(StoreError):
    """This replica does not hold the push lease (any more): it must not send to the hub, and
    the database refused its write of the hub-side state (fenced by the lease's epoch)."""


class OcppCallError(BridgeError):
    """An incoming OCPP CALL is answered with a CALLERROR carrying this code."""

    def __init__(
        self, code: str, description: str, details: dict[str, object] | None = None
    ) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details or {}


class HubError(BridgeError):
    """A push to the OICP hub did not succeed.

    ``code`` is the OICP StatusCode.Code when the hub answered with one, ``http_status`` the HTTP
    status when there was an HTTP answer; both are ``None`` for network errors and timeouts.
    ``maybe_applied``: the request may have reached the hub without its answer reaching us (a
    timeout, or the connection lost after sending), so the hub may apply it, even later.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        description: str | None = None,
        additional_info: str | None = None,
        retry_after: float | None = None,
        maybe_applied: bool = False,
    ) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied
        self.code = code
        self.http_status = http_status
        self.description = description
        self.additional_info = additional_info
        self.retry_after = retry_after


class HubTransportError(HubError):
    """No usable HTTP answer: connection refused/reset, TLS failure, timeout."""


class HubRejectedError(HubError):
    """The hub answered, but not with ``Result: true`` and code ``000``.

    ``field_errors``: the (fieldReference, errorMessage) pairs of an HTTP 400's
    ``validationErrors`` (Hubject's schema check), in the hub's own spelling.
    """

    field_errors: tuple[tuple[str, str], ...] = ()


class OpsRequestError(BridgeError):
    """A request to the read-only status API cannot be answered as asked.

    ``status_code`` is the OCPI-style code of the answer envelope (2xxx: the client's request is
    at fault); ``http_status`` stays 200 for a request that reached an existing resource.
    """

    def __init__(self, status_code: int, message: str, *, http_status: int = 200) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.http_status = http_status


class CatalogError(BridgeError):
    """A catalog change is refused; nothing of it was applied.

    ``field`` names the offending field (``evses[0].evse_id``), ``status_code`` is the OCPI code
    of the API's answer (2001 invalid or missing field, 2003 unknown object, 2000 refused for
    another reason), ``http_status`` its HTTP status (200 as OCPI wants, 404 for an unknown
    object in the URL).
    """

    def __init__(
        self, field: str, message: str, *, status_code: int = 2001, http_status: int = 200
    ) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.status_code = status_code
        self.http_status = http_status
