"""What a failed exchange with the hub means for the request: a HubTransportError.

No I/O: the client hands over the exception of an exchange that did not get an answer. The
error says what went wrong at the network level (naming TLS problems as such) and whether the
hub may have got the request anyway (``maybe_applied``), which decides whether the push
worker may treat it as not sent.
"""

from __future__ import annotations

import ssl

import httpx

from bridge.config import OicpSettings
from bridge.errors import HubTransportError


def transport_error(
    exc: Exception, total: float, shown: str, settings: OicpSettings
) -> HubTransportError:
    """What a failed exchange means for the push: whether the hub may have got it
    (``maybe_applied``); chained to ``exc`` (``__cause__``) only for network errors."""
    if isinstance(exc, httpx.ConnectTimeout):
        return HubTransportError(
            f"connect timeout after {settings.connect_timeout}s (POST {shown})"
        )
    if isinstance(exc, httpx.PoolTimeout):  # never left this process
        return HubTransportError(f"timeout after {total}s (POST {shown})")
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return HubTransportError(f"timeout after {total}s (POST {shown})", maybe_applied=True)
    assert isinstance(exc, httpx.RequestError)  # transport errors, undecodable answers
    message = f"{_describe(exc)} (POST {shown})"
    if shown.startswith("https:") and settings.client_cert is None:
        # With TLS 1.3 a refused client certificate shows up only as a reset/EOF.
        message += "; note: no client certificate configured (oicp.client_cert)"
    # Only a connection that never opened is sure not to have carried the request.
    sent = not isinstance(exc, httpx.ConnectError)
    error = HubTransportError(message, maybe_applied=sent)
    error.__cause__ = exc
    return error


def _describe(exc: httpx.RequestError) -> str:
    """Say what went wrong at the network level, naming TLS problems as such."""
    os_error: OSError | None = None
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            # a wrapped verification error may lack verify_message
            reason = getattr(cause, "verify_message", None) or cause
            return f"TLS: certificate verify failed: {reason}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {cause.reason or cause}"
        if isinstance(cause, OSError) and os_error is None and cause.strerror:
            os_error = cause
        cause = cause.__cause__ or cause.__context__
    kinds: dict[type[httpx.RequestError], str] = {
        httpx.ConnectError: "cannot connect",
        httpx.RemoteProtocolError: "connection closed by hub",
        httpx.ReadError: "read error",
        httpx.WriteError: "write error",
    }
    kind = kinds.get(type(exc), type(exc).__name__)
    detail = os_error.strerror if os_error is not None else str(exc)
    return f"{kind}: {detail}" if detail else kind
