"""Making one image's samples: the work a shard pool process does.

Kept free of Prefect and the rest of the orchestration so that spawned pool workers start fast
(they import this module, not the flow's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from training.images import decode_png, encode_png
from training.degradations import Degradation
from training.pairs import sample_seed, train_pair, val_pair

Sample = dict[str, bytes]  # tar member suffix -> bytes, plus "__key__"


@dataclass(frozen=True)
class ImageJob:
    """All samples one image contributes: decoded once, then cut and degraded."""

    task: str
    split: str
    image_id: str
    path: str
    degradation: Degradation
    patch_size: int
    patches: int
    seed: int
    source_channels: int = 3


def make_samples(job: ImageJob) -> list[Sample]:
    image = decode_png(Path(job.path).read_bytes())
    samples = []
    for k in range(job.patches):
        seed = sample_seed(job.seed, job.task, job.split, job.image_id, k)
        if job.split == "train":
            pair, key = train_pair(image, job.degradation, job.patch_size, seed), f"{job.image_id}-p{k:03d}"
        else:
            pair, key = val_pair(image, job.degradation, seed), job.image_id
        meta = {"source_id": job.image_id, "source_channels": job.source_channels, "task": job.task, "split": job.split, **pair.meta}
        samples.append(
            {
                "__key__": key.encode(),
                "input.png": encode_png(pair.input),
                "target.png": encode_png(pair.target),
                "meta.json": json.dumps(meta, sort_keys=True).encode(),
            }
        )
    return samples
