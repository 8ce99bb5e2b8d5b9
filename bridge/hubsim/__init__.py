"""Hub simulator: a development/test double of Hubject's OICP push endpoints."""

from bridge.hubsim.faults import Faults
from bridge.hubsim.serve import run_hub_sim, server_ssl_context
from bridge.hubsim.simulator import BodyValidator, HubSimulator, ReceivedPush

__all__ = [
    "BodyValidator",
    "Faults",
    "HubSimulator",
    "ReceivedPush",
    "run_hub_sim",
    "server_ssl_context",
]
