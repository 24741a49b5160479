# Two commands for a fresh machine: `make demo` and `make test`. Each bootstraps its own venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit system-deps bench bench-throughput clean fuzz soak

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trio-range demo

system-deps:
	bash scripts/install-system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) system-deps
	$(BIN)/pytest

test: lint typecheck unit

# The README's performance table: every target of the performance issue beside its same-run
# baselines (nginx, nginx proxy_pass, the aiohttp pair in benchmarks/aiohttp_baseline.py);
# about 15 minutes, loopback only. ARGS=--quick checks the harness in about 3.
bench: $(STAMP) system-deps
	$(BIN)/python -c 'import aiohttp' 2>/dev/null || $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks.targets $(ARGS)

# Throughput and request rates against nginx only, at several concurrencies (about 20 minutes).
bench-throughput: $(STAMP) system-deps
	$(BIN)/python -m benchmarks.origin_throughput
	$(BIN)/python -m benchmarks.proxy_throughput

# The fuzz tests with a large example budget (make test runs them with a small one).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/http/test_fuzz.py

# 60 s of 200 clients through the proxy, then the loss and leak checks (tests/support/soak.py).
soak: $(STAMP)
	$(BIN)/python -m tests.support.soak --duration 60 --clients 200

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
