# Every target sets itself up: a virtual environment in .venv with skylane installed editable.
# Re-installs only when pyproject.toml or this file (its EXTRAS) changes.

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= dev,postgres,aws,gcp,azure
# The suite runs in parallel (pytest-xdist), three workers per two cores: the e2e tests spend
# much of their time waiting on servers, emulators and clouds. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$((n + n / 2)))
PYTEST_ARGS ?=
LINT_PATHS := $(wildcard src tests benchmarks)

.PHONY: install run demo test lint format clean terraform-validate

$(STAMP): pyproject.toml Makefile
	@test -n "$(PYTHON)" || { echo "skylane needs Python >= 3.11 on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $(STAMP)

install: $(STAMP)

run: install  ## the control plane on the default SQLite database
	$(BIN)/skylane server start

demo: install  ## a run end to end on a temporary SQLite database, then cleans up
	bash scripts/demo.sh

test: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

format: install
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

terraform-validate: install  ## terraform validate + fmt -check of every module and example, where Terraform is installed
	$(BIN)/python -m pytest -rs tests/e2e/test_terraform.py -k "validate or fmt"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
