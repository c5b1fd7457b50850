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

test: lint
	$(PY) -m pytest -q

demo: setup
	bash scripts/demo.sh

bench: setup
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .demo data/*.duckdb .pytest_cache
