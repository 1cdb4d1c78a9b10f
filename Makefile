# `make dev` and `make test` work on a fresh machine: they create .venv and install what they need.
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTHON ?= python3

.PHONY: dev test check test-tools vendor bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/durable dev

# Test-only tools: Debian chromium (browser tests) and the Node load generator / JS clients.
test-tools: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	test -d benchmarks/loadgen/node_modules || (cd benchmarks/loadgen && npm ci --silent)
	$(MAKE) vendor

# The todo page's TinyBase modules, copied from the npm package (generated, not committed).
TINYBASE := tests/todos/js/node_modules/tinybase/min
VENDOR   := examples/todos/web/vendor/tinybase
vendor:
	test -d tests/todos/js/node_modules || (cd tests/todos/js && npm ci --silent)
	mkdir -p $(VENDOR)/mergeable-store $(VENDOR)/synchronizers/synchronizer-ws-client
	cp $(TINYBASE)/mergeable-store/index.js $(VENDOR)/mergeable-store/index.js
	cp $(TINYBASE)/synchronizers/synchronizer-ws-client/index.js \
	   $(VENDOR)/synchronizers/synchronizer-ws-client/index.js

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) test-tools check
	$(BIN)/pytest

# The benchmark suite: the Node load generator and Cloudflare's workerd (pinned Miniflare) beside us.
bench: $(STAMP)
	test -d benchmarks/loadgen/node_modules || (cd benchmarks/loadgen && npm ci --silent)
	test -d benchmarks/reference/node_modules || (cd benchmarks/reference && npm ci --silent)
	test -d tests/todos/js/node_modules || (cd tests/todos/js && npm ci --silent)
	$(BIN)/durable bench $(BENCH_ARGS)
