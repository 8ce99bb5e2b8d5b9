"""Profile 3: the charger's client certificate is its identity.

OpenSSL has already verified the chain (to ``charger_ca``, against ``charger_crl``) when these
checks run; what is left is whether the certificate names the charger of the URL, so that one
charger cannot log in as another, and which TLS handshake errors count as a refused login.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from bridge.ocpp.failure import Failure


def common_names(peercert: Mapping[str, Any] | None) -> list[str]:
    """Every subject CN of a certificate as returned by ``SSLObject.getpeercert()``."""
    if not peercert:
        return []
    names = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(str(value))
    return names


def check_client_cert(charge_point_id: str, peercert: Mapping[str, Any] | None) -> Failure | None:
    """Profile 3: the (already chain-verified) certificate must name exactly this charger."""
    if not peercert:
        return Failure.CLIENT_CERT_MISSING
    if common_names(peercert) != [charge_point_id]:
        return Failure.CLIENT_CERT_MISMATCH
    return None


# -- TLS ---------------------------------------------------------------------------------------
def tls_failure(exc: BaseException) -> Failure | None:
    """Which TLS handshake errors are a refused client certificate (an auth failure).

    Others (a charger that does not trust our certificate, plain http, timeouts) are not.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):  # chain, validity or purpose
        return Failure.CLIENT_CERT_REJECTED
    if isinstance(exc, ssl.SSLError) and exc.reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return Failure.CLIENT_CERT_MISSING
    return None
