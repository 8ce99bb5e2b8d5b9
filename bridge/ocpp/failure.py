"""Why the opening handshake refused a connection: one reason per refusal.

The values are stable labels: they appear in ``ocpp.auth_failed`` and in the ``reason`` of
``bridge_ocpp_auth_failures_total``. The enum has a module of its own because the Basic-auth
check, the failed-login throttle, the client-certificate checks and the proxy all answer with
it, and none of them should import another just for it.
"""

from __future__ import annotations

from enum import StrEnum


class Failure(StrEnum):
    """Why a connection was refused; stable labels for logs and metrics."""

    MISSING_CREDENTIALS = "missing_credentials"
    MALFORMED_CREDENTIALS = "malformed_credentials"
    WRONG_USERNAME = "wrong_username"
    WRONG_PASSWORD = "wrong_password"
    UNKNOWN_CHARGE_POINT = "unknown_charge_point"
    NO_PASSWORD_CONFIGURED = "no_password_configured"
    CLIENT_CERT_MISSING = "client_cert_missing"
    CLIENT_CERT_MISMATCH = "client_cert_mismatch"
    CLIENT_CERT_REJECTED = "client_cert_rejected"
    THROTTLED = "throttled"
    EVSE_ID_TAKEN = "evse_id_taken"  # an unlisted ID whose EvseIDs belong to another charger
    UNLISTED_LIMIT = "unlisted_limit"  # ocpp.max_unlisted_chargers reached
    BUSY = "busy"  # too many password checks queued: HTTP 503, try again later
    UPSTREAM_REFUSED = "upstream_refused"  # proxy: the CSMS answered 401, 403 or 404
