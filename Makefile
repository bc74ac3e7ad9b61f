# Entry points for installing, running the local stack, testing and benchmarking.
# `make test` works from a fresh clone: it installs what is missing and starts the stack.
# Ports and folders of the stack: see the top of deploy/stack.sh (KAFKA_PORT, STACK_DIR, ...).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV_DIR ?= $(CURDIR)/.venv
PYTHON := $(VENV_DIR)/bin/python
export VENV_DIR

.PHONY: help install compile stack-up stack-down stack-status test lint demo bench bench-detect clean

help:
	@echo "make install       Debian packages, Kafka jars, venv (deploy/install.sh)"
	@echo "make compile       compile the detector library with mypyc (install does it too)"
	@echo "make stack-up      start Kafka, Prometheus, Alertmanager, webhook receiver"
	@echo "make stack-down    stop them (deploy/stack.sh down --purge also deletes data)"
	@echo "make stack-status  show what runs"
	@echo "make test          install, start the stack, run pytest"
	@echo "make lint          ruff check, ruff format --check and mypy"
	@echo "make demo          install, start the stack, run deploy/demo.sh"
	@echo "make bench         throughput benchmark (bench.throughput)"
	@echo "make bench-detect  detection benchmark (bench.detection)"
	@echo "make clean         stop the stack, delete its data and the caches"

install:
	deploy/install.sh

compile:
	$(PYTHON) deploy/compile_detectors.py

stack-up: install
	deploy/stack.sh up

stack-down:
	deploy/stack.sh down

stack-status:
	deploy/stack.sh status

test: install stack-up
	$(PYTHON) -m pytest -q

lint: install
	$(VENV_DIR)/bin/ruff check .
	$(VENV_DIR)/bin/ruff format --check .
	$(VENV_DIR)/bin/mypy

demo: install stack-up
	@test -f deploy/demo.sh || { echo "make demo: deploy/demo.sh does not exist yet" >&2; exit 1; }
	bash deploy/demo.sh

bench: install stack-up
	$(PYTHON) -m bench.throughput

bench-detect: install
	$(PYTHON) -m bench.detection

clean:
	deploy/stack.sh down --purge
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist deploy/kafka/target
	$(PYTHON) deploy/compile_detectors.py --clean || true
	find . -path ./.venv -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
		| xargs -0 rm -rf
