"""Where every stage reads and writes, relative to the project root (DVC runs stages there)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATASETS_ENV = "PERCEPT_DATASETS"
WEIGHTS_ENV = "PERCEPT_WEIGHTS"


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def raw(self) -> Path:
        return self.data / "raw"

    @property
    def manifest_dir(self) -> Path:
        return self.data / "manifest"

    @property
    def manifest(self) -> Path:
        return self.manifest_dir / "manifest.csv"

    @property
    def rejects(self) -> Path:
        return self.manifest_dir / "rejects.csv"

    @property
    def images(self) -> Path:
        """Accepted images, decoded, oriented and stored as RGB PNG: what the shard stage reads."""
        return self.manifest_dir / "images"

    @property
    def weights(self) -> Path:
        return self.data / "weights"

    def shards(self, task: str) -> Path:
        return self.data / "shards" / task

    def tune(self, task: str) -> Path:
        """A recipe search's data: its tuning split, manifest and shards (pipelines/search/split.py)."""
        return self.data / "tune" / task

    def datasets(self) -> Path:
        """The folder of default collections: $PERCEPT_DATASETS, else ../shared/datasets."""
        env = os.environ.get(DATASETS_ENV)
        return Path(env) if env else (self.root.resolve().parent / "shared" / "datasets")

    def weights_source(self) -> Path:
        """The folder of pretrained weights: $PERCEPT_WEIGHTS, else ../shared/weights."""
        env = os.environ.get(WEIGHTS_ENV)
        return Path(env) if env else (self.root.resolve().parent / "shared" / "weights")

    def models(self, task: str) -> Path:
        """A trained model: weights, config, loss curves and the MLflow run id (a DVC out)."""
        return self.root / "models" / task

    def train_plot(self, task: str) -> Path:
        """Loss curves as TSV (step, loss parts, lr, samples/s) for `dvc plots`."""
        return self.root / "plots" / "train" / f"{task}.tsv"

    def metrics(self, task: str) -> Path:
        """The evaluate stage's DVC metric: the gate's metric per image set, against the baseline."""
        return self.root / "metrics" / f"{task}.json"

    def report_summary(self, task: str) -> Path:
        """Every figure of every set and level the evaluate stage scored, without per-image rows."""
        return self.reports(task) / "summary.json"

    def reports(self, task: str) -> Path:
        """Full evaluation reports: per-image figures and a comparison sheet per image set."""
        return self.root / "reports" / task

    def registration(self, task: str) -> Path:
        """The register stage's record: the MLflow model name, version and tags."""
        return self.root / "registry" / f"{task}.json"

    def promotion(self, task: str) -> Path:
        """The promote stage's decision and the figures behind it."""
        return self.root / "registry" / f"{task}.promotion.json"
