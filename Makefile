# Two commands on a fresh machine: `make plan` (the stack, offline) and `make test` (everything).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STACK ?= prod
STAMP := $(VENV)/.installed

.PHONY: plan test render policies system-packages clean

# The virtual environment, rebuilt when the pinned requirements change.
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

## plan: run the real Pulumi program for STACK under Pulumi's mock runtime; writes build/STACK/
plan: $(STAMP)
	$(PY) -m offline plan --stack $(STACK)

## render: the trtllm-serve command, options file and capacity table of STACK
render: $(STAMP)
	$(PY) -m serving render --stack $(STACK)

## test: the whole suite (system packages first: the gateway tests run Debian's nginx)
test: $(STAMP) system-packages
	$(PY) -m pytest

system-packages:
	@./scripts/install-system-packages

clean:
	rm -rf build $(VENV)
