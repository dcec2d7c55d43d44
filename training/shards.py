"""Reading (input, target) pairs back from WebDataset shards."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds


def shard_urls(folder: str | Path, split: str) -> list[str]:
    """The shard files of one split, in order, as listed by the folder's index.json."""
    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    return [str(folder / s["name"]) for s in index["shards"] if s["split"] == split]


def _to_pair(sample: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": sample["__key__"],
        "input": np.array(sample["input.png"]),  # decode("rgb8") gives read-only arrays
        "target": np.array(sample["target.png"]),
        "meta": sample["meta.json"],
    }


def pair_dataset(urls: Sequence[str], shuffle: int = 0, seed: int = 0) -> wds.WebDataset:
    """Pairs as HxWxC uint8 arrays, each sample seen once per pass.

    Shards are split across DataLoader workers (``split_by_worker``); ``shuffle`` > 0 adds a
    seeded shard shuffle and a sample buffer of that size. Training under DDP uses its own
    resampled pipeline (issue 4); this one is for validation, tests and benchmarks.
    """
    dataset = wds.WebDataset(
        list(urls),
        shardshuffle=len(urls) if shuffle else False,
        seed=seed,
        nodesplitter=None,
        workersplitter=wds.split_by_worker,
        empty_check=False,  # more DataLoader workers than shards: the extra ones yield nothing
    )
    if shuffle:
        dataset = dataset.shuffle(shuffle, seed=seed)
    return dataset.decode("rgb8").map(_to_pair)
