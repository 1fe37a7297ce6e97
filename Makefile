# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime

.PHONY: run test lint typecheck unit chaos bench compat clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# `make run` needs the runtime dependencies only; the linters and test tools come with
# `make test` (the test stamp implies the runtime one).
$(RUNTIME): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(RUNTIME) $(STAMP)

# `make run LISTEN=127.0.0.1:9000` picks the gateway's address; by default the demo moves
# off a busy 8765 by itself and says where.
run: $(RUNTIME)
	$(BIN)/wsgate run --demo $(if $(LISTEN),--listen $(LISTEN))

lint: $(STAMP)
	$(BIN)/ruff check wsgate tests bench
	$(BIN)/ruff format --check wsgate tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

chaos: $(STAMP)
	$(BIN)/pytest -m slow tests/chaos

# Third-party exchange clients (tests/compat) live in their own venv: ccxt pins uvloop, which
# wsgate would then pick up for every run, and bitfinex-api-py pins websockets~=12 (it runs on
# websockets 17's legacy client, hence --no-deps).
COMPAT := $(VENV)/compat
compat: $(STAMP)
	test -x $(COMPAT)/bin/python || $(PY) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install --quiet -e '.[test,compat]'
	$(COMPAT)/bin/pip install --quiet --no-deps 'bitfinex-api-py>=3,<5'
	$(COMPAT)/bin/pip install --quiet 'pyee~=11.1.0' 'requests>=2.32'
	$(COMPAT)/bin/pytest tests/compat

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
