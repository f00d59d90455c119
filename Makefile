# wspush — the two commands: `make dev` (run locally) and `make test` (every test).
# Both install what they need on first run: a Python 3.13 venv and the npm tools.

SHELL := /bin/bash
PYTHON ?= python3.13
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
STAGE ?= dev
REGION ?= us-east-1

# src/ is copied into the Lambda zip as it is: keep bytecode caches out of it.
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: dev test install lint typecheck unit integration packaging package deploy clean-src clean

dev: install
	@echo "make dev (the local stack) arrives with issue #3; until then see README: make test" >&2
	@exit 2

test: install lint typecheck
	$(BIN)/pytest

install: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(PY_STAMP)
	$(BIN)/mypy

unit: $(PY_STAMP)
	$(BIN)/pytest tests/unit

integration: $(PY_STAMP)
	$(BIN)/pytest tests/integration

packaging: install
	$(BIN)/pytest tests/packaging

package: install clean-src
	npx sls package --stage $(STAGE) --region $(REGION)

deploy: install clean-src
	npx sls deploy --stage $(STAGE) --region $(REGION)

clean-src:
	find src -name __pycache__ -prune -exec rm -rf {} +

clean:
	rm -rf $(VENV) node_modules .serverless .pytest_cache .mypy_cache .ruff_cache
