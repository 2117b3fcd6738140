# Two commands on a fresh machine: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8081
export PORT

.PHONY: run test lint check install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run
install-dev: $(VENV)/.installed-dev

## Serve on $(PORT) with a Celery worker beside it; Ctrl-C stops both.
run: install
	BIN=$(BIN) ./scripts/run.sh

## Run the whole test suite (uses DATABASE_URL / REDIS_URL when set).
test: install-dev
	$(BIN)/python -m pytest

## Lint, formatting, import layers, types (mypy, config in pyproject.toml) and missing migrations.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python manage.py makemigrations --check --dry-run

## Pulse (PostgreSQL, Redis, full pipeline) against LiteLLM proxy on a fast fake upstream: wrk, open loop,
## streams, RSS, GC pauses; writes bench/results/latest.md (~15 minutes). BENCH_ARGS=--quick for a smoke run.
bench: install
	./bench/prepare.sh
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache .ruff_cache .mypy_cache
