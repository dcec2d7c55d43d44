"""Shards read back with webdataset + a 2-worker DataLoader: pairs, sizes, coverage, determinism."""

import json
import tarfile
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.common.params import parse_config
from pipelines.common.fsutil import sha256_file
from pipelines.stages.ingest import ingest_flow
from pipelines.common.paths import Paths
from pipelines.stages.shard import shard_flow
from training.imresize import imresize_uint8
from training.shards import pair_dataset, shard_urls
from tests.shared_data import DATASETS

pytestmark = pytest.mark.integration
TRAIN = ["t1", "t2", "t3", "t5", "t6", "tt1"]
VAL = ["baby", "bird", "butterfly", "head", "woman"]


def make_cfg(root: Path, seed: int = 7, encoding: str = "raw") -> object:
    return parse_config({
        "seed": seed,
        "acquire": {"collections": [{"name": "x", "dataset": "x"}]},
        "ingest": {"sources": [{"uri": str(root / "raw" / "train"), "split": "train"},
                               {"uri": str(root / "raw" / "val"), "split": "val"}]},
        "shard": {"max_samples": 4, "max_bytes": 2_000_000, "encoding": encoding},
        "data": {"engine": "local"},  # Ray's own byte-for-byte check: test_data_engine.py
        "tasks": {
            "sr_x4": {"patch_size": 48, "patches_per_image": 3, "degradation": {"scale": 4}},
            "denoise": {"patch_size": 48, "patches_per_image": 2, "degradation": {"sigma": 25.0}},
        },
    })


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, prefect_harness):
    root = tmp_path_factory.mktemp("shard")
    for split, names, folder in (("train", TRAIN, "T91"), ("val", VAL, "Set5")):
        (root / "raw" / split).mkdir(parents=True)
        for n in names:
            shutil.copyfile(DATASETS / folder / "HR" / f"{n}.png", root / "raw" / split / f"{n}.png")
    ingest_flow(make_cfg(root), Paths(root))
    return root


def read_all(urls, workers=2):
    loader = torch.utils.data.DataLoader(pair_dataset(urls), batch_size=None, num_workers=workers)
    # The DataLoader turns arrays into tensors; back to numpy for exact comparisons.
    return [{k: v.numpy() if torch.is_tensor(v) else v for k, v in s.items()} for s in loader]


def test_sr_pairs_read_back_exactly(ingested):
    paths = Paths(ingested)
    index = shard_flow("sr_x4", make_cfg(ingested), paths)
    folder = paths.shards("sr_x4")
    assert sorted(p.name for p in folder.iterdir()) == sorted([s["name"] for s in index["shards"]] + ["index.json"])
    assert json.loads((folder / "index.json").read_text()) == index
    for s in index["shards"]:
        assert sha256_file(folder / s["name"]) == s["sha256"] and s["samples"] <= 4

    train = read_all(shard_urls(folder, "train"))
    assert len(train) == len(TRAIN) * 3 == index["splits"]["train"]
    assert len({s["key"] for s in train}) == len(train)
    for s in train:
        assert s["target"].shape == (48, 48, 3) and s["input"].shape == (12, 12, 3)
        # The input is exactly the MATLAB-bicubic downscale of the target, rounded to 8 bits.
        assert np.array_equal(s["input"], imresize_uint8(s["target"], output_shape=(12, 12)))
        assert s["meta"]["task"] == "sr_x4" and s["meta"]["degradation"]["scale"] == 4

    val = read_all(shard_urls(folder, "val"))
    assert len(shard_urls(folder, "val")) == 2  # 5 images, 4 per shard: both workers get one
    # Every val sample once per epoch, whole images mod-cropped to the scale.
    assert sorted(s["key"] for s in val) == sorted(f"val_{n}" for n in VAL)
    sizes = {s["key"]: s["target"].shape for s in val}
    assert sizes["val_woman"] == (344, 228, 3) and sizes["val_baby"] == (512, 512, 3)
    for s in val:
        h, w = s["target"].shape[:2]
        assert h % 4 == 0 and w % 4 == 0 and s["input"].shape == (h // 4, w // 4, 3)


def test_same_seed_same_bytes_other_seed_other_bytes(ingested, tmp_path):
    paths = Paths(ingested)
    first = shard_flow("sr_x4", make_cfg(ingested), paths)
    again = shard_flow("sr_x4", make_cfg(ingested), paths)  # a rerun gives the same bytes
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in first["shards"]]
    other = shard_flow("sr_x4", make_cfg(ingested, seed=8), paths)
    assert [s["sha256"] for s in other["shards"] if s["split"] == "train"] != [s["sha256"] for s in first["shards"] if s["split"] == "train"]


