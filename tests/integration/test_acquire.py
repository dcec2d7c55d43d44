"""The acquire stage: dataset folders checked against SHA256SUMS, and `files:` over HTTP and S3."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipelines.acquire import AcquireError, acquire
from pipelines.paths import DATASETS_ENV, Paths

pytestmark = pytest.mark.integration

SHARED_DATASETS = Path("/work/shared/datasets")  # read only
SET5 = SHARED_DATASETS / "Set5" / "HR"
MINI = ("baby.png", "bird.png", "butterfly.png")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(folder: Path) -> dict[str, bytes]:
    """Relative posix path -> bytes of every file below ``folder``."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_no_leftovers(paths: Paths) -> None:
    """No staging folders (``.<name>.*.tmp`` / ``.<name>.old``) under data/raw."""
    if paths.raw.exists():
        hidden = [p.name for p in paths.raw.iterdir() if p.name.startswith(".")]
        assert hidden == [], f"temporary folders left behind: {hidden}"


def build_datasets(root: Path, name: str = "Mini", files: tuple[str, ...] = MINI) -> Path:
    """``root/<name>/HR/*.png`` copied from Set5, with a ``sha256sum``-format SHA256SUMS."""
    hr = root / name / "HR"
    hr.mkdir(parents=True)
    lines = []
    for f in files:
        shutil.copyfile(SET5 / f, hr / f)  # copyfile: writable copies of the read-only originals
        lines.append(f"{sha256((hr / f).read_bytes())}  HR/{f}\n")
    (root / name / "SHA256SUMS").write_text("".join(lines))
    return root


def dataset_config(make_config, name: str = "Mini"):
    return make_config({"acquire": {"collections": [{"name": name, "dataset": name}], "weights": []}})


def files_config(make_config, files: list[dict], name: str = "web", **overrides):
    return make_config({"acquire": {"collections": [{"name": name, "files": files}], "weights": []}, **overrides})


# --------------------------------------------------------------------------------------------
# dataset: collections


@pytest.fixture
def datasets(tmp_path, monkeypatch) -> Path:
    root = build_datasets(tmp_path / "datasets")
    monkeypatch.setenv(DATASETS_ENV, str(root))
    return root


@pytest.fixture
def acquired(tmp_path, datasets, make_config) -> Paths:
    """A project whose data/raw/Mini holds a good earlier acquisition."""
    paths = Paths(root=tmp_path / "project")
    assert acquire(dataset_config(make_config), paths) == {"Mini": 3}
    return paths


def test_dataset_copied_byte_equal(acquired, datasets):
    out = acquired.raw / "Mini"
    assert tree(out) == {f"HR/{f}": (SET5 / f).read_bytes() for f in MINI}
    assert sorted(p.name for p in acquired.raw.iterdir()) == ["Mini"]  # SHA256SUMS stays behind


def test_shared_set5_verifies(tmp_path, monkeypatch, make_config):
    monkeypatch.setenv(DATASETS_ENV, str(SHARED_DATASETS))
    paths = Paths(root=tmp_path / "project")
    assert acquire(dataset_config(make_config, "Set5"), paths) == {"Set5": 5}
    assert tree(paths.raw / "Set5") == {f"HR/{p.name}": p.read_bytes() for p in sorted(SET5.iterdir())}
    assert_no_leftovers(paths)


def test_rerun_replaces_the_folder_whole(acquired, datasets, make_config):
    (acquired.raw / "Mini" / "HR" / "stray.txt").write_text("left from an older run")
    sums = datasets / "Mini" / "SHA256SUMS"
    sums.write_text("".join(line + "\n" for line in sums.read_text().splitlines() if "baby" not in line))
    assert acquire(dataset_config(make_config), acquired) == {"Mini": 2}
    assert tree(acquired.raw / "Mini") == {f"HR/{f}": (SET5 / f).read_bytes() for f in ("bird.png", "butterfly.png")}
    assert_no_leftovers(acquired)


