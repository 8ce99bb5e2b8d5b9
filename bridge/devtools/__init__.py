"""Development tools shipped with the bridge (simulated chargers for demos and compose)."""
