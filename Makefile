# fleetops — the demo, the tests and the benchmarks. Each target installs what it needs.
SHELL := /bin/bash
PY := .venv/bin/python
DURATION ?= 0
ARGS ?=

.PHONY: demo test lint typecheck unit bench clean

demo:
	@scripts/bootstrap.sh demo
	@$(PY) -m devtools.demo --duration $(DURATION) $(ARGS)

test:
	@scripts/bootstrap.sh test
	$(PY) -m ruff check fleetops agent collector devtools tests $(wildcard bench)
	$(PY) -m ruff format --check fleetops agent collector devtools tests $(wildcard bench)
	$(PY) -m mypy
	.venv/bin/lint-imports --no-cache
	$(PY) -m pytest $(ARGS)

unit:
	$(PY) -m pytest -x -q $(ARGS)

bench:
	@scripts/bootstrap.sh bench
	@for b in bench/bench_*.py; do PYTHONPATH=$(CURDIR) $(PY) $$b $(ARGS) || exit 1; done

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache *.egg-info