def _assert_kept(paths: Paths) -> None:
    assert tree(paths.raw / "Mini") == {f"HR/{f}": (SET5 / f).read_bytes() for f in MINI}
    assert sorted(p.name for p in paths.raw.iterdir()) == ["Mini"]
    assert_no_leftovers(paths)


def test_missing_datasets_folder(acquired, tmp_path, monkeypatch, make_config):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(DATASETS_ENV, str(missing))
    with pytest.raises(AcquireError) as err:
        acquire(dataset_config(make_config), acquired)
    assert DATASETS_ENV in str(err.value) and str(missing) in str(err.value)
    _assert_kept(acquired)


def test_missing_datasets_folder_default(acquired, monkeypatch, make_config):
    # Unset, the default is ../shared/datasets beside the project root: absent in tmp_path.
    monkeypatch.delenv(DATASETS_ENV)
    default = acquired.root.resolve().parent / "shared" / "datasets"
    assert not default.exists()
    with pytest.raises(AcquireError) as err:
        acquire(dataset_config(make_config), acquired)
    assert DATASETS_ENV in str(err.value) and str(default) in str(err.value)
    _assert_kept(acquired)


def test_altered_file(acquired, datasets, make_config):
    victim = datasets / "Mini" / "HR" / "bird.png"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    victim.write_bytes(bytes(data))
    with pytest.raises(AcquireError) as err:
        acquire(dataset_config(make_config), acquired)
    msg = str(err.value)
    assert str(victim) in msg and "does not match" in msg and DATASETS_ENV in msg
    _assert_kept(acquired)


def test_listed_file_missing(acquired, datasets, make_config):
    gone = datasets / "Mini" / "HR" / "butterfly.png"
    gone.unlink()
    with pytest.raises(AcquireError) as err:
        acquire(dataset_config(make_config), acquired)
    msg = str(err.value)
    assert str(gone) in msg and "missing" in msg and DATASETS_ENV in msg
    _assert_kept(acquired)


def test_sha256sums_missing(acquired, datasets, make_config):
    (datasets / "Mini" / "SHA256SUMS").unlink()
    with pytest.raises(AcquireError, match="SHA256SUMS not found") as err:
        acquire(dataset_config(make_config), acquired)
    assert DATASETS_ENV in str(err.value)
    _assert_kept(acquired)


def test_sha256sums_malformed(acquired, datasets, make_config):
    sums = datasets / "Mini" / "SHA256SUMS"
    sums.write_text(sums.read_text() + f"{'0' * 64}  ../escape.png\n")
    with pytest.raises(AcquireError, match=r"SHA256SUMS:4: not a sha256sum line"):
        acquire(dataset_config(make_config), acquired)
    _assert_kept(acquired)


# --------------------------------------------------------------------------------------------
# files: over HTTP


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def web_files(http_root) -> dict[str, bytes]:
    """A PNG, a .zip of two PNGs (one in a folder) and a .tar.gz of one, served over HTTP."""
    bird = (SET5 / "bird.png").read_bytes()
    pair = {"pair/head.png": (SET5 / "head.png").read_bytes(), "woman.png": (SET5 / "woman.png").read_bytes()}
    (http_root / "sub").mkdir()
    (http_root / "sub" / "bird.png").write_bytes(bird)
    (http_root / "pair.zip").write_bytes(_zip(pair))
    (http_root / "one.tar.gz").write_bytes(_tgz({"tarred/baby.png": (SET5 / "baby.png").read_bytes()}))
    return {"bird.png": bird, **pair}


def test_http_png_and_zip(tmp_path, http_server, http_root, web_files, make_config):
    files = [
        {"uri": f"{http_server}/sub/bird.png", "sha256": sha256(web_files["bird.png"])},
        {"uri": f"{http_server}/pair.zip", "sha256": sha256((http_root / "pair.zip").read_bytes()).upper()},
    ]
    paths = Paths(root=tmp_path / "project")
    assert acquire(files_config(make_config, files), paths) == {"web": 3}
    assert tree(paths.raw / "web") == web_files  # zip unpacked, the archive itself not kept
    assert_no_leftovers(paths)


