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

BENCHES ?= http_core ws_fanout sync_latency initial_sync multinode delta_sync history

# Benchmarks run outside the test-suite (minutes each); results go to BENCHMARKS.md by hand.
bench: $(STAMP) system-packages
	for b in $(BENCHES); do $(PY) bench/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
