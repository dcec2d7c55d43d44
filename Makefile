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

.PHONY: install browser run test test-unit stack bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Debian's Chromium, which the browser tests drive through Playwright (nothing else is downloaded).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:                ## Debian's chromium for the MLflow UI tests (apt, once)
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

run: install            ## dvc repro on the defaults in params.yaml (one Prefect server for all stages)
	$(BIN)/percept repro

test: install browser   ## the whole suite: unit, integration, end to end, the browser tests
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m unit

stack: install          ## infra/compose's services as processes on 127.0.0.1, until Ctrl-C (PERCEPT_PROFILE=stack uses them)
	$(BIN)/python -m pipelines.stack up

bench: install          ## data, training, allocator and inference benchmarks (figures in the README)
	$(BIN)/python benchmarks/data.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/infer.py

clean:                  ## generated data only (the DVC cache keeps what was built)
	rm -rf data
