# Quick start: `make run` serves the demo on http://127.0.0.1:8000; `make test` runs every check.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck pytest install migrate demo clean bench

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/opencoupon migrate

demo: migrate
	$(BIN)/opencoupon demo

run: export OPENCOUPON_BASE_URL ?= http://$(HOST):$(PORT)
run: migrate
	@$(BIN)/opencoupon demo
	@echo "Demo credentials are printed above (kept in var/demo-credentials.json)."
	@echo "Serving on http://$(HOST):$(PORT) (dashboard: /dashboard/login, API docs: /docs)"
	$(BIN)/opencoupon serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

bench: install
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache
