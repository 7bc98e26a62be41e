# edgebot — the two quick-start commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo setup system-deps venv lint typecheck unit bench soak fuzz pictures clean

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.lock -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

## system packages the tests and the demo run for real (Redis, dockerd, registry, busybox, git, openssl)
system-deps:
	scripts/install-system-deps.sh

setup: system-deps venv

## everything: lint, types, unit + integration + end-to-end tests, benchmark smoke run
test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -x --durations=15
	$(PY) -m bench.run --smoke

## a publish of the sample service end to end on local stand-ins, printing what the thread shows
demo: setup
	$(PY) -m sandbox.demo

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . || true

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest -q -m "not slow"

## full benchmarks; results written to docs/BENCHMARKS.md
bench: setup
	$(PY) -m bench.run

## soak: 50 releases over 2 workers under random SIGKILLs; results written to docs/BENCHMARKS.md (not in make test)
soak: setup
	$(PY) -m bench.soak

## the command grammar fuzzed with thousands of examples (make test runs a few hundred)
fuzz: venv
	EDGEBOT_FUZZ_EXAMPLES=5000 $(PY) -m pytest -q tests/test_grammar.py -k fuzz

## what users see in Slack, as PNGs in docs/images/ (Block Kit snapshots drawn by headless Chromium; docs/slack-messages.md)
pictures: setup
	$(PY) -m sandbox.pictures --out docs/images

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
