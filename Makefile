# Same commands locally and in CI. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STACK := deploy/local/stack.sh

.PHONY: help venv up down status test lint bench clean-state

help:  ## this list
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

venv: $(VENV)/.installed  ## create the virtual environment and install the project

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

up: venv  ## start Kafka + PostgreSQL on 127.0.0.1, create topics and schema, check health
	$(STACK) up
	$(VENV)/bin/ioc topics ensure
	$(VENV)/bin/ioc db migrate
	$(VENV)/bin/ioc health --no-worker

down:  ## stop everything `make up` started
	$(STACK) down

status:  ## what is running
	$(STACK) status

test: venv  ## run the whole test suite (starts the stack when it is not running)
	$(VENV)/bin/pytest -q

lint: venv  ## ruff and mypy
	$(VENV)/bin/ruff check ioc streams vision tests bench
	$(VENV)/bin/mypy

bench: venv  ## run the benchmarks (figures next to same-run baselines)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
