"""A search's data: the tuning split carved by seed from the manifest's training images, and
shards of the rest, one set per value of the searched settings the shards are cut with.

Layout under ``data/tune/<task>/``: ``manifest.csv`` (the rest as ``train``, the tuning split as
``val``), ``images/`` (the tuning split's clean images: what trials are scored on, as evaluate
scores a folder) and ``shards/<variant>/`` (the shard stage's flow run on that manifest). The
test sets (``evaluate.sets``, the manifest's ``val`` rows) are never in any of it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.common.fingerprints import digest
from pipelines.common.fsutil import atomic_write_text, sha256_file, staging_dir
from pipelines.common.paths import Paths
from pipelines.common.schema import Config
from pipelines.common.search_schema import TuneSearch
from pipelines.data.manifest import MANIFEST_FIELDS, ManifestRow, csv_text, read_manifest
from training.pairs import sample_seed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchPaths(Paths):
    """``Paths`` whose manifest and shards are a search's own (the shard flow runs on them unchanged);
    the images the manifest names stay where ingest put them."""

    task: str = ""
    variant: str = ""

    @property
    def folder(self) -> Path:
        return self.tune(self.task)

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.csv"

    @property
    def split_images(self) -> Path:
        return self.folder / "images"

    def shards(self, task: str) -> Path:
        return self.folder / "shards" / self.variant


def carve(rows: list[ManifestRow], task: str, seed: int, count: int) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """(training rows kept, tuning rows): ``count`` of the manifest's train images drawn by seed.
    The manifest's val rows (the test sets) are in neither."""
    train = sorted((r for r in rows if r.split == "train"), key=lambda r: r.id)
    if len(train) < count + 1:
        raise ValueError(f"the manifest has {len(train)} training images: too few to hold out {count} for tuning "
                         "and train on the rest (lower tune.<task>.tuning_images)")
    chosen = set(np.random.default_rng(sample_seed(seed, task, "tuning-split")).choice(len(train), count, replace=False))
    return ([r for i, r in enumerate(train) if i not in chosen], [r for i, r in enumerate(train) if i in chosen])


def variants(search: TuneSearch) -> list[dict[str, Any]]:
    """Every combination of the searched shard settings' choices ([{}] when none is searched)."""
    space = search.shard_space()
    return [dict(zip(space, values)) for values in itertools.product(*(d.choices for d in space.values()))]


def variant_key(settings: dict[str, Any]) -> str:
    return "default" if not settings else digest(settings)[:12]


def prepare(task: str, cfg: Config, search: TuneSearch, paths: Paths = Paths()) -> dict[str, Path]:
    """Write the tuning split and the shards each variant needs; returns variant key -> shards
    folder. Idempotent: a variant whose index names this manifest is not built again."""
    from pipelines.stages.shard import shard_flow

    if not paths.manifest.is_file():
        raise FileNotFoundError(f"{paths.manifest} not found: run `percept ingest` (or `dvc repro ingest`) first")
    kept, held = carve(read_manifest(paths.manifest), task, cfg.seed, search.tuning_images)
    base = SearchPaths(paths.root, task)
    rows = kept + [dataclasses.replace(r, split="val") for r in held]
    text = csv_text(MANIFEST_FIELDS, rows)
    if not base.manifest.is_file() or base.manifest.read_text() != text:
        with staging_dir(base.split_images) as folder:  # the images first: the manifest says they are there
            for r in held:
                shutil.copy2(paths.manifest_dir / r.path, folder / f"{r.id}{Path(r.path).suffix}")
        atomic_write_text(base.manifest, text)
    log.info("tuning split of %s: %d of %d training images held out (%s)", task, len(held), len(kept) + len(held),
             base.split_images)
    manifest_sha = sha256_file(base.manifest)
    out = {}
    for settings in variants(search):
        where = SearchPaths(paths.root, task, variant_key(settings))
        index = where.shards(task) / "index.json"
        variant_cfg = cfg.with_task_settings(task, settings)
        if not (index.is_file() and _index_matches(json.loads(index.read_text()), variant_cfg, task, manifest_sha)):
            shard_flow(task, variant_cfg, where)
        out[where.variant] = where.shards(task).resolve()
    return out


def _index_matches(index: dict[str, Any], cfg: Config, task: str, manifest_sha: str) -> bool:
    block, built = cfg.task(task), index.get("params", {})
    return (index.get("manifest_sha256") == manifest_sha and index.get("seed") == cfg.seed
            and index.get("encoding", {}).get("train") == cfg.shard.encoding
            and all(built.get(k) == block.model_dump(mode="json").get(k) for k in ("degradation", "patch_size", "patches_per_image")))
