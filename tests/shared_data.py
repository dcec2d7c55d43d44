"""Where the tests find the shared datasets and weights: as the project does (pipelines.common.paths),
``$PERCEPT_DATASETS`` / ``$PERCEPT_WEIGHTS``, else ``../shared/`` beside this checkout. Read only."""

from pathlib import Path

from pipelines.common.paths import Paths

PROJECT = Path(__file__).resolve().parents[1]
DATASETS = Paths(PROJECT).datasets()
WEIGHTS = Paths(PROJECT).weights_source()
