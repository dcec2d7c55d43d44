"""The ingest flow against a real S3-compatible server (rclone serve s3) and a real Prefect API."""

from __future__ import annotations

import csv
import io
import shutil
import http.client
import http.server
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.services import s3 as s3lib
from pipelines.stages.ingest import decode_all, ingest_flow, list_all
from pipelines.common.paths import Paths
from tests.shared_data import DATASETS

pytestmark = pytest.mark.integration

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
        "set/.hidden.png": (T91 / "t11.png").read_bytes(),  # hidden: listed as skipped, never read
        "set-b/t12.png": (T91 / "t12.png").read_bytes(),  # shares the string prefix "set" only
        "other/t13.png": (T91 / "t13.png").read_bytes(),  # outside the prefix
    }


# Ray's workers read the objects themselves (the driver only lists them); local: this process.
@pytest.mark.parametrize(("prefix", "engine"), [("set", "ray"), ("set/", "local")])
def test_ingest_from_s3_and_local(prefix, engine, tmp_path, s3_env, bucket, make_config, prefect_harness):
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
            "data": {"engine": engine},
        }
    )
    assert cfg.largest_patch == 128 and cfg.ingest.min_val_side == 64  # the sizes below rely on it

    paths = Paths(root=tmp_path / "project")
    counts = ingest_flow(cfg, paths=paths)
    import ray

    assert not ray.is_initialized()  # a Ray the flow started for itself is stopped with it

    assert counts == {"accepted": 5, "rejected": 6}
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
        (s3uri("set/.hidden.png"), "train", "hidden"),
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


class DenyingProxy(http.server.ThreadingHTTPServer):
    """A real S3 front: relays every request to the rclone server, except reads of keys that
    contain ``denied``, which it answers as S3 does for a policy that refuses them (403)."""

    def __init__(self, upstream: str):
        self.upstream = upstream.removeprefix("http://")
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002
        pass

    def _relay(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
        if self.command == "GET" and "denied" in self.path:
            self._answer(403, {"Content-Type": "application/xml"},
                         b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                         b"<Message>Access Denied</Message></Error>")
            return
        conn = http.client.HTTPConnection(self.server.upstream, timeout=30)
        conn.request(self.command, self.path, body=body or None, headers=dict(self.headers))  # Host kept: signatures hold
        resp = conn.getresponse()
        data = resp.read()
        headers = {k: v for k, v in resp.getheaders() if k.lower() not in ("transfer-encoding", "content-length", "connection")}
        self._answer(resp.status, headers, data)
        conn.close()

    def _answer(self, status, headers, data):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay


def test_denied_and_vanished_objects_are_rejected_and_the_rest_ingested(tmp_path, s3_env, bucket, make_config):
    """AccessDenied on one object, and an object deleted between listing and reading: each is an
    ``unreadable`` reject naming the S3 error; an object over max_bytes is refused unread; every
    other object is ingested."""
    s3 = s3_env.client()
    for key, name in [("set/t1.png", "t1.png"), ("set/t2.png", "t2.png"), ("set/denied.png", "t10.png"),
                      ("set/gone.png", "t12.png")]:
        s3.put_object(Bucket=bucket, Key=key, Body=(T91 / name).read_bytes())
    s3.put_object(Bucket=bucket, Key="set/huge.png", Body=b"\x89PNG\r\n\x1a\n" + bytes(200_000))
    proxy = DenyingProxy(s3_env.endpoint_url)
    try:
        cfg = make_config({"ingest": {"sources": [{"uri": f"s3://{bucket}/set", "split": "train"}],
                                      "download_retries": 0, "max_bytes": 100_000},
                           "s3": {"endpoint_url": proxy.endpoint_url}, "data": {"engine": "ray"}})
        candidates = list_all.fn(cfg)
        assert [c.rel for c in candidates] == ["denied.png", "gone.png", "huge.png", "t1.png", "t2.png"]
        s3.delete_object(Bucket=bucket, Key="set/gone.png")  # listed, then gone before it is read
        images = tmp_path / "images"
        images.mkdir()
        accepted, rejects = decode_all.fn(candidates, cfg, images)
    finally:
        proxy.shutdown()
    assert [r.id for r in accepted] == ["set_t1", "set_t2"]
    assert sorted(p.name for p in images.iterdir()) == ["set_t1.png", "set_t2.png"]  # no staged leftovers
    got = {r.source_uri.rsplit("/", 1)[1]: (r.reason, r.detail.split(":")[0]) for r in rejects}
    assert got == {"denied.png": ("unreadable", "AccessDenied"), "gone.png": ("unreadable", "NoSuchKey"),
                   "huge.png": ("file_too_large", "200008 bytes exceeds max_bytes=100000")}  # size from the listing
