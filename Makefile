# apiguard: `make run` starts the demo, `make test` runs every test layer. Both set themselves up.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ROOT        := $(abspath .)
VENV        := $(ROOT)/.venv
PY          := $(VENV)/bin/python
ENVOY       := $(VENV)/bin/envoy
TOOLS       := $(ROOT)/.tools
WASM_TARGET := wasm32-wasip1
WASM        := $(ROOT)/target/$(WASM_TARGET)/release/apiguard.wasm
# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly.
WBG_VERSION  = $(shell awk '/^name = "wasm-bindgen"$$/{getline; gsub(/"/,"",$$3); print $$3}' Cargo.lock)
WBG_RUNNER  := $(TOOLS)/bin/wasm-bindgen-test-runner

export PATH := $(TOOLS)/bin:$(PATH)

.PHONY: help setup setup-rust setup-venv setup-wasm-bindgen setup-wrk setup-mesh setup-nginx setup-redis build run test test-unit test-wasm test-e2e fuzz lint bench bench-report keygen image schema clean

help:
	@echo "make run     build the plugin and start the demo (Envoy + apiguard + echo upstream)"
	@echo "make test    run every test layer: lint, native unit, wasm unit (Node), end-to-end in Envoy"
	@echo "make bench   measure the filter's cost (writes BENCHMARKS.md; ARGS=--quick for a short run)"
	@echo "make bench-report  redraw BENCHMARKS.md and bench/chart.svg from the last run's bench/out/results.json"
	@echo "make keygen  print a new API key and its configuration entry"
	@echo "make image   package the plugin as an OCI image for Istio (target/image/) and print its digests"
	@echo "make schema  regenerate schema/apiguard-config.schema.json from the configuration types"

setup: setup-rust setup-venv

setup-rust:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy

# The venv is rebuilt whenever the pinned requirements or tests/pyproject.toml change. The test
# support package (tests/support) goes in editable, so envoy/demo.py and bench/ import it as `support`.
$(VENV)/.stamp: tests/requirements.txt tests/pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt --editable tests
	touch $@

setup-venv: $(VENV)/.stamp

$(WBG_RUNNER): Cargo.lock
	@test -n "$(WBG_VERSION)" || { echo "wasm-bindgen not found in Cargo.lock"; exit 1; }
	@if ! $(WBG_RUNNER) --version 2>/dev/null | grep -q " $(WBG_VERSION)$$"; then \
	  echo "installing wasm-bindgen-test-runner $(WBG_VERSION) into .tools"; \
	  cargo install --quiet wasm-bindgen-cli --version $(WBG_VERSION) --root $(TOOLS) \
	    --no-default-features --bin wasm-bindgen-test-runner; \
	fi
	@touch $@

setup-wasm-bindgen: setup-rust $(WBG_RUNNER)

setup-wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

# The mesh tests push the image to a real registry (the CNCF distribution server) with skopeo.
setup-mesh:
	@command -v skopeo >/dev/null && command -v docker-registry >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo docker-registry >/dev/null; }

# The live-data tests serve the policy document with nginx (as a control endpoint would).
setup-nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }

# The global-quota tests count in a real Redis (started by the tests on a free port).
setup-redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# Envoy enters the VM only for the callbacks a module exports; the SDK exports them all. apiguard
# never acts on a response's body or trailers, so those exports go: no VM entry per response body
# chunk (tools/wasm_exports.py).
build: setup-rust
	cargo build --release --target $(WASM_TARGET) --lib
	python3 tools/wasm_exports.py trim $(WASM)
	@printf 'apiguard.wasm: %s bytes (%s)\n' "$$(stat -c %s $(WASM))" "$(WASM)"

run: setup build
	$(PY) envoy/demo.py --envoy $(ENVOY) --wasm $(WASM)

# One native pass covers every target: the `schema` feature only adds code (nothing is compiled
# out with it).
lint: setup-rust
	@echo "== lint $$(date +%T)"
	cargo clippy --all-targets --features schema -- -D warnings
	cargo clippy --target $(WASM_TARGET) --lib -- -D warnings

# With the `schema` feature, so that test-e2e's tools link the library built here.
test-unit:
	@echo "== test-unit $$(date +%T)"
	cargo test --features schema

# tests/properties.rs with a long budget: a million cases per property, optimised
# (`make test-unit` runs the same properties with APIGUARD_PROPTEST_CASES' short default).
FUZZ_CASES ?= 1000000
fuzz:
	@echo "== fuzz $$(date +%T) ($(FUZZ_CASES) cases per property)"
	APIGUARD_PROPTEST_CASES=$(FUZZ_CASES) cargo test --release --test properties

# When the runner must be installed, it compiles beside the wasm test build: each is mostly a chain
# of crates that leaves one core idle, so together they take less time than one after the other.
test-wasm: setup-rust
	@echo "== test-wasm $$(date +%T)"
	@$(MAKE) --no-print-directory $(WBG_RUNNER) & runner=$$!; \
	  cargo test --target wasm32-unknown-unknown --lib --no-run; built=$$?; \
	  wait $$runner && exit $$built
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=$(WBG_RUNNER) cargo test --target wasm32-unknown-unknown --lib

# The tools (key generator, schema printer, audit verifier) are the ones test-unit's `cargo test`
# built (into target/debug, for the integration tests): `cargo test --no-run` finds them up to date.
# (`cargo build --bins` would compile the library and a few dependencies again: without the
# dev-dependencies, their features resolve differently.) Test modules run on two pytest workers, a
# module's tests on one worker (its fixtures are started once).
test-e2e: setup setup-mesh setup-nginx setup-redis build
	@echo "== test-e2e $$(date +%T)"
	cargo test --quiet --features schema --no-run
	APIGUARD_WASM=$(WASM) ENVOY_BIN=$(ENVOY) APIGUARD_KEYGEN=$(ROOT)/target/debug/apiguard-keygen \
	  APIGUARD_SCHEMA_BIN=$(ROOT)/target/debug/apiguard-schema \
	  APIGUARD_AUDIT_VERIFY=$(ROOT)/target/debug/apiguard-audit-verify $(PY) -m pytest -q \
	  -n $(E2E_WORKERS) --dist loadfile tests

E2E_WORKERS ?= 2

test: setup lint test-unit test-wasm test-e2e

bench: setup setup-wrk setup-redis build
	$(PY) bench/run.py --envoy $(ENVOY) --wasm $(WASM) $(ARGS)

# Writes the report again from the last run's saved results, without measuring (ARGS as for
# bench/report.py: another results file, --report/--chart elsewhere).
bench-report: setup-venv
	$(PY) bench/report.py $(ARGS)

keygen:
	@cargo run --quiet --bin apiguard-keygen -- $(ARGS)

# The plugin as an OCI image layout in Istio's Wasm "compat" format; prints the manifest digest
# (a WasmPlugin's sha256) and the .wasm digest (Envoy's remote code sha256). ARGS: --tag, --out.
image: setup-venv build
	$(PY) tools/wasm_image.py --wasm $(WASM) --out $(ROOT)/target/image $(ARGS)

# The configuration's JSON Schema, from the Rust configuration types (the e2e suite checks it is current).
schema:
	cargo run --quiet --features schema --bin apiguard-schema > schema/apiguard-config.schema.json.tmp \
	  || { rm -f schema/apiguard-config.schema.json.tmp; exit 1; }
	mv schema/apiguard-config.schema.json.tmp schema/apiguard-config.schema.json

clean:
	cargo clean
	rm -rf $(VENV) $(TOOLS)
