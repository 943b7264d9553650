# relay — every target creates .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

INFRA_VENV := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed
PORT ?= 8080
# The SAM tools live in their own venv: installed beside moto they downgrade boto3.
export SAM_CLI_TELEMETRY := 0

.PHONY: dev serve test test-prerequisites lint lint-infra dev-aws sam-build typecheck unit bench clean

# uv (from PyPI, into .venv with pip) installs both venvs: about ten times faster than pip.
UV := $(BIN)/uv
$(UV):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv

$(STAMP): pyproject.toml | $(UV)
	$(UV) pip install --quiet --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

$(INFRA_STAMP): | $(UV)
	test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	$(UV) pip install --quiet --python $(INFRA_VENV)/bin/python 'cfn-lint>=1.20' 'aws-sam-cli>=1.120'
	touch $(INFRA_STAMP)

dev: $(STAMP)
	$(BIN)/relay dev

serve: $(STAMP)
	$(BIN)/relay serve

# template.yaml's stack on a local moto server: HttpApi, SQS event source and schedule emulated.
dev-aws: $(STAMP)
	$(BIN)/python -m infra.dev_aws --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check relay tests bench lambda infra
	$(BIN)/mypy --strict relay

lint-infra: $(INFRA_STAMP)
	$(INFRA_VENV)/bin/cfn-lint template.yaml
	$(INFRA_VENV)/bin/sam validate --lint --template template.yaml

sam-build: $(INFRA_STAMP)
	$(INFRA_VENV)/bin/sam build --template template.yaml

# Run by `sam build` (the layer's BuildMethod: makefile), in a copy of this directory: relay and
# its dependencies for Lambda's Python 3.11 on arm64, into the layer's python/ folder. boto3 is
# bundled (the `aws` extra): the runtime's copy may predate API parameters the backend uses.
build-RelayLayer:
	rm -rf build/layer-wheel
	$(PYTHON) -m pip wheel --quiet --no-deps --wheel-dir build/layer-wheel .
	$(PYTHON) -m pip install --quiet --target "$(ARTIFACTS_DIR)/python" \
		--platform manylinux2014_aarch64 --implementation cp --python-version 3.11 \
		--only-binary=:all: "$$(ls build/layer-wheel/relay-*.whl)[aws]"

# The TypeScript SDK's Receiver, run by the interop tests (tests/node), from npm.
NODE_DEPS := tests/node/node_modules/.installed
$(NODE_DEPS): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_DEPS)

# Debian's chromium for the console's browser tests (tests/console): Playwright drives it as it
# is, and never downloads a browser of its own.
CHROMIUM := $(VENV)/.chromium
$(CHROMIUM): $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	touch $(CHROMIUM)

# The checks and installs before pytest run side by side (most of it waits on the network), and
# pytest runs on two workers (pytest-xdist). Its default "load" distribution, test by test: the
# by-file or by-group ones key tests by node id, and schemathesis' tests share one (pytest 9),
# so all but one of them would silently not run.
test:
	$(MAKE) --no-print-directory -j3 --output-sync=target test-prerequisites
	$(BIN)/pytest -q -n 2

test-prerequisites: lint lint-infra $(NODE_DEPS) $(CHROMIUM)

bench: $(STAMP)
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) $(INFRA_VENV) .relay .pytest_cache .mypy_cache .ruff_cache .aws-sam build
