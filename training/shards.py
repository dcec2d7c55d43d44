"""WebDataset shards of (input, target) pairs: writing them (``ShardWriter``) and reading them back.

Train samples are ``.npy`` uint8 arrays (``shard.encoding: raw``) or PNG; val samples PNG. The
train stream reads them without webdataset's per-member machinery, which costs more than the
data at these sizes (measured, benchmarks/data.py): a local shard is read whole and cut at its
512-byte tar headers (``tar_samples``), and a ``.npy`` member becomes an array from its cached
header (``decode_npy``) instead of ``np.load``'s parse of it. Anything else (a remote URL, a
pax header) goes through webdataset's own reader, so every valid shard still reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image

TAR_BLOCK = 512
_REGULAR, _GNU_LONGNAME, _DIRECTORY = (b"0", b"\0"), b"L", b"5"


def shard_urls(folder: str | Path, split: str) -> list[str]:
    """The shard files of one split, in order, as listed by the folder's index.json."""
    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    return [str(folder / s["name"]) for s in index["shards"] if s["split"] == split]


class ShardWriter:
    """Sequential tar shards bounded by sample count and bytes, each renamed into place when whole.

    Members carry fixed metadata (mtime 0, uid 0, mode 0444) so identical samples give identical bytes.
    """

    def __init__(self, folder: Path, prefix: str, max_samples: int, max_bytes: int):
        self.folder, self.prefix = folder, prefix
        self.max_samples, self.max_bytes = max_samples, max_bytes
        self.shards: list[dict[str, Any]] = []
        self._tar: tarfile.TarFile | None = None
        self._count = self._bytes = 0

    def write(self, sample: dict[str, bytes]) -> None:
        size = sum(len(v) + 512 for k, v in sample.items() if k != "__key__")
        if self._tar is not None and (self._count >= self.max_samples or self._bytes + size > self.max_bytes):
            self._finish()
        if self._tar is None:
            self._open()
        key = sample["__key__"].decode()
        for suffix, data in sample.items():
            if suffix == "__key__":
                continue
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self._bytes += size

    def close(self) -> list[dict[str, Any]]:
        if self._tar is not None:
            self._finish()
        return self.shards

    def _name(self) -> str:
        return f"{self.prefix}-{len(self.shards):06d}.tar"

    def _open(self) -> None:
        self._tmp = self.folder / f".{self._name()}.tmp"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.GNU_FORMAT)
        self._count = self._bytes = 0

    def _finish(self) -> None:
        assert self._tar is not None
        self._tar.close()
        final = self.folder / self._name()
        os.replace(self._tmp, final)
        self.shards.append(
            {"name": final.name, "split": self.prefix, "samples": self._count,
             "bytes": final.stat().st_size, "sha256": _sha256(final)}
        )
        self._tar = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Fallback(Exception):
    """A tar this reader does not cut itself (an extension header): webdataset reads it."""