def test_http_tar_gz(tmp_path, http_server, http_root, web_files, make_config):
    files = [{"uri": f"{http_server}/one.tar.gz", "sha256": sha256((http_root / "one.tar.gz").read_bytes())}]
    paths = Paths(root=tmp_path / "project")
    assert acquire(files_config(make_config, files), paths) == {"web": 1}
    assert tree(paths.raw / "web") == {"tarred/baby.png": (SET5 / "baby.png").read_bytes()}


@pytest.mark.parametrize("bad", ["png", "zip"])
def test_http_wrong_sha256(bad, tmp_path, http_server, http_root, web_files, make_config):
    good = {
        "png": {"uri": f"{http_server}/sub/bird.png", "sha256": sha256(web_files["bird.png"])},
        "zip": {"uri": f"{http_server}/pair.zip", "sha256": sha256((http_root / "pair.zip").read_bytes())},
    }
    wrong = {**good[bad], "sha256": "0" * 64}
    # The bad file comes last, so a good one was already placed in the staging folder.
    files = [item for key, item in good.items() if key != bad] + [wrong]
    paths = Paths(root=tmp_path / "project")
    with pytest.raises(AcquireError) as err:
        acquire(files_config(make_config, files), paths)
    msg = str(err.value)
    assert wrong["uri"] in msg and f"params expect {'0' * 64}" in msg
    assert not (paths.raw / "web").exists()
    assert list(paths.raw.iterdir()) == []  # no partial output, no staging folder


def test_http_wrong_sha256_keeps_earlier_collection(tmp_path, http_server, web_files, make_config):
    uri = f"{http_server}/sub/bird.png"
    paths = Paths(root=tmp_path / "project")
    acquire(files_config(make_config, [{"uri": uri, "sha256": sha256(web_files["bird.png"])}]), paths)
    with pytest.raises(AcquireError, match="wrong or altered file"):
        acquire(files_config(make_config, [{"uri": uri, "sha256": "f" * 64}]), paths)
    assert tree(paths.raw / "web") == {"bird.png": web_files["bird.png"]}
    assert_no_leftovers(paths)


def test_http_not_found(tmp_path, http_server, make_config):
    uri = f"{http_server}/absent.png"
    cfg = files_config(make_config, [{"uri": uri, "sha256": "0" * 64}], ingest={"download_retries": 1})
    paths = Paths(root=tmp_path / "project")
    with pytest.raises(AcquireError) as err:
        acquire(cfg, paths)
    assert f"{uri}: download failed after 2 attempts" in str(err.value) and "404" in str(err.value)
    assert list(paths.raw.iterdir()) == []


def test_zip_member_outside_folder_refused(tmp_path, http_server, http_root, make_config):
    (http_root / "evil.zip").write_bytes(_zip({"ok.png": b"fine", "../evil.png": b"escape"}))
    files = [{"uri": f"{http_server}/evil.zip", "sha256": sha256((http_root / "evil.zip").read_bytes())}]
    paths = Paths(root=tmp_path / "project")
    with pytest.raises(AcquireError, match="refusing archive member outside the folder"):
        acquire(files_config(make_config, files), paths)
    assert list(paths.raw.iterdir()) == []
    assert not (paths.data / "evil.png").exists()


# --------------------------------------------------------------------------------------------
# files: over S3


def test_s3_files(tmp_path, s3_env, bucket, make_config):
    s3 = s3_env.client()
    bird, pair = (SET5 / "bird.png").read_bytes(), {"a/head.png": (SET5 / "head.png").read_bytes(), "woman.png": (SET5 / "woman.png").read_bytes()}
    zipped = _zip(pair)
    s3.put_object(Bucket=bucket, Key="coll/deep/bird.png", Body=bird)
    s3.put_object(Bucket=bucket, Key="coll/pair.zip", Body=zipped)
    files = [
        {"uri": f"s3://{bucket}/coll/deep/bird.png", "sha256": sha256(bird)},
        {"uri": f"s3://{bucket}/coll/pair.zip", "sha256": sha256(zipped)},
    ]
    cfg = files_config(make_config, files, name="remote", s3={"endpoint_url": s3_env.endpoint_url})
    paths = Paths(root=tmp_path / "project")
    assert acquire(cfg, paths) == {"remote": 3}
    assert tree(paths.raw / "remote") == {"bird.png": bird, **pair}
    assert_no_leftovers(paths)


