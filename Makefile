# Quick start: `make demo` (train if needed, embedded broker, sample inquiries, routing) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-fast lint bench clean

setup: $(VENV)/.installed

# torch is pinned first: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[broker,offline-model,train,console,test]'
	touch $@

# in a terminal the demo then keeps running with the console on http://127.0.0.1:8765/ until Ctrl-C;
# piped or scripted it ends after the routing table
demo: setup
	@if [ -t 1 ]; then $(BIN)/triage demo --console; else $(BIN)/triage demo; fi

test: setup
	$(BIN)/python -m pytest -q -ra

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not slow"

# one-way imports (import-linter contracts in pyproject.toml), ruff and mypy --strict ([tool.mypy])
lint: setup
	$(BIN)/lint-imports
	$(BIN)/ruff check schemas model consumer training devtools console triage tests
	$(BIN)/ruff format --check schemas model consumer training devtools console triage tests
	$(BIN)/mypy

# measure this machine (trained models in artifacts/) and regenerate docs/benchmarks.md from the report
bench: setup
	$(BIN)/triage bench --json --members 2 > reports/bench.json.tmp && mv reports/bench.json.tmp reports/bench.json
	$(BIN)/python -m devtools.benchdoc

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
