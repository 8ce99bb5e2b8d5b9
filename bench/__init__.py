"""Fleet-scale benchmark of the bridge (``python -m bench.run``); see bench/README.md."""
