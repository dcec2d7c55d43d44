"""Reading (input, target) pairs back from WebDataset shards."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
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


def _pairs_as_arrays(sample: tuple) -> tuple[np.ndarray, np.ndarray]:
    return np.array(sample[0]), np.array(sample[1])


def _collate(pairs: list) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.from_numpy(np.stack([p[0] for p in pairs]))
    targets = torch.from_numpy(np.stack([p[1] for p in pairs]))
    return inputs, targets


def train_batches(
    urls: Sequence[str],
    batch_size: int,
    seed: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    order: str = "resampled",
    shuffle_buffer: int = 256,
    loader_workers: int = 1,
    steps: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """An endless stream of (inputs, targets) uint8 N x H x W x C batches for one worker.

    ``resampled`` (training): every rank and loader worker draws shards with replacement from
    its own seeded stream, so every rank takes the same number of steps and DDP never waits on
    an uneven shard split. ``sequential`` (exactness checks): one fixed global order of samples,
    cut into global batches of ``batch_size * world_size`` of which each rank takes its slice, so
    N workers see exactly the data one worker would with the whole batch.
    """
    if order == "sequential":
        return _sequential_batches(list(urls), batch_size, rank, world_size)
    if order != "resampled":
        raise ValueError(f"unknown data order {order!r}: use 'resampled' or 'sequential'")
    pipeline = wds.DataPipeline(
        # deterministic=True seeds each rank's and loader worker's stream from (rank, worker, seed).
        wds.ResampledShards(list(urls), seed=seed, deterministic=True),
        wds.tarfile_to_samples(),
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 64), seed=seed),
        wds.decode("rgb8"),
        wds.to_tuple("input.png", "target.png"),
        wds.map(_pairs_as_arrays),
        wds.batched(batch_size, collation_fn=_collate, partial=False),
    )
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=loader_workers, persistent_workers=loader_workers > 0)
    if steps is not None:
        loader = loader.with_epoch(steps)
    return iter(loader)


def _sequential_batches(urls: list[str], batch_size: int, rank: int, world_size: int):
    dataset = wds.DataPipeline(
        wds.SimpleShardList(urls), wds.tarfile_to_samples(), wds.decode("rgb8"),
        wds.to_tuple("input.png", "target.png"), wds.map(_pairs_as_arrays),
    )
    while True:  # cycle over the data in a fixed order
        pending = []
        for pair in dataset:
            pending.append(pair)
            if len(pending) == batch_size * world_size:
                yield _collate(pending[rank * batch_size : (rank + 1) * batch_size])
                pending = []
