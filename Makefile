# Same commands locally and in CI. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STACK := deploy/local/stack.sh

.PHONY: help deps venv up stack down status test lint bench

help:  ## this list
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

deps:  ## install missing Debian packages (Java 17, Maven, PostgreSQL, Chromium, Prometheus)
	deploy/local/install-deps.sh

venv: $(VENV)/.installed  ## create the virtual environment and install the project

$(VENV)/.installed: pyproject.toml
	deploy/local/install-deps.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

export IOC_CONFIG ?= $(CURDIR)/deploy/local/demo.yaml

export IOC_WORKERS ?= 1

up: venv  ## start the whole local system (Kafka, PostgreSQL, IOC_WORKERS=N identical workers, gateway, feeds, cameras, wall, Prometheus)
	$(STACK) up
	$(VENV)/bin/ioc topics ensure
	$(VENV)/bin/ioc db migrate
	deploy/local/services.sh up
	$(VENV)/bin/ioc health --timeout 60
	@deploy/local/wall-url.sh

stack: venv  ## only Kafka + PostgreSQL, topics and schema (what the tests need)
	$(STACK) up
	$(VENV)/bin/ioc topics ensure
	$(VENV)/bin/ioc db migrate

down:  ## stop everything `make up` started
	-deploy/local/services.sh down
	$(STACK) down

status:  ## what is running
	-deploy/local/services.sh status
	$(STACK) status

test: venv  ## run the whole test suite (starts the stack when it is not running)
	$(VENV)/bin/pytest -q

lint: venv  ## ruff and mypy
	$(VENV)/bin/ruff check ioc streams vision tests bench
	$(VENV)/bin/mypy

bench: venv  ## run the benchmarks (figures next to same-run baselines)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
