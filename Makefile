# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime

.PHONY: run test lint typecheck unit chaos bench compat clean promtool

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# `make run` needs the runtime dependencies and the `fast` extra: the daemon runs on
# uvloop when it is installed, which takes ~15-35 µs off every relayed frame on the
# bench box (docs/BENCHMARKS.md, "Relay"). The linters and test tools come with
# `make test`; `make bench` has both (it measures the daemon on either loop).
$(RUNTIME): $(BIN)/python pyproject.toml setup.py wsgate/_relayfast.c
	$(BIN)/pip install --quiet -e '.[fast]'
	touch $(RUNTIME)

# setup.py and the C source: the editable install compiles wsgate/_relayfast.c in place,
# so a venv made before it (or before a change to it) reinstalls.
$(STAMP): $(BIN)/python pyproject.toml setup.py wsgate/_relayfast.c
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# `make run LISTEN=127.0.0.1:9000` picks the gateway's address; by default the demo moves
# off a busy 8765 by itself and says where.
run: $(RUNTIME)
	$(BIN)/wsgate run --demo $(if $(LISTEN),--listen $(LISTEN))

lint: $(STAMP)
	$(BIN)/ruff check wsgate tests bench
	$(BIN)/ruff format --check wsgate tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# promtool for tests/control/test_promtool.py, taken from Debian's prometheus package when
# apt is there (as root: CI); without it that test skips and a strict check of its own runs.
$(BIN)/promtool: | $(BIN)/python
	@-tmp=$$(mktemp -d) && cd $$tmp && \
	  { apt-get download prometheus >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get download prometheus >/dev/null 2>&1; }; } && \
	  dpkg-deb -x prometheus_*.deb x && cp x/usr/bin/promtool $(CURDIR)/$(BIN)/promtool; \
	  rm -rf $$tmp; test -x $(CURDIR)/$(BIN)/promtool || echo "promtool unavailable: test_promtool.py skips"

promtool: $(BIN)/promtool

# The main suite (with the short chaos drills); tests/compat runs in its own venv below.
unit: $(STAMP) $(BIN)/promtool
	$(BIN)/pytest --ignore=tests/compat

# CI's command (.ci/run): lint, types, the suite, and every third-party client for real.
test: lint typecheck unit compat

chaos: $(STAMP)
	$(BIN)/pytest -m slow tests/chaos

# Third-party exchange clients (tests/compat) live in their own venv: ccxt pins uvloop, which
# wsgate would then pick up for every run, and bitfinex-api-py pins websockets~=12 (it runs on
# websockets 17's legacy client, hence --no-deps). --fail-on-skip (tests/conftest.py): a
# client that is missing fails the run instead of skipping its module. To add a client: put
# it in pyproject's `compat` extra (or below, if it needs --no-deps), write
# tests/compat/test_<client>.py with `pytest.importorskip(...)` and `rig.stack()`.
COMPAT := $(VENV)/compat
$(COMPAT)/.installed: $(STAMP) pyproject.toml Makefile
	test -x $(COMPAT)/bin/python || $(PY) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install --quiet -e '.[test,compat]'
	$(COMPAT)/bin/pip install --quiet --no-deps 'bitfinex-api-py>=3,<5'
	$(COMPAT)/bin/pip install --quiet 'pyee~=11.1.0' 'requests>=2.32'
	touch $@

compat: $(COMPAT)/.installed
	$(COMPAT)/bin/pytest tests/compat --fail-on-skip

bench: $(STAMP) $(RUNTIME)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
