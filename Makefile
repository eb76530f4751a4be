# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?=

.PHONY: demo test lint bench clean coverage-kernels

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

test: lint
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
