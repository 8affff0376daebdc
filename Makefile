# The two commands: `make demo` and `make test` (lint, then the tests). Both set up .venv first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m sparkmpi_dl.demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest -ra $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .venv-* .pytest_cache build *.egg-info
