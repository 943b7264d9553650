# relay — every target creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev serve test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/relay dev

serve: $(STAMP)
	$(BIN)/relay serve

lint: $(STAMP)
	$(BIN)/ruff check relay tests bench
	$(BIN)/mypy --strict relay

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .relay .pytest_cache .mypy_cache .ruff_cache
