# The two set-up commands of the README: `make run` and `make test`.
# Both create .venv/ on first use and install the pinned set (constraints.txt locks every package).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export PATH := $(abspath $(BIN)):$(PATH)
export NO_ALBUMENTATIONS_UPDATE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_AUTH_MODE := disabled

.PHONY: install system run test test-unit stack bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Debian's packages that the tests drive: Chromium (the MLflow UI tests, through Playwright) and
# PostgreSQL (the native production stack). Installed once with apt; nothing else is downloaded.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_NEEDS = $(shell command -v chromium >/dev/null || echo chromium) \
            $(shell ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || echo postgresql)
system:                 ## Debian's chromium and postgresql for the tests (apt, only what is missing)
	@[ -z "$(strip $(APT_NEEDS))" ] || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_NEEDS) >/dev/null; }

run: install            ## dvc repro on the defaults in params.yaml (one Prefect server for all stages)
	$(BIN)/percept repro

# Two workers: the tests that mostly wait on servers, schedulers and clusters run beside the ones
# that compute (tests/workers.py keeps each file, and files sharing a costly set-up, on one worker).
TEST_WORKERS ?= 2

test: install system    ## the whole suite: unit, integration, end to end, browser, the native stack
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

test-unit: install
	$(BIN)/python -m pytest -m unit -n $(TEST_WORKERS)

stack: install system   ## infra/compose's services as processes on 127.0.0.1, until Ctrl-C (PERCEPT_PROFILE=stack uses them)
	$(BIN)/python -m pipelines.services.stack up

bench: install          ## data, scale, training, allocator and inference benchmarks (figures in docs/benchmarks.md)
	$(BIN)/python benchmarks/data.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/infer.py

clean:                  ## generated data only (the DVC cache keeps what was built)
	rm -rf data
