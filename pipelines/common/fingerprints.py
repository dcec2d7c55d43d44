"""Fingerprints: the digests that say two trainings, recipes or evaluations are the same thing.

- ``run_name``: a training's name; same recipe, shards and training code -> same name, so a
  rerun resumes the run instead of starting over (pipelines/stages/train.py).
- ``params_hash``: the recipe a registered version was trained with (a registry tag).
- ``evaluation_sha256``: what a report scored besides the weights; promote reuses a report whose
  weights and evaluation digests both match.
- ``code_digest``: the training code, file by file.
- ``search_name``: a recipe search's name; same search, recipe, data and code -> same name, so a
  rerun of ``percept tune`` resumes the search instead of starting over (pipelines/search/).

Each is the SHA-256 of sorted JSON, so adding a key changes it and key order never does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipelines.common.fsutil import sha256_file
from pipelines.common.schema import Config
from training.images import list_images

# The compute package, shipped with every registered model (its pyfunc imports it).
TRAINING_CODE = Path(__file__).resolve().parents[2] / "training"


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def recipe(task: str, cfg: Config) -> dict[str, Any]:
    """The settings that shape a task's model: its params block, the seed, the feature network."""
    return {"task": cfg.task(task).model_dump(mode="json"), "seed": cfg.seed,
            "feature_net": cfg.feature_net.model_dump(mode="json")}


def params_hash(task: str, cfg: Config) -> str:
    return digest(recipe(task, cfg))


def code_digest() -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(TRAINING_CODE.glob("*.py"))}


def run_name(task: str, cfg: Config, index_path: Path) -> str:
    """Same task, settings and shards -> same name -> a rerun resumes instead of starting over."""
    run = {**recipe(task, cfg), "workers": cfg.train.workers, "data_order": cfg.train.data_order,
           "shards": sha256_file(index_path),
           "code": code_digest()}  # changed training code must not resume a run that older code finished
    return f"{task}-{digest(run)[:12]}"


def evaluation_sha256(task: str, cfg: Config, folder: Path) -> str:
    """Everything besides the weights that shapes a report on ``folder``: its images, the task's
    block (degradation, metrics), the seed (noisy inputs), the evaluation and feature settings."""
    images = {p.relative_to(folder).as_posix(): sha256_file(p) for p in list_images(folder)}
    return digest({**recipe(task, cfg), "images": images, "evaluate": cfg.evaluate.model_dump(mode="json")})


def search_name(task: str, cfg: Config, manifest: Path) -> str:
    """Same search, recipe, tuning data and training code -> same name -> ``percept tune`` resumes."""
    search = {**recipe(task, cfg), "tune": cfg.tune[task].model_dump(mode="json"), "train": cfg.train.model_dump(mode="json", include={"workers", "data_order", "bf16", "channels_last"}),
              "shard": cfg.shard.model_dump(mode="json"), "evaluate": cfg.evaluate.model_dump(mode="json"),
              "manifest": sha256_file(manifest), "code": code_digest()}
    return f"tune-{task}-{digest(search)[:12]}"
