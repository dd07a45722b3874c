# Every target builds what it needs from nothing: a fresh clone needs only python3 and node/npm.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
IMAGE_TAG ?= scaler-batch-runner:latest
CDK_CONTEXT ?=
# jsii (under aws-cdk-lib) prints a banner for every process on Node 20; the CDK still works.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: demo test lint typecheck synth image image-tools image-bases bench bench-quick dist clean slurm-install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(PIP) install -q -e ".[dev,cdk]"
	touch $@ $(VENV)/.core-installed

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund

demo: $(VENV)/.core-installed
	$(BIN)/scaler-batch demo

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

# The Slurm tests start a one-node cluster (tests/slurm_cluster.py) from these packages. As root (CI), install them
# when missing; otherwise say how, and the Slurm tests skip (SCALER_BATCH_REQUIRE_SLURM=1 makes them fail instead).
slurm-install:
	@if command -v sbatch >/dev/null && PATH="$$PATH:/usr/sbin" command -v slurmctld >/dev/null \
	    && PATH="$$PATH:/usr/sbin" command -v munged >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge; \
	else echo "Slurm is not installed: run 'sudo make slurm-install' (apt-get install slurm-wlm munge)"; fi

# The job image is built with podman where Docker is absent, on a stand-in base made with debootstrap where no
# registry answers (container/offline-base.sh); qemu-user-static runs the arm64 image's binaries. As root (CI),
# install them when missing and let the kernel run arm64 binaries; otherwise say how, and the image tests skip
# (SCALER_BATCH_REQUIRE_IMAGE=1 makes them fail instead).
BINFMT := /proc/sys/fs/binfmt_misc
image-tools:
	@if command -v podman >/dev/null && command -v runc >/dev/null && [ -x /usr/bin/qemu-aarch64-static ] \
	    && PATH="$$PATH:/usr/sbin" command -v debootstrap >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	        podman runc buildah debootstrap qemu-user-static binfmt-support; \
	else echo "podman is not installed: run 'sudo make image-tools' (apt-get install podman runc buildah debootstrap)"; fi
	@if [ "$$(id -u)" = 0 ] && [ ! -e $(BINFMT)/qemu-aarch64 ] && command -v update-binfmts >/dev/null; then \
	    mountpoint -q $(BINFMT) || mount -t binfmt_misc binfmt_misc $(BINFMT); \
	    update-binfmts --enable qemu-aarch64; \
	fi

# The base images the job image builds on, for both architectures, made once before the tests (where no registry
# answers, a Debian stand-in: about 2 minutes for amd64, 7 for arm64 under emulation); skipped without podman.
image-bases: image-tools
	@if command -v podman >/dev/null && PATH="$$PATH:/usr/sbin" command -v debootstrap >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	    if [ -e $(BINFMT)/qemu-aarch64 ]; then \
	        PATH="$$PATH:/usr/sbin" bash container/offline-base.sh 3.11 bookworm arm64; fi \
	    && PATH="$$PATH:/usr/sbin" bash container/offline-base.sh 3.11 bookworm amd64; \
	fi

# The job image exactly as `cdk deploy` builds it: the synthesized assembly's own image asset (directory, Dockerfile,
# build args and contexts, platform), with Docker or podman. `-c key=value` context goes through CDK_CONTEXT.
image: synth image-tools
	PATH="$$PATH:/usr/sbin" $(BIN)/python container/build_image.py --assembly cdk.out --tag $(IMAGE_TAG)

test: $(VENV)/.dev-installed node_modules/.package-lock.json slurm-install image-bases lint typecheck
	PATH="$(CURDIR)/$(BIN):$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/pytest

synth: $(VENV)/.dev-installed node_modules/.package-lock.json
	PATH="$(CURDIR)/$(BIN):$$PATH" npx cdk synth -q $(CDK_CONTEXT)

# At most 10 minutes on 2 cores; docs/benchmarks.md and its chart are generated from the run's JSON.
bench: $(VENV)/.dev-installed
	nice -n 10 $(BIN)/python -m bench.run --json bench/results/full.json
	$(BIN)/python -m bench.report bench/results/full.json

bench-quick: $(VENV)/.dev-installed
	nice -n 10 $(BIN)/python -m bench.run --quick --json bench/results/quick.json

# The wheel clients (and custom job images) install; the package is not on PyPI.
dist: $(BIN)/python
	rm -rf dist
	$(PIP) wheel -q --no-deps --wheel-dir dist .

clean:
	rm -rf $(VENV) node_modules cdk.out dist .mypy_cache .pytest_cache .ruff_cache
