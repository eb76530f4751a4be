# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?=

.PHONY: demo test lint bench clean coverage-kernels browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/balllink demo $(if $(DATA),--data "$(DATA)",)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Chromium and its driver for the browser tests (Debian's chromium + chromium-driver),
# installed with apt-get when missing and this user may (root, or sudo without a
# password); otherwise the browser tests are skipped and say why.
browser:
	@if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || \
		command -v chromium-browser >/dev/null 2>&1; }; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "browser tests: no apt-get here to install chromium + chromium-driver; they will be skipped"; \
	elif [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver >/dev/null) || echo "browser tests: apt-get could not install chromium"; \
	elif sudo -n true 2>/dev/null; then \
		(sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver >/dev/null) || echo "browser tests: apt-get could not install chromium"; \
	else echo "browser tests: chromium + chromium-driver missing and no root/sudo to install them; they will be skipped"; fi

test: lint browser
	$(BIN)/python -m pytest -q

# Line coverage of the Numba kernels: with the JIT off they run as plain Python (njit is
# the identity, prange is range), so coverage.py sees every line the tests reach. The
# source is given as a folder: a dotted --cov=balllink._kernels makes coverage re-import
# numpy, which NumPy 2.4 refuses ("cannot load module more than once per process").
coverage-kernels: $(STAMP)
	NUMBA_DISABLE_JIT=1 COVERAGE_FILE=$(VENV)/.coverage-kernels $(BIN)/python -m pytest -q \
		tests/test_kernels.py --cov=src/balllink --cov-report=
	COVERAGE_FILE=$(VENV)/.coverage-kernels $(BIN)/python -m coverage report -m \
		--include='*/balllink/_kernels.py'

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_preprocess.py
	$(BIN)/python benchmarks/bench_compare.py
	$(BIN)/python benchmarks/bench_index.py --n 10000 --factories Flat compressed
	$(BIN)/python benchmarks/bench_database.py --sizes 1e3,1e4

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
