"""How the hub is doing, as seen by the requests the bridge sends it.

Readiness is about taking chargers; a hub that is down must not take the bridge out of service
(it keeps recording and sends later). So the hub's health is reported beside it: on
``/healthz``'s details, as metrics and in the fullLoad command's messages. ``HubHealth.watch``
wraps the client the push worker uses, so every request to the hub is seen, whatever it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from bridge.delivery.lane import PushClient
from bridge.errors import HubError, HubTransportError
from bridge.oicp.client import PushOutcome
from bridge.oicp.models import ActionType
from bridge.status.table import OicpStatus

__all__ = ["HubHealth"]


class HubHealth:
    """The outcome of the requests to the hub since the start."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        #: True: the last request got an HTTP answer (even a refusal); False: it did not
        #: (connection, TLS, timeout); None: no request since the start.
        self.reachable: bool | None = None
        self.consecutive_failures = 0
        self.last_success_at: float | None = None
        self.last_failure_at: float | None = None
        self.last_error: HubError | None = None

    def watch(self, client: PushClient) -> PushClient:
        """``client``, with every request's outcome noted here."""
        return _Watched(client, self)

    def succeeded(self) -> None:
        self.reachable = True
        self.consecutive_failures = 0
        self.last_success_at = self.clock()

    def failed(self, error: HubError) -> None:
        self.reachable = not isinstance(error, HubTransportError)
        self.consecutive_failures += 1
        self.last_failure_at = self.clock()
        self.last_error = error


class _Watched:
    def __init__(self, client: PushClient, health: HubHealth) -> None:
        self._client = client
        self._health = health

    async def push_evse_status(
        self,
        action: ActionType,
        records: Sequence[tuple[str, OicpStatus]],
        *,
        timeout: float | None = None,
    ) -> PushOutcome:
        try:
            outcome = await self._client.push_evse_status(action, records, timeout=timeout)
        except HubError as exc:
            self._health.failed(exc)
            raise
        self._health.succeeded()
        return outcome

    async def push_evse_data(
        self, action: ActionType, records: Sequence[str], *, timeout: float | None = None
    ) -> PushOutcome:
        push = getattr(self._client, "push_evse_data", None)
        if push is None:
            raise HubError("this hub client cannot push EVSE data")
        try:
            outcome: PushOutcome = await push(action, records, timeout=timeout)
        except HubError as exc:
            self._health.failed(exc)
            raise
        self._health.succeeded()
        return outcome
