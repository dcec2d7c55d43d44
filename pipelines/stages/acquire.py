"""The ``acquire`` stage: copy the raw collections into ``data/raw/<name>/``, every file checked.

A ``dataset:`` collection is a folder of the datasets directory (``$PERCEPT_DATASETS``, else
``../shared/datasets``) and is verified against that folder's ``SHA256SUMS``. A ``files:``
collection lists https://, http://, s3:// or local files with their expected sha256; archives
(.zip, .tar, .tar.gz, .tgz) are unpacked after the check, regular files only, and refused whole
when corrupt or when a member would escape the folder, repeat a name or be a link (``unpack``).
A collection is built in a temporary folder and renamed into place only when every file checked out.
"""

from __future__ import annotations

import contextlib
import logging
import lzma
import shutil
import stat
import struct
import tarfile
import tempfile
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import urlparse

from tqdm import tqdm

from pipelines.common.errors import UserError
from pipelines.common.fsutil import CHUNK, sha256_file, staging_dir
from pipelines.common.paths import DATASETS_ENV, WEIGHTS_ENV, Paths
from pipelines.common.schema import Collection, Config, RemoteFile
from pipelines.services import s3 as s3lib

log = logging.getLogger(__name__)
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz")


class AcquireError(UserError, RuntimeError):
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
    if local.name.lower().endswith(ARCHIVES):
        return unpack(local, dest)
    _check_member(local.name, local, dest)
    shutil.move(local, dest / local.name)
    return 1


def _check_member(name: str, source: Path, dest: Path) -> None:
    """Refuse a downloaded file's name that escapes the collection folder, or one already there."""
    rel = PurePosixPath(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise AcquireError(f"{source.name}: refusing archive member outside the folder: {name!r}")
    if (dest / rel).exists():
        raise AcquireError(f"{source.name}: {name!r} is already in the collection (two files with one name)")


# Everything the zipfile / tarfile / gzip / bz2 / lzma readers raise on a malformed or truncated
# archive (BadZipFile, TarError, EOFError, zlib.error, gzip.BadGzipFile (an OSError), struct.error,
# NotImplementedError for an unsupported compression, RuntimeError for an encrypted zip member,
# UnicodeError, ValueError) and what writing the files can raise (OSError: name too long, ...).
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError,
    struct.error, OSError, UnicodeError, ValueError, NotImplementedError, RuntimeError, OverflowError,
)  # fmt: skip


def unpack(archive: Path, dest: Path) -> int:
    """Unpack a .zip / .tar / .tar.gz / .tgz into ``dest``; return how many files it added.

    Only regular files are written (folders are made as their files need them). The archive is
    refused with an ``AcquireError`` naming it, and ``dest`` is left as it was, when it is
    unreadable or corrupt, or when a member: lies outside ``dest`` (absolute, a drive, a ``..``
    part; ``\\`` counts as a separator), has an empty name or a NUL, is a link, device or fifo,
    repeats the name of another member once normalised (``a//b``, ``./a/b`` and ``a/b`` are one
    file), is both a file and a folder, or lands on a name already in ``dest``. All but corruption
    found while reading a member's data are checked before anything is written.
    """
    written: list[Path] = []
    made: list[Path] = []
    current = None  # the member being written, for the message
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for rel, info in _plan(archive, dest, [_zip_member(archive, m) for m in zf.infolist()]):
                    current = info.filename
                    with zf.open(info) as src:
                        _write(src, dest, rel, written, made)
        else:
            with tarfile.open(archive) as tf:
                for rel, info in _plan(archive, dest, [_tar_member(archive, m) for m in tf.getmembers()]):
                    current = info.name
                    src = tf.extractfile(info)
                    if src is None:  # only regular files get here
                        raise AcquireError(f"{archive.name}: member {info.name!r} has no data")
                    with src:
                        _write(src, dest, rel, written, made)
    except BaseException as exc:
        for path in reversed(written):
            path.unlink(missing_ok=True)
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(exc, AcquireError) or not isinstance(exc, _ARCHIVE_ERRORS):
            raise
        what = "unreadable or corrupt archive" if current is None else f"cannot unpack member {current!r}"
        raise AcquireError(f"{archive.name}: {what} ({type(exc).__name__}: {exc})") from exc
    return len(written)


