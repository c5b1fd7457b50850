# Two commands matter: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
LINT_PATHS := catalog_assets catalog_assets_tests bench

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

# Re-installs only when pyproject.toml changes; safe to run again and again.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/ruff check $(LINT_PATHS)

# Two workers: the tests wait on loopback servers and child processes as much as on the CPU,
# so on 2 cores this halves the wall time (~8-9 min serial, under 5 with -n 2).
test: lint
	$(PY) -m pytest -q -n 2

demo: setup
	bash scripts/demo.sh

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .demo data/*.duckdb .pytest_cache
