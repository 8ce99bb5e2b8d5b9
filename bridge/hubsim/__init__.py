"""Hub simulator: a development/test double of Hubject's OICP push endpoints."""

from bridge.hubsim.simulator import (
    BodyValidator,
    Faults,
    HubSimulator,
    ReceivedPush,
    run_hub_sim,
    server_ssl_context,
)

__all__ = [
    "BodyValidator",
    "Faults",
    "HubSimulator",
    "ReceivedPush",
    "run_hub_sim",
    "server_ssl_context",
]
