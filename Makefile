# Every target creates its own virtualenv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config/bridge.example.yaml

.PHONY: run chargers test lint typecheck hadolint pytest chaos docs bench clean image-test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: start the bridge with the bundled OICP hub simulator as its target; the simulator
##      keeps its state next to the bridge's, so both agree after a restart
run: $(STAMP)
	BRIDGE_HUB_SIM__EMBEDDED=true BRIDGE_HUB_SIM__STATE_FILE=state/hub-sim.json \
	  $(BIN)/oicp-bridge run --config $(CONFIG)

## chargers: simulated chargers for the example registry, against `make run`
chargers: $(STAMP)
	$(BIN)/python -m bridge.devtools.charger_sim --url ws://127.0.0.1:9000/ocpp --interval 10 \
	  CP-0001:1.6:2 CP-0002:2.0.1:1

## test: lint (code and Dockerfile), type-check and run every test
test: lint typecheck hadolint pytest

lint: $(STAMP)
	$(BIN)/ruff check bridge tests $(wildcard bench)
	$(BIN)/ruff format --check bridge tests $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy --strict bridge

hadolint: $(STAMP)
	$(BIN)/hadolint Dockerfile

## image-test: build the container image with podman and run it for real (/readyz, non-root,
##             state on a volume across a restart, exit 0 on SIGTERM); installs podman and
##             makes a local base image first if missing (root; ~3 min fresh, ~1 min after)
image-test: $(STAMP)
	scripts/image-setup.sh
	BRIDGE_IMAGE_TEST=1 $(BIN)/pytest -q -s -p no:cacheprovider tests/test_image.py

## docs: regenerate docs/configuration.md and the metrics table in docs/operations.md
docs: $(STAMP)
	$(BIN)/python -m bridge.ops.docs --write

pytest: $(STAMP)
	$(BIN)/pytest -q

## chaos: the model-based walk of tests/test_model.py at length (minutes): many random
##        sequences of reports, hub faults, restarts and SIGKILLs, the invariant checked
##        whenever quiet; CHAOS_SEQUENCES, CHAOS_STEPS, CHAOS_SEED set size and seed
CHAOS_SEQUENCES ?= 30
CHAOS_STEPS ?= 80
chaos: $(STAMP)
	CHAOS_SEQUENCES=$(CHAOS_SEQUENCES) CHAOS_STEPS=$(CHAOS_STEPS) CHAOS_SEED=$(CHAOS_SEED) \
		$(BIN)/pytest -q -s -p no:cacheprovider tests/test_model.py

## bench: fleet-scale benchmark vs. the ocpp-package baseline, quick sizes (~4 min, 3 runs);
##        BENCH_ARGS=--full for 10,000 chargers (see bench/README.md)
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache state
