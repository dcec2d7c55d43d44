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

.PHONY: install run test test-unit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install            ## dvc repro on the defaults in params.yaml (one Prefect server for all stages)
	$(BIN)/percept repro

test: install           ## the whole suite: unit, integration, end to end
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m unit

bench: install          ## data, training, allocator and inference benchmarks (figures in the README)
	$(BIN)/python benchmarks/data.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/memory.py
	$(BIN)/python benchmarks/infer.py

clean:                  ## generated data only (the DVC cache keeps what was built)
	rm -rf data
