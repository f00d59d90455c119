# wspush — the two commands: `make dev` (run locally) and `make test` (every test).
# Both install what they need on first run: a Python 3.13 venv and the npm tools.

SHELL := /bin/bash
PYTHON ?= python3.13
VENV := .venv
BIN := $(VENV)/bin
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
CLIENT_STAMP := client/node_modules/.installed
CLIENT_TEST_STAMP := client/test/node_modules/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
CHROMIUM := /usr/bin/chromium
STAGE ?= dev
REGION ?= us-east-1
AUTH ?= none

.PHONY: dev test install lint typecheck unit integration e2e client-test accounting soak packaging \
	package deploy clean bench schemas mutation

dev: $(PY_STAMP) $(NODE_STAMP) $(CLIENT_STAMP)
	$(BIN)/python -m local.run --auth $(AUTH)

test: install lint typecheck client-test
	$(BIN)/pytest

install: $(PY_STAMP) $(NODE_STAMP) $(CLIENT_STAMP) $(CLIENT_TEST_STAMP) $(CHECKOV_STAMP) $(CHROMIUM)

$(PY_STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# checkov (tests/packaging) pins an older boto3: it gets a venv of its own.
$(CHECKOV_STAMP): tests/packaging/requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r tests/packaging/requirements-checkov.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

# client/ is the package apps install: it has no runtime dependency, so `npm ci` there may not
# even create node_modules/. React and the test tools live in client/test/, never beside src/.
$(CLIENT_STAMP): client/package.json client/package-lock.json
	cd client && npm ci --no-audit --no-fund
	mkdir -p $(@D)
	touch $@

$(CLIENT_TEST_STAMP): client/test/package.json client/test/package-lock.json $(CLIENT_STAMP)
	cd client/test && npm ci --no-audit --no-fund
	touch $@

# The browser test drives Debian's Chromium (playwright-core cannot download browsers here).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	$$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	|| { echo "the browser test needs Chromium: sudo apt-get install chromium" >&2; exit 1; }

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(PY_STAMP)
	$(BIN)/mypy

# tsc on the client's type test, then its node --test suite.
client-test: $(CLIENT_STAMP) $(CLIENT_TEST_STAMP)
	cd client && npm test

unit: $(PY_STAMP)
	$(BIN)/pytest tests/unit

integration: $(PY_STAMP)
	$(BIN)/pytest tests/integration

e2e: install
	$(BIN)/pytest tests/e2e

# The accounting test at 10x its `make test` size (about 2 minutes).
accounting: $(PY_STAMP)
	WSPUSH_ACCOUNTING_SCALE=10 $(BIN)/pytest tests/accounting

# The soak at full size: 300 clients coming and going for 2 minutes on the local stack while
# services send (about 4 minutes in all). WSPUSH_SOAK_CLIENTS, _SECONDS and _SEED override it.
soak: $(PY_STAMP) $(NODE_STAMP)
	WSPUSH_SOAK_CLIENTS=$${WSPUSH_SOAK_CLIENTS:-300} WSPUSH_SOAK_SECONDS=$${WSPUSH_SOAK_SECONDS:-120} \
		$(BIN)/pytest tests/soak

packaging: install
	$(BIN)/pytest tests/packaging

# Fan-out throughput and CPU per delivery over HTTP and TLS against a stub gateway, a cold pool
# at 256 and 128 MB of CPU, cold imports, the zip's size (about 4.5 minutes; 6 with
# ARGS="--repeats 25"); figures in bench/results.json. Fails only if a delivery was wrong.
bench: $(PY_STAMP) $(NODE_STAMP)
	$(BIN)/python -m bench.run $(ARGS)

# Mutation testing of the core modules with the unit and integration suites (bench/mutation.py):
# writes bench/mutation.json and prints the surviving mutants. Hours for every module on two
# cores; MODULES="gateway delivery" runs those only, ARGS=--report-only re-reads the last run.
mutation: $(PY_STAMP)
	$(BIN)/python -m bench.mutation $(if $(MODULES),--modules $(MODULES)) $(ARGS)

# The JSON Schemas in schemas/, written from wspush's own limits (a test fails while they differ).
schemas: $(PY_STAMP)
	$(BIN)/python -m schemas.generate

# Packaging and deploying need only the npm tools (and python3.13 for the dependencies).
package: $(NODE_STAMP)
	npx sls package --stage $(STAGE) --region $(REGION) $(ARGS)

deploy: $(NODE_STAMP)
	npx sls deploy --stage $(STAGE) --region $(REGION) $(ARGS)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules client/node_modules client/test/node_modules \
		.serverless .pytest_cache .mypy_cache .ruff_cache .cache mutants
