"""The train stream's own tar and .npy readers give exactly what webdataset and NumPy give."""

import io
import tarfile

import numpy as np
import pytest
import webdataset as wds

from training.shards import ShardWriter
from training.images import encode_npy, encode_png
from training.shards import decode_npy, decode_pair, tar_samples

pytestmark = pytest.mark.unit


def pair_sample(i: int, rng, key: str | None = None) -> dict[str, bytes]:
    target = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return {"__key__": (key or f"img{i:02d}-p{i:03d}").encode(), "input.npy": encode_npy(target[::4, ::4]),
            "target.npy": encode_npy(target), "meta.json": b'{"i": %d}' % i}


def wds_samples(url: str) -> list[dict]:
    return [{k: v for k, v in s.items()} for s in wds.tarfile_to_samples()([{"url": url}])]


def test_tar_samples_equal_webdatasets_on_our_shards(tmp_path):
    rng = np.random.default_rng(0)
    writer = ShardWriter(tmp_path, "train", max_samples=5, max_bytes=10**9)
    long_key = "a-source-with-a-long-path_" + "x" * 120  # a name past tar's 100 bytes: a GNU long-name header
    for i in range(12):
        writer.write(pair_sample(i, rng, long_key + str(i) if i == 7 else None))
    urls = [str(tmp_path / s["name"]) for s in writer.close()]
    ours = list(tar_samples(urls))
    theirs = [s for url in urls for s in wds_samples(url)]
    assert len(ours) == 12 and [s["__key__"] for s in ours] == [s["__key__"] for s in theirs]
    assert ours[7]["__key__"] == long_key + "7"
    for a, b in zip(ours, theirs):
        assert {k: a[k] for k in ("input.npy", "target.npy", "meta.json")} == \
            {k: b[k] for k in ("input.npy", "target.npy", "meta.json")}
        assert a["__url__"] == b["__url__"]


def test_pax_tars_fall_back_to_webdataset(tmp_path):
    path = tmp_path / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in (("k1.input.npy", encode_npy(np.zeros((2, 2, 3), np.uint8))), ("k1.meta.json", b"{}")):
            info = tarfile.TarInfo(name)
            info.size, info.pax_headers = len(data), {"comment": "x"}  # an extended header per member
            tf.addfile(info, io.BytesIO(data))
    assert [s["__key__"] for s in tar_samples([str(path)])] == ["k1"]


@pytest.mark.parametrize("shape", [(24, 24, 3), (7, 5, 3), (1, 1, 3), (300, 2, 3)])
def test_decode_npy_equals_np_load(shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    data = encode_npy(array)
    out = decode_npy(data)
    assert np.array_equal(out, np.load(io.BytesIO(data))) and out.dtype == np.uint8 and out.flags.writeable


def test_gray_is_three_channels_in_either_encoding():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    raw = decode_pair({"input.npy": encode_npy(gray), "target.npy": encode_npy(np.dstack([gray] * 3))})
    png = decode_pair({"input.png": encode_png(gray), "target.png": encode_png(np.dstack([gray] * 3))})
    for a, b in zip(raw, png):
        assert a.shape == b.shape == (8, 8, 3) and np.array_equal(a, b)


def test_decode_npy_refuses_what_is_not_a_plain_array():
    with pytest.raises(ValueError, match="not a .npy"):
        decode_npy(b"PNG....")
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="plain"):
        decode_npy(buf.getvalue())
