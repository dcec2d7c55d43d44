"""Making one image's samples: the work shard sends to its engine's workers.

Kept free of Prefect and the rest of the orchestration so that Ray's workers start fast (they
import this module, not the flow's). Train samples are encoded as ``ImageJob.encoding`` says:
``raw`` (``.npy`` uint8 H x W x 3 arrays, read back with a memcpy) or ``png`` (lossless, about
a third smaller, a decode per read); val samples, whole images read once per evaluation, are PNG.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from training.degradations import Degradation
from training.images import decode_png, encode_npy, encode_png
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
    encoding: str = "png"  # train samples: "raw" or "png"


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
        ext, encode = ("npy", encode_npy) if job.split == "train" and job.encoding == "raw" else ("png", encode_png)
        samples.append(
            {
                "__key__": key.encode(),
                f"input.{ext}": encode(pair.input),
                f"target.{ext}": encode(pair.target),
                "meta.json": json.dumps(meta, sort_keys=True).encode(),
            }
        )
    return samples
