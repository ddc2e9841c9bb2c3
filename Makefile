# The two commands of the README:
#   make run   - serve configs/sync-config.json
#   make test  - lint, type-check and run the whole suite (installs what it needs)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/sync-config.json
PYTEST_ARGS ?=

.PHONY: run test lint typecheck pytest system-packages bench clean

$(STAMP): pyproject.toml plugins/file_sync/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]' -e ./plugins/file_sync
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/quantum --config $(CONFIG)

system-packages:
	./scripts/ensure-system-packages.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check quantum plugins tests bench examples
	$(VENV)/bin/ruff format --check quantum plugins tests bench examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP) system-packages
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP) system-packages
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info
