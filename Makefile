# macvtap-lab: the README's two commands are `make up` and `make test`.
SHELL := /bin/bash
ROOT := $(CURDIR)
PY := $(ROOT)/.venv/bin/python
PULUMI := $(ROOT)/.tools/bin/pulumi
STACK ?= lab
export PATH := $(ROOT)/.tools/bin:$(PATH)

.PHONY: setup up down preview outputs test test-unit test-integration test-e2e lint doctor images cycles bench

setup:            ## install packages, start dockerd, build the venv, Pulumi and the images (idempotent)
	bash scripts/setup.sh

up: setup         ## bring the lab up on embedded defaults and print its outputs
	bash scripts/lab.sh up $(STACK)

down:             ## destroy the lab
	bash scripts/lab.sh down $(STACK)

preview: setup
	bash scripts/lab.sh preview $(STACK)

outputs:
	bash scripts/lab.sh outputs $(STACK)

test: setup       ## lint, unit, integration and end-to-end tests against the real components
	$(PY) -m ruff check macvtap_provider tests stacks examples scripts bench
	$(PY) -m mypy
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit:
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: setup
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

lint:
	$(PY) -m ruff check macvtap_provider tests stacks examples scripts bench
	$(PY) -m mypy

doctor: setup
	$(ROOT)/.venv/bin/macvtap-lab doctor

images:
	$(ROOT)/.venv/bin/macvtap-lab images build

cycles: setup     ## 20 consecutive up/destroy cycles of the lab, counting leftovers
	MACVTAP_LAB_CYCLES=$${CYCLES:-20} $(PY) -m pytest tests/reliability/test_isolation.py -k cycles -s $(PYTEST_ARGS)

bench: setup      ## benchmark: lab up vs manual, no-op, size, scale, RSS (BENCH_ONLY=noop,size for a subset)
	$(PY) -m bench $(BENCH_ARGS)