def _cut_tar(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of each regular file of an uncompressed tar held in memory."""
    view, offset, long_name = memoryview(data), 0, None
    while offset + TAR_BLOCK <= len(data):
        header = data[offset : offset + TAR_BLOCK]
        if header.count(0) == TAR_BLOCK:
            return  # the end-of-archive blocks
        size = int(header[124:136].rstrip(b"\0 ").lstrip(b" ") or b"0", 8)
        kind, start = header[156:157], offset + TAR_BLOCK
        offset = start + -(-size // TAR_BLOCK) * TAR_BLOCK
        if kind == _GNU_LONGNAME:
            long_name = bytes(view[start : start + size]).rstrip(b"\0").decode()
        elif kind in _REGULAR:
            name = long_name or header[:100].rstrip(b"\0").decode()
            if header[257:262] == b"ustar" and header[345]:  # a ustar prefix field: prefix/name
                name = header[345:500].rstrip(b"\0").decode() + "/" + name
            long_name = None
            yield name, bytes(view[start : start + size])  # a copy: no sample pins its whole shard
        elif kind != _DIRECTORY:
            raise _Fallback(kind)


def tar_samples(sources: Iterable[dict[str, Any] | str]) -> Iterator[dict[str, Any]]:
    """WebDataset samples (``__key__``, ``__url__`` and one entry per member suffix) from shard
    URLs or ``{"url": ...}`` dicts, as ``wds.tarfile_to_samples()`` gives them."""
    for source in sources:
        url = source["url"] if isinstance(source, dict) else source
        if not os.path.isfile(url):
            yield from wds.tarfile_to_samples()([{"url": url}])
            continue
        with open(url, "rb") as fh:
            data = fh.read()
        try:
            members = list(_cut_tar(data))
        except _Fallback:
            yield from wds.tarfile_to_samples()([{"url": url}])
            continue
        del data
        sample: dict[str, Any] = {}
        for name, payload in members:
            slash = name.rfind("/")
            dot = name.find(".", slash + 1)
            key, suffix = (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])
            if sample and key != sample["__key__"]:
                yield sample
                sample = {}
            if not sample:
                sample = {"__key__": key, "__url__": url}
            sample[suffix] = payload
        if sample:
            yield sample


@lru_cache(maxsize=64)
def _npy_header(header: bytes) -> tuple[np.dtype, tuple[int, ...]]:
    """dtype and shape of a ``.npy`` header; the few distinct headers of a stream are parsed once."""
    fh = io.BytesIO(header)
    major, _ = np.lib.format.read_magic(fh)
    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(fh)
    if fortran or dtype.hasobject:
        raise ValueError("only C-ordered plain .npy arrays are read")
    return dtype, shape


def decode_npy(data: bytes) -> np.ndarray:
    """A ``.npy`` member as a writable array (as ``np.load`` gives it), without re-parsing its header."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy array")
    length = 10 + int.from_bytes(data[8:10], "little") if data[6] == 1 else 12 + int.from_bytes(data[8:12], "little")
    dtype, shape = _npy_header(bytes(data[:length]))
    return np.frombuffer(bytearray(data[length:]), dtype=dtype).reshape(shape)


def decode_member(data: bytes, suffix: str) -> np.ndarray:
    """An ``.npy`` or ``.png`` member as an H x W x 3 uint8 array (gray PNGs as three channels; a
    conditioned input's level channel, saved as a PNG's alpha, as a fourth)."""
    if suffix.endswith("npy"):
        return decode_npy(data)
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img if img.mode in ("RGB", "RGBA") else img.convert("RGB"))


def decode_pair(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) of a sample, whichever encoding it was written in."""
    pair = []
    for part in ("input", "target"):
        suffix = f"{part}.npy" if f"{part}.npy" in sample else f"{part}.png"
        pair.append(decode_member(sample[suffix], suffix))
    return pair[0], pair[1]


def _to_pair(sample: dict[str, Any]) -> dict[str, Any]:
    inputs, target = decode_pair(sample)
    return {"key": sample["__key__"], "input": inputs, "target": target, "meta": json.loads(sample["meta.json"])}


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
    return dataset.map(_to_pair)


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
    pin_memory: bool = False,
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
        tar_samples,
        wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 64), seed=seed),
        wds.map(decode_pair),
        wds.batched(batch_size, collation_fn=_collate, partial=False),
    )
    # Batches are made in the loader workers and cross to this process through shared memory;
    # pin_memory (for a GPU) page-locks them so the copy to the device can run asynchronously.
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=loader_workers, persistent_workers=loader_workers > 0,
                           pin_memory=pin_memory)
    if steps is not None:
        loader = loader.with_epoch(steps)
    return iter(loader)


def _sequential_batches(urls: list[str], batch_size: int, rank: int, world_size: int):
    dataset = wds.DataPipeline(wds.SimpleShardList(urls), tar_samples, wds.map(decode_pair))
    while True:  # cycle over the data in a fixed order
        pending = []
        for pair in dataset:
            pending.append(pair)
            if len(pending) == batch_size * world_size:
                yield _collate(pending[rank * batch_size : (rank + 1) * batch_size])
                pending = []
