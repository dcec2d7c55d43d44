"""The ``acquire`` stage: copy the raw collections into ``data/raw/<name>/``, every file checked.

A ``dataset:`` collection is a folder of the datasets directory (``$PERCEPT_DATASETS``, else
``../shared/datasets``) and is verified against that folder's ``SHA256SUMS``. A ``files:``
collection lists https://, http://, s3:// or local files with their expected sha256; archives
(.zip, .tar, .tar.gz, .tgz) are unpacked after the check. A collection is built in a temporary
folder and renamed into place only when every file checked out.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from tqdm import tqdm

from pipelines import s3 as s3lib
from pipelines.config import Collection, Config, RemoteFile
from pipelines.fsutil import CHUNK, sha256_file, staging_dir
from pipelines.paths import DATASETS_ENV, WEIGHTS_ENV, Paths

log = logging.getLogger(__name__)
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")


class AcquireError(RuntimeError):
    """A source is missing, unreachable or does not match its checksum."""


def acquire(cfg: Config, paths: Paths = Paths()) -> dict[str, int]:
    """Copy every collection; return the number of files per collection."""
    counts = {}
    for collection in cfg.acquire.collections:
        with staging_dir(paths.raw / collection.name) as tmp:
            if collection.dataset is not None:
                counts[collection.name] = copy_dataset(collection, paths.datasets(), tmp)
            else:
                counts[collection.name] = fetch_files(collection, tmp, cfg)
        log.info("acquired %s: %d files", collection.name, counts[collection.name])
    if cfg.acquire.weights:
        with staging_dir(paths.weights) as tmp:
            counts["weights"] = copy_weights(cfg, paths.weights_source(), tmp)
    return counts


def copy_weights(cfg: Config, source: Path, dest: Path) -> int:
    """Copy each pretrained file, checked against the sha256 in params (never downloaded)."""
    hint = f"set {WEIGHTS_ENV} to the folder that holds it (now: {source})"
    for item in cfg.acquire.weights:
        src = source / item.name
        if not src.is_file():
            raise AcquireError(f"pretrained weights {src} not found: {hint}")
        actual = sha256_file(src)
        if actual != item.sha256:
            raise AcquireError(f"{src}: sha256 is {actual}, params expect {item.sha256} (altered or wrong file): {hint}")
        shutil.copyfile(src, dest / item.name)
        log.info("acquired weights %s", item.name)
    return len(cfg.acquire.weights)


def parse_sha256sums(path: Path) -> list[tuple[str, str]]:
    """(sha256, relative path) pairs of a ``sha256sum`` listing."""
    entries = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        name = name.lstrip("*")
        rel = PurePosixPath(name)
        if len(digest) != 64 or not name or rel.is_absolute() or ".." in rel.parts:
            raise AcquireError(f"{path}:{lineno}: not a sha256sum line: {line!r}")
        entries.append((digest.lower(), name))
    return entries


def copy_dataset(collection: Collection, datasets: Path, dest: Path) -> int:
    folder = datasets / str(collection.dataset)
    hint = f"set {DATASETS_ENV} to the folder that holds {collection.dataset}/ (now: {datasets})"
    if not datasets.is_dir():
        raise AcquireError(f"datasets folder {datasets} not found: {hint}")
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        raise AcquireError(f"{sums} not found: {hint}")
    entries = parse_sha256sums(sums)
    for digest, name in tqdm(entries, desc=f"acquire {collection.name}", unit="file", leave=False):
        src = folder / name
        if not src.is_file():
            raise AcquireError(f"{src} is listed in SHA256SUMS but missing: {hint}")
        if sha256_file(src) != digest:
            raise AcquireError(f"{src} does not match its SHA256SUMS entry (altered or corrupt): {hint}")
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
    return len(entries)


def fetch_files(collection: Collection, dest: Path, cfg: Config) -> int:
    count = 0
    s3 = None
    for item in tqdm(collection.files or [], desc=f"acquire {collection.name}", unit="file", leave=False):
        name = PurePosixPath(urlparse(item.uri).path).name or "download"
        with tempfile.TemporaryDirectory(dir=dest) as tmpdir:
            local = Path(tmpdir) / name
            if s3lib.is_s3(item.uri):
                s3 = s3 or s3lib.client(cfg.s3, retries=cfg.ingest.download_retries)
                _with_retries(lambda: s3.download_file(*_bucket_key(item.uri), str(local)), item, cfg)
            elif item.uri.startswith(("http://", "https://")):
                _with_retries(lambda: _http_download(item.uri, local), item, cfg)
            else:
                src = Path(item.uri)
                if not src.is_file():
                    raise AcquireError(f"collection {collection.name!r}: {src} not found")
                shutil.copyfile(src, local)
            _verify(local, item)
            count += _place(local, dest)
    return count


def _bucket_key(uri: str) -> tuple[str, str]:
    loc = s3lib.S3Uri.parse(uri)
    return loc.bucket, loc.key


def _http_download(url: str, out: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as resp, open(out, "wb") as fh:
        while chunk := resp.read(CHUNK):
            fh.write(chunk)


def _with_retries(fetch, item: RemoteFile, cfg: Config) -> None:
    attempts = cfg.ingest.download_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return fetch()
        except Exception as exc:  # network errors of any client
            if attempt == attempts:
                raise AcquireError(f"{item.uri}: download failed after {attempts} attempts: {exc}") from exc
            delay = min(2 ** (attempt - 1) * 0.5, 30.0)
            log.warning("%s: %s; retrying in %.1fs", item.uri, exc, delay)
            time.sleep(delay)


def _verify(path: Path, item: RemoteFile) -> None:
    actual = sha256_file(path)
    if actual != item.sha256:
        raise AcquireError(f"{item.uri}: sha256 is {actual}, params expect {item.sha256}: wrong or altered file")


def _place(local: Path, dest: Path) -> int:
    """Move a checked file into ``dest``, unpacking archives; return how many files it added."""
    name = local.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(local) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            for m in members:
                _check_member(m.filename, local, dest)
            zf.extractall(dest)
        return len(members)
    if name.endswith(ARCHIVES):
        with tarfile.open(local) as tf:
            members = [m for m in tf.getmembers() if m.isfile()]
            for m in members:
                _check_member(m.name, local, dest)
            tf.extractall(dest, members=members, filter="data")  # "data" refuses links and escapes
        return len(members)
    _check_member(local.name, local, dest)
    shutil.move(local, dest / local.name)
    return 1


def _check_member(name: str, source: Path, dest: Path) -> None:
    """Refuse paths that escape the collection folder, and two files landing on one name."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise AcquireError(f"{source.name}: refusing archive member outside the folder: {name!r}")
    if (dest / rel).exists():
        raise AcquireError(f"{source.name}: {name!r} is already in the collection (two files with one name)")