def test_s3_wrong_sha256_and_missing_key(tmp_path, s3_env, bucket, make_config):
    s3 = s3_env.client()
    bird = (SET5 / "bird.png").read_bytes()
    s3.put_object(Bucket=bucket, Key="coll/bird.png", Body=bird)
    paths = Paths(root=tmp_path / "project")
    overrides = {"s3": {"endpoint_url": s3_env.endpoint_url}, "ingest": {"download_retries": 0}}

    uri = f"s3://{bucket}/coll/bird.png"
    with pytest.raises(AcquireError) as err:
        acquire(files_config(make_config, [{"uri": uri, "sha256": "a" * 64}], **overrides), paths)
    assert f"{uri}: sha256 is {sha256(bird)}, params expect {'a' * 64}" in str(err.value)
    assert list(paths.raw.iterdir()) == []

    absent = f"s3://{bucket}/coll/absent.png"
    with pytest.raises(AcquireError) as err:
        acquire(files_config(make_config, [{"uri": absent, "sha256": sha256(bird)}], **overrides), paths)
    assert f"{absent}: download failed after 1 attempts" in str(err.value)
    assert list(paths.raw.iterdir()) == []
    assert not any(name.startswith(".") for name in os.listdir(paths.raw))


def test_two_files_with_one_name_are_refused(tmp_path, make_config):
    # /a/x.png and /b/x.png would land on one name: refuse rather than silently keep one.
    files = []
    for sub, name in (("a", "baby.png"), ("b", "bird.png")):
        src = tmp_path / sub / "x.png"
        src.parent.mkdir()
        data = (SET5 / name).read_bytes()
        src.write_bytes(data)
        files.append({"uri": str(src), "sha256": sha256(data)})
    paths = Paths(root=tmp_path / "project")
    with pytest.raises(AcquireError, match="two files with one name"):
        acquire(files_config(make_config, files), paths)
    assert not (paths.raw / "web").exists()
    assert_no_leftovers(paths)


# --------------------------------------------------------------------------------------------
# pretrained weights

WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "weights"
VGG = "vgg_normalised_conv3_1.pth"


def weights_config(make_config, digest: str):
    return make_config({"acquire": {"collections": [{"name": "Mini", "dataset": "Mini"}],
                                    "weights": [{"name": VGG, "sha256": digest}]}})


def test_weights_copied_and_checked(tmp_path, datasets, monkeypatch, make_config):
    monkeypatch.setenv("PERCEPT_WEIGHTS", str(WEIGHTS))
    paths = Paths(root=tmp_path / "project")
    digest = sha256((WEIGHTS / VGG).read_bytes())
    assert acquire(weights_config(make_config, digest), paths) == {"Mini": 3, "weights": 1}
    assert (paths.weights / VGG).read_bytes() == (WEIGHTS / VGG).read_bytes()

    with pytest.raises(AcquireError, match="PERCEPT_WEIGHTS") as err:
        acquire(weights_config(make_config, "0" * 64), paths)
    assert "params expect" in str(err.value)
    assert (paths.weights / VGG).read_bytes() == (WEIGHTS / VGG).read_bytes()  # the good copy stays

    monkeypatch.setenv("PERCEPT_WEIGHTS", str(tmp_path / "nowhere"))
    with pytest.raises(AcquireError, match="not found: set PERCEPT_WEIGHTS"):
        acquire(weights_config(make_config, digest), paths)
    assert_no_leftovers(paths)
