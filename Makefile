# Quiver's two everyday commands are `make demo` and `make test`.
#
# Builds go to ./target, as `cargo run --release -- demo` does, so the two commands share one
# build; set CARGO_TARGET_DIR to share it between clones (.ci/run does). The Python venvs
# live under ~/.cache/quiver.

export CARGO_TARGET_DIR ?= $(CURDIR)/target
VENV ?= $(HOME)/.cache/quiver/venv
SUPERSET_VENV ?= $(HOME)/.cache/quiver/superset-venv
PYTHON ?= python3
QUIVER_BIN := $(CARGO_TARGET_DIR)/release/quiver

.PHONY: demo build test test-deps test-rust test-python venv superset node debs browser postgres java go lint fmt bench bench-ingest bench-cluster bench-distributed bench-scale bench-wire

## Run the server with the TPC-H demo data (scale 0.1), from the same build as the tests.
demo: build
	$(QUIVER_BIN) demo

# The whole workspace with every target, so `cargo test` below reuses it (same features).
build:
	cargo build --release --workspace --all-targets

## Every test: formatting, Rust unit and end-to-end tests, Python client tests (with a real
## OpenID provider under Node). What the tests need besides Rust is fetched and installed
## while the release build compiles (downloads beside a CPU-bound build: minutes saved cold).
test:
	cargo fmt --all -- --check
	$(MAKE) --no-print-directory -j 8 build test-deps
	cargo test --release --workspace
	QUIVER_BIN=$(QUIVER_BIN) $(VENV)/bin/python -m pytest tests/python -q
	QUIVER_TEST_STATE=postgres QUIVER_BIN=$(QUIVER_BIN) $(VENV)/bin/python -m pytest tests/python -q

test-rust: build
	cargo test --release --workspace

## The clients, servers and tools the tests drive.
test-deps: venv superset node debs java go

test-python: build test-deps
	QUIVER_BIN=$(QUIVER_BIN) $(VENV)/bin/python -m pytest tests/python -q
	QUIVER_TEST_STATE=postgres QUIVER_BIN=$(QUIVER_BIN) $(VENV)/bin/python -m pytest tests/python -q

## The pinned real clients (ADBC, pyarrow, polars, pandas) in a venv.
venv: $(VENV)/.installed

$(VENV)/.installed: tests/python/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r tests/python/requirements.txt
	cp tests/python/requirements.txt $@

## The OpenID provider the OIDC tests sign in with (npm `oidc-provider`, pinned by its lockfile).
## Apache Superset with the Flight SQL dialect, in a venv of its own (its pins clash).
superset: $(SUPERSET_VENV)/.installed

$(SUPERSET_VENV)/.installed: tests/superset/requirements.txt tests/superset/constraints.txt
	$(PYTHON) -m venv $(SUPERSET_VENV)
	$(SUPERSET_VENV)/bin/pip install -q -r tests/superset/requirements.txt -c tests/superset/constraints.txt
	touch $@

node: tests/oidc/node_modules/.installed

tests/oidc/node_modules/.installed: tests/oidc/package-lock.json
	npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
	touch $@

## A JDK and Maven for the JDBC driver tests (tests/jdbc), installed when missing, and the
## driver and JUnit fetched from Maven Central.
java: tests/jdbc/target/.fetched

tests/jdbc/target/.fetched: tests/jdbc/pom.xml | debs
	mvn -B -q -f tests/jdbc/pom.xml dependency:go-offline test-compile
	touch $@

## Go and the Arrow Go Flight SQL driver for tests/go (modules pinned by go.sum).
go: debs
	cd tests/go && go mod download

## Debian's packages the tests use, those missing installed in one `apt-get` (its lock admits
## one at a time): PostgreSQL (connector and cluster tests), Chromium (web UI tests, driven
## by Playwright), a JDK and Maven (JDBC tests), Go (Arrow Go Flight SQL driver tests).
debs:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	{ command -v mvn && command -v javac; } >/dev/null || missing="$$missing maven default-jdk-headless"; \
	command -v go >/dev/null || missing="$$missing golang-go"; \
	[ -z "$$missing" ] || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; }

postgres browser: debs

lint:
	cargo fmt --all -- --check
	cargo clippy --release --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

## Ingest benchmark: CSV and PostgreSQL → parquet beside DuckDB (see benches/RESULTS.md).
bench-ingest: build venv postgres
	$(VENV)/bin/pip install --quiet -r benches/requirements.txt
	PYTHONPATH=tests/python QUIVER_BIN=$(QUIVER_BIN) $(VENV)/bin/python benches/ingest.py

## Cluster benchmark: PostgreSQL vs embedded state, one vs three replicas (benches/RESULTS.md).
bench-cluster: build venv postgres
	PYTHONPATH=tests/python QUIVER_BIN=$(QUIVER_BIN) $(VENV)/bin/python benches/cluster.py --scale 0.1

## Distributed vs single-node TPC-H Q1 and Q3 on four replicas (see benches/RESULTS.md).
bench-distributed: build venv postgres
	PYTHONPATH=tests/python QUIVER_BIN=$(QUIVER_BIN) $(VENV)/bin/python benches/distributed.py --scales 1

## End-to-end benchmark at scale 1 (see benches/RESULTS.md).
bench: build venv
	$(VENV)/bin/pip install --quiet -r benches/requirements.txt
	PYTHONPATH=tests/python QUIVER_BIN=$(QUIVER_BIN) $(VENV)/bin/python benches/run.py --scale 1

## Time and server memory at scales 0.1, 1 and 10 (see benches/RESULTS.md).
bench-scale: build venv
	PYTHONPATH=tests/python QUIVER_BIN=$(QUIVER_BIN) $(VENV)/bin/python benches/scale.py --scales 0.1,1,10

## Result compression on loopback and on a 1 Gbit/s link (root: shapes the port with tc).
bench-wire: build venv
	PYTHONPATH=tests/python QUIVER_BIN=$(QUIVER_BIN) $(VENV)/bin/python benches/wire.py --scale 1
