# Every target creates its own virtualenv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config/bridge.example.yaml

.PHONY: run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: start the bridge with the bundled OICP hub simulator as its target
run: $(STAMP)
	BRIDGE_HUB_SIM__EMBEDDED=true $(BIN)/bridge run --config $(CONFIG)

## test: lint, type-check and run every test
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check bridge tests $(wildcard bench)
	$(BIN)/ruff format --check bridge tests $(wildcard bench)

typecheck: $(STAMP)
	$(BIN)/mypy --strict bridge

pytest: $(STAMP)
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache state