def _zip_member(archive: Path, info: zipfile.ZipInfo) -> tuple[str, str, object]:
    """(kind, name, info) of a zip member; kind is "file" or "dir" (links and devices refused)."""
    name = info.filename
    if name.endswith(("/", "\\")):
        return "dir", name, info
    mode = info.external_attr >> 16
    if info.create_system == 3 and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
        kind = "link" if stat.S_ISLNK(mode) else "folder" if stat.S_ISDIR(mode) else "special file"
        raise AcquireError(f"{archive.name}: refusing archive member {name!r}: a {kind}, not a regular file")
    return "file", name, info


def _tar_member(archive: Path, info: tarfile.TarInfo) -> tuple[str, str, object]:
    """(kind, name, info) of a tar member; kind is "file" or "dir" (links and devices refused)."""
    if info.isfile():
        return "file", info.name, info
    if info.isdir():
        return "dir", info.name, info
    kind = (
        f"link to {info.linkname!r}" if info.issym() or info.islnk()
        else "device" if info.ischr() or info.isblk()
        else "fifo" if info.isfifo()
        else f"member of type {info.type!r}"
    )  # fmt: skip
    raise AcquireError(f"{archive.name}: refusing archive member {info.name!r}: a {kind}, not a regular file")


def _normalise(archive: Path, name: str) -> PurePosixPath:
    """The member's path relative to the folder: ``\\`` read as ``/``, ``.`` and empty parts dropped."""
    if "\x00" in name:
        raise AcquireError(f"{archive.name}: refusing archive member with a NUL in its name: {name!r}")
    posix = name.replace("\\", "/")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if posix.startswith("/") or PureWindowsPath(name).drive or ".." in parts:
        raise AcquireError(f"{archive.name}: refusing archive member outside the folder: {name!r}")
    return PurePosixPath(*parts)


def _plan(archive: Path, dest: Path, members: list[tuple[str, str, object]]) -> list[tuple[PurePosixPath, object]]:
    """The (relative path, member) of each file to write, once every member passed the checks."""
    files: dict[PurePosixPath, tuple[str, object]] = {}
    for kind, name, info in members:
        rel = _normalise(archive, name)
        if kind == "dir":
            continue
        if rel == PurePosixPath():
            raise AcquireError(f"{archive.name}: refusing archive member with an empty name: {name!r}")
        if rel in files:
            first = files[rel][0]
            raise AcquireError(
                f"{archive.name}: member {name!r} repeats {first!r} (both are {str(rel)!r}): "
                "refusing the archive (two files with one name)"
            )
        files[rel] = (name, info)
    folders = {parent for rel in files for parent in rel.parents if parent != PurePosixPath()}
    for rel, (name, _) in files.items():
        if rel in folders:
            raise AcquireError(f"{archive.name}: member {name!r} is both a file and a folder of other members")
        try:
            taken = (dest / rel).exists() or (dest / rel).is_symlink()
            blocked = [p for p in rel.parents if p.parts and (dest / p).exists() and not (dest / p).is_dir()]
        except OSError as exc:  # a name too long for the file system, ...
            raise AcquireError(f"{archive.name}: member {name!r} cannot be a file here: {exc.strerror or exc}") from exc
        if taken:
            raise AcquireError(f"{archive.name}: {name!r} is already in the collection (two files with one name)")
        if blocked:
            raise AcquireError(f"{archive.name}: {name!r} needs folder {str(blocked[0])!r}, a file in the collection")
    return [(rel, info) for rel, (_, info) in files.items()]


def _write(src, dest: Path, rel: PurePosixPath, written: list[Path], made: list[Path]) -> None:
    """Copy one member to ``dest / rel``, never over an existing file; record what it created."""
    out = dest / rel
    for folder in reversed(out.parents[: len(rel.parts) - 1]):
        if not folder.is_dir():
            folder.mkdir()
            made.append(folder)
    with open(out, "xb") as fh:
        written.append(out)
        shutil.copyfileobj(src, fh, CHUNK)
