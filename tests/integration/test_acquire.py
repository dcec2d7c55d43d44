"""The acquire stage: dataset folders checked against SHA256SUMS, and `files:` over HTTP and S3."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipelines.stages.acquire import AcquireError, acquire
from pipelines.common.paths import DATASETS_ENV, Paths
from tests.shared_data import DATASETS, WEIGHTS

pytestmark = pytest.mark.integration

SET5 = DATASETS / "Set5" / "HR"
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
    monkeypatch.setenv(DATASETS_ENV, str(DATASETS))
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


def _pairs(members: dict[str, bytes] | list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return list(members.items()) if isinstance(members, dict) else list(members)


def _zip(members: dict[str, bytes] | list[tuple[str, bytes]]) -> bytes:
    """A .zip of (name, bytes) members; a list may repeat a name."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in _pairs(members):
            zf.writestr(name, data)
    return buf.getvalue()


def _tgz(members: dict[str, bytes] | list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in _pairs(members):
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


def _archive_items(tmp_path: Path, name: str, data: bytes) -> list[dict]:
    """A good PNG first (already placed when the archive is refused), then the archive: local files."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    bird = (SET5 / "bird.png").read_bytes()
    (src / "bird.png").write_bytes(bird)
    (src / name).write_bytes(data)
    return [{"uri": str(src / "bird.png"), "sha256": sha256(bird)}, {"uri": str(src / name), "sha256": sha256(data)}]


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
@pytest.mark.parametrize("second", ["pair/head.png", "pair//head.png", "./pair/head.png", "pair/./head.png"])
def test_archive_repeating_a_name_is_refused(fmt, second, tmp_path, make_config):
    # Two members that are one file once normalised: the second would silently overwrite the first.
    members = [("pair/head.png", (SET5 / "head.png").read_bytes()), (second, (SET5 / "woman.png").read_bytes())]
    build = _zip if fmt == "zip" else _tgz
    exact_repeat = fmt == "zip" and second == "pair/head.png"  # zipfile warns, and writes it anyway
    with pytest.warns(UserWarning, match="Duplicate name") if exact_repeat else contextlib.nullcontext():
        data = build(members)
    paths = Paths(root=tmp_path / "project")
    with pytest.raises(AcquireError) as err:
        acquire(files_config(make_config, _archive_items(tmp_path, f"dup.{fmt}", data)), paths)
    msg = str(err.value)
    assert f"dup.{fmt}: member {second!r} repeats 'pair/head.png'" in msg and "two files with one name" in msg
    assert not (paths.raw / "web").exists()  # the staging folder (bird.png already in it) is discarded
    assert list(paths.raw.iterdir()) == []


def test_archive_repeating_a_name_keeps_earlier_collection(tmp_path, make_config):
    paths = Paths(root=tmp_path / "project")
    good = _archive_items(tmp_path, "ok.zip", _zip([("pair/head.png", (SET5 / "head.png").read_bytes())]))
    assert acquire(files_config(make_config, good), paths) == {"web": 2}
    before = tree(paths.raw / "web")
    bad = _archive_items(tmp_path, "dup.tar.gz", _tgz([("a/x.png", b"one"), ("a//x.png", b"two")]))
    with pytest.raises(AcquireError, match=r"dup\.tar\.gz: member 'a//x\.png' repeats 'a/x\.png'"):
        acquire(files_config(make_config, bad), paths)
    assert tree(paths.raw / "web") == before
    assert_no_leftovers(paths)


def _tar_with(kind: bytes, name: str, linkname: str = "") -> bytes:
    """A .tar.gz of one good file and one member of type ``kind`` (a link, a device, a fifo)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ok = tarfile.TarInfo("ok.png")
        ok.size = 4
        tf.addfile(ok, io.BytesIO(b"fine"))
        odd = tarfile.TarInfo(name)
        odd.type, odd.linkname = kind, linkname
        tf.addfile(odd)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("kind", "linkname", "what"),
    [
        (tarfile.SYMTYPE, "../../outside.png", "a link to '../../outside.png'"),
        (tarfile.SYMTYPE, "ok.png", "a link to 'ok.png'"),
        (tarfile.LNKTYPE, "ok.png", "a link to 'ok.png'"),
        (tarfile.CHRTYPE, "", "a device"),
        (tarfile.BLKTYPE, "", "a device"),
        (tarfile.FIFOTYPE, "", "a fifo"),
    ],
)
def test_tar_links_devices_and_fifos_are_refused(kind, linkname, what, tmp_path, make_config):
    # They used to be skipped without a word (only regular files were extracted): now the archive is refused.
    paths = Paths(root=tmp_path / "project")
    items = _archive_items(tmp_path, "odd.tar.gz", _tar_with(kind, "odd.png", linkname))
    with pytest.raises(AcquireError) as err:
        acquire(files_config(make_config, items), paths)
    assert str(err.value) == f"odd.tar.gz: refusing archive member 'odd.png': {what}, not a regular file"
    assert list(paths.raw.iterdir()) == []
    assert not (tmp_path / "outside.png").exists()


@pytest.mark.parametrize(
    "name", ["a/../../x.png", "a\\..\\..\\x.png", "..\\x.png", "/abs/x.png", "\\abs\\x.png", "C:/x.png", "a/.."]
)
def test_zip_member_escaping_by_any_spelling_is_refused(name, tmp_path, make_config):
    paths = Paths(root=tmp_path / "project")
    items = _archive_items(tmp_path, "evil.zip", _zip([("ok.png", b"fine"), (name, b"escape")]))
    with pytest.raises(AcquireError) as err:
        acquire(files_config(make_config, items), paths)
    assert str(err.value) == f"evil.zip: refusing archive member outside the folder: {name!r}"
    assert list(paths.raw.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir() if p.name not in ("src", "project")] == []


def test_zip_backslash_is_a_separator(tmp_path, make_config):
    # Zips made by some Windows tools use "\" between folders (the format says "/"): same file tree.
    paths = Paths(root=tmp_path / "project")
    head = (SET5 / "head.png").read_bytes()
    items = _archive_items(tmp_path, "win.zip", _zip([("pair\\head.png", head)]))
    assert acquire(files_config(make_config, items), paths) == {"web": 2}
    assert tree(paths.raw / "web") == {"bird.png": (SET5 / "bird.png").read_bytes(), "pair/head.png": head}


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 not really a zip", _zip([("x.png", b"0123456789" * 50)])[:-30]])
def test_corrupt_archive_is_refused_with_its_name(data, tmp_path, make_config):
    paths = Paths(root=tmp_path / "project")
    with pytest.raises(AcquireError, match=r"^bad\.zip: unreadable or corrupt archive \(BadZipFile: "):
        acquire(files_config(make_config, _archive_items(tmp_path, "bad.zip", data)), paths)
    assert list(paths.raw.iterdir()) == []


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
