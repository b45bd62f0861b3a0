# Two commands on a fresh machine: `make up` runs gfx-sync, `make test` runs the tests.
# Both create .venv and install the project into it first (once, or again after pyproject changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test lint format bench sync soak

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

up: $(STAMP)
	$(BIN)/gfx-sync up

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The fault-injection suite with every fault window six times longer (minutes, by hand).
soak: $(STAMP)
	GFX_SYNC_FAULTS_SOAK=1 $(BIN)/pytest tests/faults -p no:cacheprovider -o timeout=3600

bench: $(STAMP)
	$(BIN)/python -m bench

sync: $(STAMP)
	$(BIN)/gfx-sync sync $(FILES)
