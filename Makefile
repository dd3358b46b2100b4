# The two commands a newcomer types: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
R2R_CLIENT := r2r==3.6.6
CLIENT := clients/python

.PHONY: run test test-fast lint install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the project's metadata changes: fast when already installed.
$(STAMP): pyproject.toml $(CLIENT)/pyproject.toml Makefile | $(BIN)/python
	@# ragkeep depends on ragkeep-client (src/ragkeep/client, packaged by $(CLIENT)): not on PyPI,
	@# so it goes first. Both editable: ragkeep/client/* is imported from src/ like the rest.
	$(BIN)/python -m pip install --quiet -e $(CLIENT)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# R2R's client for the compatibility tests; --no-deps: its package pins an old server stack.
	$(BIN)/python -m pip install --quiet --no-deps $(R2R_CLIENT)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ragkeep serve

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Pure logic only (filters, limits, config, chunking, parsers...): no PostgreSQL is started.
# tests/conftest.py marks `db` every test that uses a database or a server.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not db" $(PYTEST_ARGS)

# ruff's rules and mypy --strict, both configured in pyproject.toml; both run, either fails it.
lint: $(STAMP)
	@status=0; $(BIN)/ruff check src tests bench || status=1; $(BIN)/mypy || status=1; exit $$status

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) build src/*.egg-info $(CLIENT)/build $(CLIENT)/*.egg-info .pytest_cache