def test_raw_and_png_encodings_hold_the_same_pixels(ingested):
    """``shard.encoding`` changes the bytes on disk and how fast they read, never the pairs."""
    paths = Paths(ingested)
    raw_index = shard_flow("sr_x4", make_cfg(ingested), paths)
    raw = read_all(shard_urls(paths.shards("sr_x4"), "train"))
    tars = shard_urls(paths.shards("sr_x4"), "train")
    assert raw_index["encoding"] == {"train": "raw", "val": "png"}
    with tarfile.open(tars[0]) as tf:
        assert {n.split(".", 1)[1] for n in tf.getnames()} == {"input.npy", "target.npy", "meta.json"}
    png_index = shard_flow("sr_x4", make_cfg(ingested, encoding="png"), paths)
    png = read_all(shard_urls(paths.shards("sr_x4"), "train"))
    assert [s["key"] for s in png] == [s["key"] for s in raw]
    for a, b in zip(raw, png):
        assert np.array_equal(a["input"], b["input"]) and np.array_equal(a["target"], b["target"])
        assert a["input"].dtype == np.uint8 and a["meta"] == b["meta"]
    # Val samples are PNG either way: the same bytes.
    assert [s["sha256"] for s in raw_index["shards"] if s["split"] == "val"] == \
        [s["sha256"] for s in png_index["shards"] if s["split"] == "val"]


def test_same_size_task_pairs(ingested):
    paths = Paths(ingested)
    shard_flow("denoise", make_cfg(ingested), paths)
    train = read_all(shard_urls(paths.shards("denoise"), "train"))
    assert len(train) == len(TRAIN) * 2
    for s in train:
        # denoise is conditioned on the sigma: the input carries it as a fourth channel (code 255:
        # the top of a range of one level)
        assert s["input"].shape == (48, 48, 4) and s["target"].shape == (48, 48, 3)
        assert (s["input"][..., 3] == 255).all()
        noise = s["input"][..., :3].astype(float) - s["target"].astype(float)
        assert 15 < noise.std() < 30  # sigma 25, less where clipping at 0/255 bites
    val = read_all(shard_urls(paths.shards("denoise"), "val"))  # PNG: the level channel as its alpha
    assert val and all(s["input"].shape[2] == 4 and (s["input"][..., 3] == 255).all() for s in val)


def test_interrupted_run_keeps_the_old_shards_and_leaves_no_partial_file(ingested, monkeypatch):
    import pipelines.stages.shard as shard_mod

    paths = Paths(ingested)
    shard_flow("sr_x4", make_cfg(ingested), paths)
    before = {p.name: p.read_bytes() for p in paths.shards("sr_x4").iterdir()}
    calls = {"n": 0}
    real = shard_mod.make_samples

    def dies_midway(job):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("simulated interruption")
        return real(job)

    monkeypatch.setattr(shard_mod, "make_samples", dies_midway)
    with pytest.raises(BaseException, match="simulated interruption"):
        shard_flow("sr_x4", make_cfg(ingested, seed=99), paths)
    after = {p.name: p.read_bytes() for p in paths.shards("sr_x4").iterdir()}
    assert after == before
    leftovers = [p for p in paths.shards("sr_x4").parent.rglob("*") if p.name.startswith(".")]
    assert leftovers == []
