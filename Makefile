# The verbs a person types. Everything installs itself: only python3 (3.11+),
# make and npm are needed on the machine.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
PROTOS := proto/tokengrpc/v1/tokens.proto
GEN_DIR := tokengrpc/v1
# The API as released, which every change must stay compatible with
# (docs/development.md: when and how to renew it).
BASELINE := proto/baseline.binpb

.PHONY: help setup generate check-generated lint test serve bench clean

help:
	@echo "make serve   run the service (gRPC on 127.0.0.1:50051, HTTP on 127.0.0.1:8080)"
	@echo "make test    set up, check generated code, lint, type-check and run the tests"
	@echo "make bench   run the benchmarks (not part of make test)"
	@echo "make generate   regenerate tokengrpc/v1 from proto/"

setup: $(STAMP) $(BUF)

# xds-protos ships an old copy of opentelemetry/proto/ (no InstrumentationScope):
# whichever package pip writes last owns those files, and the OTLP exporter
# needs opentelemetry-proto's, so it is written again, last (docs/observability.md).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
		"$$($(PY) -c 'import importlib.metadata as m; print("opentelemetry-proto==" + m.version("opentelemetry-proto"))')"
	touch $@

$(BUF):
	npm install --prefix .tools --no-audit --no-fund --silent @bufbuild/buf@$(BUF_VERSION)

# One target writes all generated code; `check-generated` runs the same
# command into a scratch dir and fails on any difference, a file that
# generation no longer writes (left behind in $(GEN_DIR)) included;
# $(GEN_DIR)/__init__.py is the one file there written by hand.
define protoc
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I proto \
		--python_out=$(1) --grpc_python_out=$(1) --mypy_out=$(1) --mypy_grpc_out=$(1) $(PROTOS)
endef

generate: $(STAMP)
	$(call protoc,.)

check-generated: $(STAMP)
	rm -rf build/gen && mkdir -p build/gen/$(GEN_DIR)
	cp $(GEN_DIR)/__init__.py build/gen/$(GEN_DIR)/
	$(call protoc,build/gen)
	@diff -rq -x __pycache__ build/gen/$(GEN_DIR) $(GEN_DIR) || { \
		echo "generated code is stale: run 'make generate', remove what it does not write, commit $(GEN_DIR)"; \
		exit 1; }
	@echo "generated code is up to date"

lint: $(STAMP) $(BUF)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(BUF) lint
	$(BUF) format --diff --exit-code --path proto/tokengrpc
	$(BUF) breaking --against $(BASELINE)

test: check-generated lint
	$(VENV)/bin/pytest -q

serve: $(STAMP)
	$(VENV)/bin/tokengrpc serve

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
