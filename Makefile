# Kittiwake. `make serve` runs the server with built-in defaults; `make test` runs every test.
# Only python3 (>= 3.11) is needed: the first run makes .venv and installs into it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
CONFIG ?=
PYTEST_ARGS ?=
LINT_PATHS := $(wildcard src tests bench)

.PHONY: help serve test lint format venv clean

help:
	@echo "make serve   run Kittiwake (127.0.0.1:2525 MX, :5870 submission, :4650 TLS); CONFIG=file.toml"
	@echo "make test    install test dependencies and run the whole test suite"
	@echo "make lint    ruff check, ruff format --check, mypy --strict"
	@echo "make format  ruff format + ruff check --fix"
	@echo "make clean   remove .venv and caches (kittiwake-data/ is kept)"

$(BIN)/python:
	bash scripts/make-venv.sh "$(PYTHON)" "$(VENV)"

venv: $(BIN)/python

# Stamps: reinstall only when pyproject.toml changes (editable install: code changes need none).
$(VENV)/.stamp-run: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[test]'
	touch $@ $(VENV)/.stamp-run

serve: $(VENV)/.stamp-run
	$(BIN)/kittiwake serve $(if $(CONFIG),--config "$(CONFIG)")

test: $(VENV)/.stamp-test
	bash scripts/install-test-deps.sh
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.stamp-test
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy --strict $(LINT_PATHS)

format: $(VENV)/.stamp-test
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
