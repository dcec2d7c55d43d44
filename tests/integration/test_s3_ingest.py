"""The ingest flow against a real S3-compatible server (rclone serve s3) and a real Prefect API."""

from __future__ import annotations

import csv
import io
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import s3 as s3lib
from pipelines.ingest import ingest_flow
from pipelines.paths import Paths

pytestmark = pytest.mark.integration

DATASETS = Path("/work/shared/datasets")  # read only
SET5 = DATASETS / "Set5" / "HR"
T91 = DATASETS / "T91" / "HR"


def pixels(data: bytes | Path) -> np.ndarray:
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    with Image.open(src) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# key below the bucket -> bytes. Sizes: t1 197x176, t2 172x179, t10 142x129 (>= the largest
# patch, 128: accepted for train); t20 is 78x78 (too small for train); bird is also in val.
def s3_objects() -> dict[str, bytes]:
    t1 = (T91 / "t1.png").read_bytes()
    return {
        "set/t1.png": t1,
        "set/nested/t2.png": (T91 / "t2.png").read_bytes(),
        "set/nested/deeper/t10.png": (T91 / "t10.png").read_bytes(),
        "set/nested/t20.png": (T91 / "t20.png").read_bytes(),
        "set/dup/bird.png": (SET5 / "bird.png").read_bytes(),
        "set/corrupt.png": b"this is not an image, whatever its name says\n" * 20,
        "set/truncated.png": t1[: len(t1) // 2],
        "set/empty.png": b"",
        "set/.hidden.png": (T91 / "t11.png").read_bytes(),  # hidden: never listed
        "set-b/t12.png": (T91 / "t12.png").read_bytes(),  # shares the string prefix "set" only
        "other/t13.png": (T91 / "t13.png").read_bytes(),  # outside the prefix
    }


@pytest.mark.parametrize("prefix", ["set", "set/"])
def test_ingest_from_s3_and_local(prefix, tmp_path, s3_env, bucket, make_config, prefect_harness):
    s3 = s3_env.client()
    objects = s3_objects()
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    val = tmp_path / "val" / "Set5"
    val.mkdir(parents=True)
    for name in ("bird.png", "butterfly.png"):
        shutil.copyfile(SET5 / name, val / name)
    uri = f"s3://{bucket}/{prefix}"
    cfg = make_config(
        {
            "ingest": {"sources": [{"uri": uri, "split": "train"}, {"uri": str(val), "split": "val"}]},
            "s3": {"endpoint_url": s3_env.endpoint_url},
        }
    )
    assert cfg.largest_patch == 128 and cfg.ingest.min_val_side == 64  # the sizes below rely on it

    paths = Paths(root=tmp_path / "project")
    counts = ingest_flow(cfg, paths=paths)

    assert counts == {"accepted": 5, "rejected": 5}
    s3uri = lambda key: f"s3://{bucket}/{key}"  # noqa: E731
    manifest = read_csv(paths.manifest)
    assert [(r["id"], r["source_uri"], r["split"], r["width"], r["height"], r["path"]) for r in manifest] == [
        ("set_nested_deeper_t10", s3uri("set/nested/deeper/t10.png"), "train", "142", "129",
         "images/set_nested_deeper_t10.png"),
        ("set_nested_t2", s3uri("set/nested/t2.png"), "train", "172", "179", "images/set_nested_t2.png"),
        ("set_t1", s3uri("set/t1.png"), "train", "197", "176", "images/set_t1.png"),
        ("Set5_bird", str(val / "bird.png"), "val", "288", "288", "images/Set5_bird.png"),
        ("Set5_butterfly", str(val / "butterfly.png"), "val", "256", "256", "images/Set5_butterfly.png"),
    ]  # fmt: skip
    rejects = read_csv(paths.rejects)
    assert [(r["source_uri"], r["split"], r["reason"]) for r in rejects] == [
        (s3uri("set/corrupt.png"), "train", "not_an_image"),
        (s3uri("set/dup/bird.png"), "train", "duplicate"),
        (s3uri("set/empty.png"), "train", "empty"),
        (s3uri("set/nested/t20.png"), "train", "too_small"),
        (s3uri("set/truncated.png"), "train", "truncated"),
    ]
    by_uri = {r["source_uri"]: r["detail"] for r in rejects}
    assert by_uri[s3uri("set/dup/bird.png")] == "same pixels as Set5_bird"
    assert by_uri[s3uri("set/nested/t20.png")] == "78x78 is smaller than 128 px on a side"
    assert by_uri[s3uri("set/empty.png")] == "zero-byte file"

    # Exactly the accepted images are stored, with the source pixels.
    stored = sorted(p.name for p in paths.images.iterdir())
    assert stored == sorted(Path(r["path"]).name for r in manifest)
    for row in manifest:
        src = objects[row["source_uri"].removeprefix(f"s3://{bucket}/")] if row["split"] == "train" else Path(row["source_uri"]).read_bytes()
        out = pixels(paths.manifest_dir / row["path"])
        np.testing.assert_array_equal(out, pixels(src))
        assert out.shape == (int(row["height"]), int(row["width"]), 3)
    # No staging folders left behind.
    assert sorted(p.name for p in paths.data.iterdir()) == ["manifest"]
    assert sorted(p.name for p in paths.manifest_dir.iterdir()) == ["images", "manifest.csv", "rejects.csv"]


def test_list_objects_paginates_past_1000(s3_env, bucket, make_config):
    n = 1005
    s3 = s3_env.client()
    keys = [f"many/{i:05d}.bin" for i in range(n)]

    def put(key: str) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, keys))
    s3.put_object(Bucket=bucket, Key="many-not/x.bin", Body=b"x")  # same string prefix, other folder
    s3.put_object(Bucket=bucket, Key="elsewhere/y.bin", Body=b"y")

    # The server really pages at 1000, so a one-call listing would miss objects.
    first = s3.list_objects_v2(Bucket=bucket, Prefix="many/")
    assert first["KeyCount"] == 1000 and first["IsTruncated"] is True

    # The product's client, built from config and the environment's credentials.
    product = s3lib.client(make_config({"s3": {"endpoint_url": s3_env.endpoint_url}}).s3)
    listed = list(s3lib.list_objects(product, f"s3://{bucket}/many"))
    assert len(listed) == n
    assert sorted(listed) == [(f"s3://{bucket}/{k}", len(k)) for k in keys]
    assert list(s3lib.list_objects(product, f"s3://{bucket}/many/")) == listed
    # The whole bucket: everything, once.
    everything = list(s3lib.list_objects(product, f"s3://{bucket}"))
    assert len(everything) == n + 2 and len(set(everything)) == n + 2
    assert s3lib.read_object(product, f"s3://{bucket}/many/01004.bin") == b"many/01004.bin"
