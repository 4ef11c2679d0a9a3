# colab-gpu-runtime — every target sets up what it needs on first use (virtualenv, pinned
# packages, podman & co.) and is quick when that is already done.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Molecule scenarios (one per role under test), run in this order by `make molecule`.
SCENARIOS ?= $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))
PYTEST_ARGS ?=
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Nothing here runs on EC2: never let botocore look for instance metadata (169.254.169.254).
export AWS_EC2_METADATA_DISABLED := true

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements.yml pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11+ is required on the controller (PYTHON=$(PYTHON))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	@# The test kit and the Colab client (pyproject.toml), editable: tests, bench and demo import
	@# this checkout's files. setuptools leaves its build record next to the client: not ours.
	$(BIN)/python -m pip install -q --no-deps -e .
	@rm -rf roles/colab_tunnel/module_utils/*.egg-info
	$(BIN)/ansible-galaxy collection install -r requirements.yml --offline
	@touch $@

.PHONY: venv
venv: $(STAMP) ## Create .venv with the pinned Python packages and check the collections

.PHONY: sysdeps
sysdeps: ## Install missing system packages (podman, runc, debootstrap, OpenSSH)
	@scripts/ensure-system-deps.sh podman runc debootstrap ssh ssh-keygen sshd ss curl

.PHONY: images
images: sysdeps ## Build or load the Debian 12/13 test-host images
	@scripts/testhost-image.sh bookworm trixie

.PHONY: lint
lint: venv ## yamllint + ansible-lint (production profile) + syntax checks
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint --nocolor
	$(BIN)/python -m compileall -q tests bench scripts roles

.PHONY: docs
docs: venv ## Regenerate each role README's variable table from its meta/argument_specs.yml
	$(BIN)/python scripts/role-docs.py

.PHONY: molecule
molecule: venv images ## Molecule role tests on Debian 12 and 13 hosts (SCENARIOS="a b" to pick)
	@export COLAB_TEST_IMAGE_BOOKWORM=$$(scripts/testhost-image.sh bookworm) \
	        COLAB_TEST_IMAGE_TRIXIE=$$(scripts/testhost-image.sh trixie); \
	for s in $(SCENARIOS); do \
	  echo "== molecule test -s $$s"; \
	  $(BIN)/molecule test -s $$s; \
	done

.PHONY: unit
unit: venv ## pytest tests/unit: parsing, filters, decisions, plugin docs (no podman, no moto; < 1 min)
	@# One worker per core, a file's tests on one worker (they share module fixtures: one
	@# ansible-playbook run each, the tier's main cost).
	$(BIN)/pytest tests/unit -n auto --dist loadfile $(PYTEST_ARGS)

# Two pytest-xdist workers, each taking whole test files (a file's hosts and fixtures stay
# together): much of an end-to-end test waits on a booting host, sshd or a service. Fixtures take
# free ports, their own containers and state dirs, so files do not meet. E2E_WORKERS=0: serially.
# The 25 slowest tests are listed at the end: where the tier's time goes.
E2E_WORKERS ?= 2

.PHONY: e2e
e2e: venv images ## pytest: every other test (substrate, provisioning on moto, runtime, browser, end to end)
	@scripts/ensure-system-deps.sh chromium
	$(BIN)/pytest --ignore=tests/unit -n $(E2E_WORKERS) --dist loadfile --durations=25 $(PYTEST_ARGS)

.PHONY: test
test: lint unit molecule e2e ## Everything CI runs: lint, unit tests, Molecule, end-to-end

.PHONY: demo
demo: venv images ## site.yml against an emulated EC2 API and a local podman "GPU host"; ends with a URL
	$(BIN)/python scripts/demo.py up

.PHONY: demo-down
demo-down: venv ## Remove everything `make demo` started
	$(BIN)/python scripts/demo.py down

.PHONY: status
status: venv ## The owner's runtimes: state, type, GPU, cost, tunnel (STATUS_ARGS="-e ec2_gpu_host_status_ssh=true": idle)
	$(BIN)/ansible-playbook playbooks/status.yml $(STATUS_ARGS)

.PHONY: bench
bench: venv images ## Benchmarks: converge vs the seed recipe, no-op re-run, Colab cell round-trips
	@scripts/ensure-system-deps.sh chromium
	$(BIN)/python bench/run.py $(BENCH_ARGS)

.PHONY: clean
clean: ## Remove the virtualenv and local state (test-host image cache is kept)
	rm -rf $(VENV) .ansible .pytest_cache
