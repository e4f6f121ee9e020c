# Quick start: `make demo` then `make test`. Everything a fresh machine needs is installed here.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Phoning home is off in everything we start.
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false

.PHONY: demo test lint typecheck unit install install-dev install-notebooks notebooks clean help

help:
	@echo "make demo      - create $(VENV), install (with the notebooks' needs), run the demo"
	@echo "make test      - install test needs, run ruff, mypy and the whole test suite"
	@echo "make notebooks - execute notebooks/*.ipynb in place (outputs are committed)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

$(VENV)/.installed-notebooks: $(VENV)/.installed
	$(PIP) install --quiet -c constraints.txt -e '.[notebooks]'
	@touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
install-notebooks: $(VENV)/.installed-notebooks

demo: install-notebooks
	$(BIN)/lab demo --summary-json out/demo-summary.json
	@echo "walkthroughs: $(BIN)/jupyter lab notebooks/   (or make notebooks to re-execute them)"

# Each notebook runs in its own temporary lab home; the executed copy replaces the file.
notebooks: install-notebooks
	$(BIN)/jupyter execute --inplace --timeout=600 notebooks/risk_modeler.ipynb notebooks/auditor.ipynb

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

# Headless Chromium for the console's browser tests: Debian's package, driven by Playwright
# (dev extra) through its executable path; no browser is downloaded. Skipped once installed.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(CHROMIUM):
	$(SUDO) apt-get install -y -q chromium || \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium)

# Two workers on a 2-core machine: end-to-end tests spend much of their time waiting on
# processes and polls. Tests that start Ray share one worker (tests/conftest.py).
TEST_WORKERS ?= 2
test: lint typecheck $(CHROMIUM)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
