"""Fuzzing ``pipelines.stages.acquire.unpack``: every archive is either unpacked inside the folder or refused
with an AcquireError that names it; no other exception escapes, and a refusal leaves the folder as it was.

Three properties, each over random archives (.zip, .tar, .tar.gz) built here:

- hostile member names (``..``, absolute, drive letters, backslashes, repeated after normalising,
  empty, NUL, unicode, over-long) and member kinds (folders, links, devices, fifos): what must be
  refused is, and what is unpacked is exactly the archive's regular files;
- archives of ordinary unique names: always unpacked, byte for byte;
- random byte mutations of such a valid archive (of the compressed stream, and of the tar inside a
  .tar.gz): refused or unpacked, never a stray BadZipFile / TarError / EOFError / zlib.error / ...

Derandomised and without an example database, so a run is the same on every machine.
"""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import tempfile
import warnings
import zipfile
from collections import Counter
from pathlib import Path, PureWindowsPath

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.stages.acquire import AcquireError, unpack

pytestmark = pytest.mark.unit

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FORMATS = ("zip", "tar", "tar.gz")
SEED = "seed.png"  # a file already in the folder before the archive is unpacked (when seeded)
SEED_BYTES = b"already here"

# --------------------------------------------------------------------------------------------
# strategies

HOSTILE = [
    "..", "../x", "a/../../x", "a/..", "a/../b", "/abs/x", "//x", "/", "", ".", "./", "./a", "a//b", "a/./b",
    "a\\..\\..\\x", "..\\x", "a\\b", "\\abs", "C:/x", "C:x", "c:\\x", "x\x00y", "\x00", "é/ü.png", "日本/語.png",
    "x" * 300, "d/" * 120 + "f", "a/", "a", "a/b", "a/b/", SEED, SEED + "/x", "a/b.png", "./a/b.png", "a//b.png",
    "line\nbreak", " ", "a/ b ",
]  # fmt: skip
SEGMENTS = st.one_of(
    st.sampled_from(["a", "b", ".", "..", "", "é", "\\", "x" * 256, "C:"]),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=6),
)
NAMES = st.one_of(
    st.sampled_from(HOSTILE),
    st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join),
    st.text(max_size=12),
)
CONTENT = st.binary(max_size=48)
KINDS = {"zip": ["file", "dir", "symlink"], "tar": ["file", "dir", "symlink", "hardlink", "fifo", "chrdev", "blkdev"]}


@st.composite
def hostile_members(draw, fmt: str) -> list[tuple[str, bytes, str, str]]:
    """(name, data, kind, link target) of each member; names come from a small pool, so they repeat."""
    pool = draw(st.lists(NAMES, min_size=1, max_size=5))
    every = KINDS["zip" if fmt == "zip" else "tar"]
    kinds = draw(st.sampled_from([["file"], ["file", "dir"], every]))  # often no link at all, to reach the other checks
    member = st.tuples(
        st.sampled_from(pool), CONTENT, st.sampled_from(kinds), st.sampled_from(pool + ["../../etc/passwd", "/etc"])
    )
    return draw(st.lists(member, max_size=6))


SAFE_PART = st.text(alphabet="abcxyz0-_.é", min_size=1, max_size=8).filter(lambda p: p not in (".", ".."))
SAFE_NAMES = st.lists(SAFE_PART, min_size=1, max_size=3).map("/".join)


@st.composite
def safe_members(draw) -> list[tuple[str, bytes, str, str]]:
    """Unique regular files none of which is a folder of another: a valid archive."""
    names = draw(st.lists(SAFE_NAMES, max_size=6, unique=True))
    names = [n for n in names if not any(o.startswith(n + "/") for o in names)]
    return [(name, draw(CONTENT), "file", "") for name in names]


# --------------------------------------------------------------------------------------------
# building and reading archives


