# keysync: the commands a developer and CI run. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
DEPS ?= $(or $(KEYSYNC_DEPS_DIR),.deps)

.PHONY: help deps demo test helm-check image-check lint fmt bench bench-plan bench-apply

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

deps: ## Install nats-server, Java 21+, Keycloak and Prism (Node.js if missing) into .deps/ (cached; fast when done).
	@deploy/local/deps.sh

demo: deps ## A real sync from a seeded Keycloak into the emulated products, every service a process.
	deploy/local/demo.sh

test: deps helm-check ## Run every test, with real nats-server and one Keycloak for the whole run.
	$(CARGO) build --quiet -p test-support --bin keysync-test-env
	$(CARGO) run --quiet -p test-support --bin keysync-test-env -- $(CARGO) test --workspace

helm-check: deps ## Lint and render the Helm chart offline; validate the manifests (strict).
	$(DEPS)/venv/bin/python deploy/helm/check.py

image-check: ## Build the image offline (debootstrap base, buildah, host binaries; PROFILE=dev for a debug build); run each binary in it.
	CARGO="$(CARGO)" deploy/image/check.sh

lint: ## Formatting and clippy, warnings are errors.
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code.
	$(CARGO) fmt --all

BENCHES := $(if $(wildcard crates/model/benches/plan.rs),bench-plan) \
           $(if $(wildcard crates/atlassian/benches/apply.rs),bench-apply) \
           $(if $(wildcard crates/fetcher/benches/fetch.rs),bench-fetch)

bench: $(BENCHES) ## Run every benchmark; each ends with `BENCH <workload> key=value ...` lines.

bench-plan: ## The plan function at 10k, 100k and 1M users (floor: 1M in <= 2 s, <= 2 GiB).
	$(CARGO) bench -p model --bench plan

bench-apply: ## 100,000 creates against the Jira emulator at 1,000 req/s (floor: >= 90 % of the limit).
	$(CARGO) bench -p atlassian --bench apply

bench-fetch: deps ## Fetch 100,000 users, 2,000 groups, 300,000 memberships from Keycloak (floor: >= 3x python-keycloak, <= 256 MiB).
	$(CARGO) bench -p fetcher --bench fetch
