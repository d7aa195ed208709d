# Each target installs what it needs into .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: install demo test test-e2e ui bench lint format bars emas daily-refresh dry-run validate clean-logs

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

install: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/trading-assets demo

test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n 2 --dist loadfile -m "not e2e"

# The user's day in headless Chromium and the steps on Celery workers (needs chromium and Redis; .ci/run runs it).
test-e2e: $(INSTALLED)
	$(BIN)/pytest -n 2 --dist loadfile -m e2e

ui: $(INSTALLED)
	$(BIN)/trading-assets ui

# The operators' runbook targets; each run also writes $(TRADING_ASSETS_HOME)/logs/refresh-YYYY-MM-DD.log.
bars: $(INSTALLED)
	$(BIN)/trading-assets refresh --bars

emas: $(INSTALLED)
	$(BIN)/trading-assets refresh --emas

daily-refresh: $(INSTALLED)
	$(BIN)/trading-assets refresh --all

dry-run: $(INSTALLED)
	$(BIN)/trading-assets refresh --all --dry-run

validate: $(INSTALLED)
	$(BIN)/trading-assets validate

clean-logs: $(INSTALLED)
	$(BIN)/trading-assets clean-logs

bench: $(INSTALLED)
	$(BIN)/python -m bench

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
