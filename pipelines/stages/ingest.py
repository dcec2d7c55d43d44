"""The ``ingest`` flow: raw collections -> validated, de-duplicated manifest.

Sources (params ``ingest.sources``) are local folders, globs, or ``s3://bucket/prefix`` URIs.
This process lists the sources; the data engine's workers (Ray tasks by default, on any node:
pipelines/services/engine.py, pipelines/data/validate.py) fetch and decode every file fully, S3 objects
included; accepted images come back oriented, converted to RGB and encoded as PNG, and are
written under ``data/manifest/images/`` as they arrive, in listing order; rejects are listed with
their reason. Exact duplicates (same decoded pixels) are kept once, globally, preferring a val
copy so that no validation image leaks into training. Outputs replace the old ones only once
complete.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from tqdm import tqdm

from pipelines.common.errors import UserError
from pipelines.common.fsutil import staging_dir
from pipelines.common.paths import Paths
from pipelines.common.schema import Config, Source
from pipelines.data.manifest import MANIFEST_FIELDS, REJECT_FIELDS, ManifestRow, RejectRow, write_csv
from pipelines.data.validate import Accepted, Candidate, Validator
from pipelines.services import s3 as s3lib
from pipelines.services.engine import data_engine
from training.images import DecodeLimits, Rejected, RejectReason

log = logging.getLogger(__name__)


def list_source(source: Source, cfg: Config) -> list[Candidate]:
    """Every file a source names, in a stable order; dot-files, links that leave the source
    folder (unless ``ingest.follow_links``) and non-files are listed as refused, with a reason."""
    if s3lib.is_s3(source.uri):
        loc = s3lib.S3Uri.parse(source.uri)
        s3 = s3lib.client(cfg.s3, retries=cfg.ingest.download_retries)
        prefix = loc.key.rstrip("/")
        label = PurePosixPath(prefix).name or loc.bucket
        out = []
        for uri, size in s3lib.list_objects(s3, source.uri):
            rel = uri[len(f"s3://{loc.bucket}/") :][len(prefix) :].lstrip("/")
            out.append(Candidate(uri, source.split, label, rel, size, _hidden(rel)))
        return sorted(out)
    path = Path(source.uri)
    if path.is_dir():
        base, files = path, _walk(path)
    elif glob.has_magic(source.uri):
        base = Path(_glob_base(source.uri))
        files = [Path(p) for p in glob.glob(source.uri, recursive=True) if not Path(p).is_dir() or Path(p).is_symlink()]
    else:
        raise FileNotFoundError(f"ingest source {source.uri!r} is neither a folder, a glob nor an s3:// URI")
    root = base.resolve()
    out = []
    for p in sorted(files):
        rel = p.relative_to(base).as_posix()
        refused = _hidden(rel) or _refuse_entry(p, root, cfg.ingest.follow_links)
        out.append(Candidate(str(p), source.split, base.name or "root", rel, -1, refused))
    return out


def _walk(base: Path) -> list[Path]:
    """Every entry below ``base`` that is not a real folder (files, links, FIFOs...); links to
    folders are listed, not descended, so a link loop cannot run forever."""
    found = []
    for folder, dirs, files in os.walk(base, followlinks=False):
        found += [Path(folder, d) for d in dirs if Path(folder, d).is_symlink()]
        found += [Path(folder, f) for f in files]
    return found


def _hidden(rel: str) -> tuple[str, str] | None:
    parts = PurePosixPath(rel).parts
    hidden = next((part for part in parts if part.startswith(".")), None)
    return (RejectReason.HIDDEN.value, f"{hidden!r} is hidden (a dot-name): skipped") if hidden else None


def _refuse_entry(p: Path, root: Path, follow_links: bool) -> tuple[str, str] | None:
    """Why a listed path is not read, or None: it must be (a link to) a regular file inside the source."""
    try:  # every path, not just links: a glob may pass through a linked folder
        target = p.resolve(strict=True)
    except RuntimeError:
        return RejectReason.UNREADABLE.value, "link loop"
    except FileNotFoundError:
        return RejectReason.UNREADABLE.value, "broken link"
    except OSError as exc:
        return RejectReason.UNREADABLE.value, exc.strerror or str(exc)
    if not follow_links and not target.is_relative_to(root):
        return (RejectReason.LINK_OUTSIDE_SOURCE.value,
                f"links to {target}, outside {root} (ingest.follow_links: true reads it)")
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        return RejectReason.UNREADABLE.value, exc.strerror or str(exc)
    if not stat.S_ISREG(mode):
        kind = "a folder (links to folders are not followed)" if stat.S_ISDIR(mode) else "not a regular file"
        return RejectReason.NOT_A_FILE.value, kind
    return None


def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    parts = PurePosixPath(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return str(PurePosixPath(*fixed)) if fixed else "."


def image_id(c: Candidate) -> str:
    stem = PurePosixPath(c.rel).with_suffix("").as_posix()
    # Flat, dot-free ids: WebDataset splits a sample key from its extension at the first dot.
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{c.label}_{stem.replace('/', '_')}")


@task(name="list-sources", retries=2, retry_delay_seconds=[1, 4], cache_policy=NO_CACHE)
def list_all(cfg: Config) -> list[Candidate]:
    candidates: list[Candidate] = []
    for source in cfg.ingest.sources:
        found = list_source(source, cfg)
        log.info("%s (%s): %d files", source.uri, source.split, len(found))
        candidates.extend(found)
    return candidates


@task(name="decode-and-validate", cache_policy=NO_CACHE)
def decode_all(candidates: list[Candidate], cfg: Config, images_dir: Path) -> tuple[list[ManifestRow], list[RejectRow]]:
    """Fetch and decode every candidate on the data engine (pipelines/services/engine.py); each accepted
    image comes back as PNG bytes and is written at once, so this process holds no collection."""
    limits = {split: DecodeLimits.from_config(cfg.ingest, cfg.largest_patch if split == "train" else cfg.ingest.min_val_side)
              for split in ("train", "val")}
    validator = Validator(limits, cfg.s3, cfg.ingest.download_retries, os.getcwd())
    # A worker holds at most one file and its decode at a time: Ray runs no more than memory allows.
    memory = cfg.ingest.max_bytes + cfg.ingest.max_decode_bytes
    decoded = []
    with data_engine(cfg) as mapper:
        results = mapper(validator, candidates, memory=memory)
        for index, (c, result) in enumerate(tqdm(zip(candidates, results), total=len(candidates), desc="ingest", unit="img")):
            if isinstance(result, Accepted):
                staged = images_dir / f".{index}.png.part"  # renamed to its id, or removed, by dedupe_and_write
                staged.write_bytes(result.png)
                result = Decoded(result.sha256, result.width, result.height, staged, result.channels)
            decoded.append((c, result))
    return dedupe_and_write(decoded, images_dir)


@dataclass(frozen=True)
class Decoded:
    sha256: str
    width: int
    height: int
    staged: Path  # the PNG, written under a temp name
    channels: int


def dedupe_and_write(decoded, images_dir: Path) -> tuple[list[ManifestRow], list[RejectRow]]:
    # Val first: a picture present in both splits must stay out of training.
    order = sorted(range(len(decoded)), key=lambda i: (decoded[i][0].split != "val", i))
    accepted: list[ManifestRow] = []
    rejects: list[RejectRow] = []
    kept_by_sha: dict[str, str] = {}
    used_ids: set[str] = set()
    for i in order:
        c, result = decoded[i]
        if isinstance(result, Rejected):
            rejects.append(RejectRow(c.uri, c.split, result.reason.value, result.detail))
            continue
        if result.sha256 in kept_by_sha:
            result.staged.unlink()
            rejects.append(RejectRow(c.uri, c.split, RejectReason.DUPLICATE.value, f"same pixels as {kept_by_sha[result.sha256]}"))
            continue
        ident = image_id(c)
        if ident in used_ids:  # e.g. a.png and a.jpg side by side
            ident = f"{ident}-{result.sha256[:8]}"
        used_ids.add(ident)
        kept_by_sha[result.sha256] = ident
        result.staged.rename(images_dir / f"{ident}.png")
        accepted.append(ManifestRow(ident, c.uri, result.sha256, result.width, result.height, c.split,
                                    f"images/{ident}.png", result.channels))
    accepted.sort(key=lambda r: (r.split, r.id))
    rejects.sort(key=lambda r: (r.split, r.source_uri))
    return accepted, rejects


class NothingUsable(UserError, ValueError):
    """Every image of a split that the sources name was rejected."""


def check_usable(cfg: Config, accepted: list[ManifestRow], rejects: list[RejectRow]) -> None:
    """Refuse a manifest with an empty split that the sources ask for, saying why in user terms."""
    for split in sorted({s.split for s in cfg.ingest.sources}):
        if any(r.split == split for r in accepted):
            continue
        why = Counter(r.reason for r in rejects if r.split == split)
        sources = ", ".join(s.uri for s in cfg.ingest.sources if s.split == split)
        if not why:
            raise NothingUsable(f"ingest: the {split} sources ({sources}) hold no files")
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(why.items(), key=lambda kv: (-kv[1], kv[0])))
        hint = ""
        if why.get(RejectReason.TOO_SMALL.value):
            side = cfg.largest_patch if split == "train" else cfg.ingest.min_val_side
            setting = "the largest tasks.*.patch_size" if split == "train" else "ingest.min_val_side"
            hint = f"; every {split} image must be at least {side} px on a side ({setting})"
        n = sum(why.values())
        files = f"the one {split} file" if n == 1 else f"all {n} {split} files"
        raise NothingUsable(f"ingest: no {split} image left: {files} from {sources} "
                            f"{'was' if n == 1 else 'were'} rejected ({reasons}){hint}. The previous manifest is kept.")


def summarise(accepted: list[ManifestRow], rejects: list[RejectRow]) -> list[dict]:
    rows = [{"split": s, "outcome": "accepted", "count": n} for s, n in sorted(Counter(r.split for r in accepted).items())]
    reasons = Counter((r.split, r.reason) for r in rejects)
    rows += [{"split": s, "outcome": f"rejected: {why}", "count": n} for (s, why), n in sorted(reasons.items())]
    return rows


@flow(name="ingest", log_prints=True)
def ingest_flow(cfg: Config, paths: Paths = Paths()) -> dict[str, int]:
    """Validate and de-duplicate every source into data/manifest/ (manifest, rejects, images)."""
    candidates = list_all(cfg)
    with staging_dir(paths.manifest_dir) as tmp:
        (tmp / "images").mkdir()
        accepted, rejects = decode_all(candidates, cfg, tmp / "images")
        for r in rejects:
            log.warning("rejected %s (%s): %s", r.source_uri, r.reason, r.detail)
        check_usable(cfg, accepted, rejects)  # the old manifest stays if nothing is left to train on
        write_csv(tmp / paths.manifest.name, MANIFEST_FIELDS, accepted)
        write_csv(tmp / paths.rejects.name, REJECT_FIELDS, rejects)
    summary = summarise(accepted, rejects)
    create_table_artifact(key="ingest-summary", table=summary, description="Images accepted and rejected, by split")
    counts = {"accepted": len(accepted), "rejected": len(rejects)}
    print(f"ingest: {counts['accepted']} accepted, {counts['rejected']} rejected -> {paths.manifest}")
    return counts
