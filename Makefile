# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?=

.PHONY: demo test lint bench clean

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

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_preprocess.py
	$(BIN)/python benchmarks/bench_compare.py
	$(BIN)/python benchmarks/bench_index.py --n 10000 --factories Flat compressed
	$(BIN)/python benchmarks/bench_database.py --sizes 1e3,1e4

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