def build(fmt: str, members: list[tuple[str, bytes, str, str]]) -> bytes:
    buf = io.BytesIO()
    if fmt == "zip":
        with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            warnings.simplefilter("ignore")  # "Duplicate name": wanted here
            for name, data, kind, target in members:
                info = zipfile.ZipInfo(name + "/" if kind == "dir" and not name.endswith("/") else name)
                if kind == "symlink":
                    info.external_attr = (stat.S_IFLNK | 0o777) << 16
                    data = target.encode()
                elif kind == "dir":
                    info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                    data = b""
                zf.writestr(info, data)
        return buf.getvalue()
    with tarfile.open(fileobj=buf, mode="w:gz" if fmt == "tar.gz" else "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, kind, target in members:
            info = tarfile.TarInfo(name)
            info.type = {
                "file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chrdev": tarfile.CHRTYPE,
                "blkdev": tarfile.BLKTYPE,
            }[kind]  # fmt: skip
            if kind == "file":
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            else:
                info.linkname = target if kind in ("symlink", "hardlink") else ""
                tf.addfile(info)
    return buf.getvalue()


def stored(archive: Path) -> list[tuple[str, str, bytes]]:
    """(name, kind, data) of each member as the standard library reads the archive back."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            out = []
            for info in zf.infolist():
                mode = info.external_attr >> 16
                kind = "dir" if info.filename.endswith(("/", "\\")) else "link" if stat.S_ISLNK(mode) else "file"
                out.append((info.filename, kind, zf.read(info) if kind == "file" else b""))
            return out
    with tarfile.open(archive) as tf:
        out = []
        for m in tf.getmembers():
            kind = "file" if m.isfile() else "dir" if m.isdir() else "special"
            out.append((m.name, kind, tf.extractfile(m).read() if kind == "file" else b""))
        return out


def parts(name: str) -> list[str]:
    """The documented rule: ``\\`` is a separator; empty and ``.`` parts are dropped."""
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def escapes(name: str) -> bool:
    return name.replace("\\", "/").startswith("/") or bool(PureWindowsPath(name).drive) or ".." in parts(name)


def must_refuse(members: list[tuple[str, str, bytes]], seeded: bool) -> str | None:
    """Why this archive has to be refused, or None when refusing it is not required."""
    seen = set()
    for name, kind, _ in members:
        if "\x00" in name:
            return "NUL"
        if escapes(name):
            return "escape"
        if kind not in ("file", "dir"):
            return "link or special file"
        if kind == "file":
            key = "/".join(parts(name))
            if not key:
                return "empty name"
            if key in seen:
                return "repeated name"
            if seeded and key == SEED:
                return "already in the folder"
            seen.add(key)
    return None


# --------------------------------------------------------------------------------------------
# the check every outcome must pass


def listing(folder: Path) -> dict[str, bytes | None]:
    """Relative path -> bytes (files) or None (folders) of everything below ``folder``."""
    return {p.relative_to(folder).as_posix(): (None if p.is_dir() else p.read_bytes()) for p in folder.rglob("*")}


def run_unpack(fmt: str, data: bytes, seeded: bool, expected: dict[str, bytes] | None = None):
    """Unpack ``data`` as a ``<fmt>`` archive into a fresh folder and check the outcome.

    Returns ("ok", count, files) or ("refused", message, None). ``expected`` (relative path ->
    bytes), when given, is what a successful unpacking must leave besides the seed file.
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive = root / f"archive.{fmt}"
        archive.write_bytes(data)
        dest = root / "dest"
        dest.mkdir()
        if seeded:
            (dest / SEED).write_bytes(SEED_BYTES)
        before = listing(dest)
        try:
            count = unpack(archive, dest)
        except AcquireError as err:
            message = str(err)
            assert archive.name in message and len(message) > len(archive.name) + 10, message
            assert listing(dest) == before, f"a refused archive changed the folder: {message}"
            assert sorted(p.name for p in root.iterdir()) == sorted([archive.name, "dest"])
            return "refused", message, None
        # Anything else (BadZipFile, TarError, EOFError, zlib.error, OSError, ...) fails the test here.
        assert sorted(p.name for p in root.iterdir()) == sorted([archive.name, "dest"]), "wrote beside the folder"
        inside = dest.resolve()
        files = {}
        for path in dest.rglob("*"):
            assert not path.is_symlink(), f"a link was extracted: {path}"
            assert path.is_dir() or path.is_file(), f"not a regular file: {path}"
            assert path.resolve().is_relative_to(inside), f"outside the folder: {path}"
            if path.is_file():
                files[path.relative_to(dest).as_posix()] = path.read_bytes()
        if seeded:
            assert files.pop(SEED) == SEED_BYTES
        assert count == len(files), f"returned {count}, {len(files)} files on disk"
        if expected is not None:
            assert files == expected
        return "ok", count, files


# --------------------------------------------------------------------------------------------
# the properties


@st.composite
def hostile_archives(draw):
    fmt = draw(st.sampled_from(FORMATS))
    return fmt, draw(hostile_members(fmt)), draw(st.booleans())


@SETTINGS
@given(hostile_archives())
@example(("zip", [("a/b.png", b"1", "file", ""), ("a//b.png", b"2", "file", "")], False))
@example(("tar.gz", [("a/b.png", b"1", "file", ""), ("./a/b.png", b"2", "file", "")], False))
@example(("zip", [("a\\..\\..\\x", b"1", "file", "")], False))
@example(("zip", [("a/../../x", b"1", "file", "")], False))
@example(("tar", [("ok", b"1", "file", ""), ("link", b"", "symlink", "../../etc/passwd")], False))
@example(("tar", [("ok", b"1", "file", ""), ("hard", b"", "hardlink", "ok")], False))
@example(("tar", [("fifo", b"", "fifo", ""), ("dev", b"", "chrdev", "")], False))
@example(("zip", [("ok", b"1", "file", ""), ("link", b"", "symlink", "/etc/passwd")], False))
@example(("tar", [("x" * 300, b"1", "file", "")], False))
@example(("tar", [("x\x00y", b"1", "file", "")], False))
@example(("zip", [("a", b"1", "file", ""), ("a/b", b"2", "file", "")], False))
@example(("zip", [(SEED, b"new", "file", "")], True))
@example(("tar", [(SEED + "/x", b"new", "file", "")], True))
def test_hostile_names_and_kinds(case):
    fmt, members, seeded = case
    data = build(fmt, members)
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / f"a.{fmt}"
        probe.write_bytes(data)
        members_read = stored(probe)
    reason = must_refuse(members_read, seeded)
    files = [(name, payload) for name, kind, payload in members_read if kind == "file"]
    expected = None if reason else {"/".join(parts(name)): payload for name, payload in files}
    outcome = run_unpack(fmt, data, seeded, expected)
    if reason:
        assert outcome[0] == "refused", f"should be refused ({reason}): {members_read}"
    if outcome[0] == "ok":
        assert Counter(outcome[2].values()) == Counter(payload for _, payload in files)


@SETTINGS
@given(st.sampled_from(FORMATS), safe_members(), st.booleans())
def test_valid_archives_unpack_exactly(fmt, members, seeded):
    expected = {name: data for name, data, _, _ in members}
    status, count, _ = run_unpack(fmt, build(fmt, members), seeded, expected)
    assert status == "ok" and count == len(members)


MUTATION = st.tuples(st.integers(0, 1 << 16), st.integers(0, 255))


@SETTINGS
@given(
    st.sampled_from(FORMATS + ("tar-in-gz",)),
    safe_members(),
    st.lists(MUTATION, min_size=1, max_size=6),
    st.one_of(st.none(), st.none(), st.integers(0, 1 << 16)),
    st.one_of(st.just(b""), st.just(b""), st.binary(min_size=1, max_size=16)),
    st.booleans(),
)
def test_mutated_archives(fmt, members, flips, cut, insert, seeded):
    """Random bytes replaced, the archive cut short, bytes inserted: refused or unpacked, nothing else."""
    inner = fmt == "tar-in-gz"  # mutate the tar, then compress it: fuzzes the tar headers, not just the gzip CRC
    fmt = "tar.gz" if inner else fmt
    data = bytearray(build("tar" if inner else fmt, members))
    for pos, value in flips:
        data[pos % len(data)] = value
    if insert:
        at = flips[0][0] % (len(data) + 1)
        data[at:at] = insert
    if cut is not None:
        del data[cut % (len(data) + 1) :]
    run_unpack(fmt, gzip.compress(bytes(data), mtime=0) if inner else bytes(data), seeded)
