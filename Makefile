# Two entry points, each doing its own set-up: `make demo` (the main job) and `make test` (the whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.llmpt-installed

.PHONY: demo test test-fast lint install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/llmpt train --overwrite

# the whole suite: the unit tests and the bad-input corpus (single-process, parallel-safe) on 2 processes, then the
# multi-process integration tests one at a time (each already runs 2-4 ranks on the 2 cores)
test: $(STAMP)
	$(BIN)/ruff check llmpt tests bench scripts
	$(BIN)/python -m pytest -q -n 2 tests/unit tests/bad_inputs
	$(BIN)/python -m pytest -q tests/integration

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n 2 tests/unit tests/bad_inputs

lint: $(STAMP)
	$(BIN)/ruff check llmpt tests bench scripts
	$(BIN)/ruff format --check llmpt tests bench
