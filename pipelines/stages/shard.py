"""The ``shard`` flow: manifest -> WebDataset tar shards of (input, target) pairs for one task.

Layout: ``data/shards/<task>/train-000000.tar ...``, ``val-000000.tar ...`` and ``index.json``.
Each sample holds ``input.<ext>``, ``target.<ext>`` and ``meta.json``: train samples are random
patches, as raw ``.npy`` arrays or PNG (``shard.encoding``); val samples are whole images
mod-cropped to the task's scale, as PNG.

Samples are made on the data engine (Ray tasks by default, pipelines/services/engine.py: the degradations
are CPU-bound) and come back in a fixed order to this process, which writes them, so the same
seed gives byte-identical shards wherever they were made. A shard is written under a temporary
name and renamed only when complete; the task folder is swapped in whole at the end.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from pipelines.common.fsutil import atomic_write_text, sha256_file, staging_dir
from pipelines.common.paths import Paths
from pipelines.common.schema import Config
from pipelines.data.manifest import ManifestRow, read_manifest
from pipelines.data.samples import ImageJob, make_samples
from pipelines.services.engine import OrderedMap, data_engine
from training.pairs import sample_seed
from training.shards import ShardWriter

log = logging.getLogger(__name__)
INDEX_VERSION = 1


def image_jobs(task_name: str, cfg: Config, rows: list[ManifestRow], manifest_dir: Path, split: str) -> list[ImageJob]:
    params = cfg.task(task_name)
    chosen = [r for r in rows if r.split == split]
    if split == "train":
        # A seeded permutation, so each shard mixes images from every source.
        order = np.random.default_rng(sample_seed(cfg.seed, task_name, "order")).permutation(len(chosen))
        chosen = [chosen[i] for i in order]
    patches = params.patches_per_image if split == "train" else 1
    return [
        ImageJob(task_name, split, r.id, str((manifest_dir / r.path).resolve()), params.degradation, params.patch_size,
                 patches, cfg.seed, r.source_channels, cfg.shard.encoding)
        for r in chosen
    ]


@task(name="write-shards", cache_policy=NO_CACHE)
def write_split(jobs: list[ImageJob], folder: Path, split: str, cfg: Config, mapper: OrderedMap) -> list[dict[str, Any]]:
    writer = ShardWriter(folder, split, cfg.shard.max_samples, cfg.shard.max_bytes)
    with tqdm(total=sum(j.patches for j in jobs), desc=f"shard {jobs[0].task} {split}", unit="sample") as bar:
        for samples in mapper(make_samples, jobs):
            for sample in samples:
                writer.write(sample)
            bar.update(len(samples))
    return writer.close()


def index_for(task_name: str, cfg: Config, shards: list[dict[str, Any]], manifest: Path) -> dict[str, Any]:
    params = cfg.task(task_name)
    return {
        "version": INDEX_VERSION,
        "task": task_name,
        "seed": cfg.seed,
        "scale": params.degradation.input_scale,
        "params": params.model_dump(mode="json"),
        "shard_limits": {"max_samples": cfg.shard.max_samples, "max_bytes": cfg.shard.max_bytes},
        "encoding": {"train": cfg.shard.encoding, "val": "png"},
        "manifest_sha256": sha256_file(manifest),
        "splits": {s: sum(x["samples"] for x in shards if x["split"] == s) for s in ("train", "val")},
        "shards": shards,
    }


@flow(name="shard", log_prints=True)
def shard_flow(task_name: str, cfg: Config, paths: Paths = Paths()) -> dict[str, Any]:
    """Build every shard of one task from the manifest; returns the index."""
    cfg.task(task_name)  # fails early on an unknown or unconfigured task
    if not paths.manifest.is_file():
        raise FileNotFoundError(f"{paths.manifest} not found: run `percept ingest` (or `dvc repro ingest`) first")
    rows = read_manifest(paths.manifest)
    jobs = {split: image_jobs(task_name, cfg, rows, paths.manifest_dir, split) for split in ("train", "val")}
    for split, todo in jobs.items():
        if not todo:
            if not any(s.split == split for s in cfg.ingest.sources):
                raise ValueError(f"the manifest has no {split} images: add a {split} source under ingest.sources")
            rejected = paths.rejects if paths.rejects.is_file() else "rejects.csv"
            raise ValueError(f"the manifest has no {split} images: every one was rejected or the sources changed "
                             f"since the last ingest; see {rejected} and run `percept ingest` again")
    with staging_dir(paths.shards(task_name)) as tmp, data_engine(cfg) as mapper:
        shards = []
        for split, todo in jobs.items():
            shards += write_split(todo, tmp, split, cfg, mapper)
        index = index_for(task_name, cfg, shards, paths.manifest)
        atomic_write_text(tmp / "index.json", json.dumps(index, indent=2, sort_keys=True) + "\n")
    table = [{"split": s["split"], "shard": s["name"], "samples": s["samples"], "MB": round(s["bytes"] / 1e6, 2)} for s in shards]
    create_table_artifact(key=f"shards-{task_name.replace('_', '-')}", table=table, description=f"Shards of {task_name}")
    print(f"shard {task_name}: {index['splits']['train']} train / {index['splits']['val']} val samples "
          f"in {len(shards)} shards -> {paths.shards(task_name)}")
    return index

