"""The ``ingest`` flow: raw collections -> validated, de-duplicated manifest.

Sources (params ``ingest.sources``) are local folders, globs, or ``s3://bucket/prefix`` URIs.
Every file is fetched and decoded fully; accepted images are oriented, converted to RGB and
stored as PNG under ``data/manifest/images/``; rejects are listed with their reason. Exact
duplicates (same decoded pixels) are kept once, preferring a val copy so that no validation
image leaks into training. Outputs replace the old ones only once complete.
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_table_artifact
from tqdm import tqdm

from pipelines import s3 as s3lib
from pipelines.config import Config, Source
from pipelines.fsutil import staging_dir
from pipelines.images import Rejected, RejectReason, decode_image, encode_png, pixel_sha256
from pipelines.paths import Paths

log = logging.getLogger(__name__)

MANIFEST_FIELDS = ["id", "source_uri", "sha256", "width", "height", "split", "path", "source_channels"]
REJECT_FIELDS = ["source_uri", "split", "reason", "detail"]


@dataclass(frozen=True, order=True)
class Candidate:
    uri: str
    split: str
    label: str  # the source's name, e.g. T91
    rel: str  # path below the source, e.g. HR/t1.png


@dataclass(frozen=True)
class ManifestRow:
    id: str
    source_uri: str
    sha256: str
    width: int
    height: int
    split: str
    path: str
    source_channels: int  # 1 for gray sources: SR benchmarks score those on gray values, not Y


@dataclass(frozen=True)
class RejectRow:
    source_uri: str
    split: str
    reason: str
    detail: str


def list_source(source: Source, cfg: Config) -> list[Candidate]:
    """Every file a source names (hidden files skipped), in a stable order."""
    if s3lib.is_s3(source.uri):
        loc = s3lib.S3Uri.parse(source.uri)
        s3 = s3lib.client(cfg.s3, retries=cfg.ingest.download_retries)
        prefix = loc.key.rstrip("/")
        label = PurePosixPath(prefix).name or loc.bucket
        return sorted(
            Candidate(uri, source.split, label, uri[len(f"s3://{loc.bucket}/") :][len(prefix) :].lstrip("/"))
            for uri, _ in s3lib.list_objects(s3, source.uri)
            if not PurePosixPath(uri).name.startswith(".")
        )
    path = Path(source.uri)
    if path.is_dir():
        files, base = [p for p in path.rglob("*") if p.is_file()], path
    elif glob.has_magic(source.uri):
        files = [Path(p) for p in glob.glob(source.uri, recursive=True) if Path(p).is_file()]
        base = Path(_glob_base(source.uri))
    else:
        raise FileNotFoundError(f"ingest source {source.uri!r} is neither a folder, a glob nor an s3:// URI")
    out = []
    for p in sorted(files):
        rel = p.relative_to(base).as_posix()
        if any(part.startswith(".") for part in PurePosixPath(rel).parts):
            continue
        out.append(Candidate(str(p), source.split, base.name or "root", rel))
    return out


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
    """Fetch and decode every candidate in parallel; write accepted images as PNG."""
    s3 = s3lib.client(cfg.s3, retries=cfg.ingest.download_retries) if any(s3lib.is_s3(c.uri) for c in candidates) else None
    min_train_side = cfg.largest_patch

    def check(c: Candidate):
        try:
            data = s3lib.read_object(s3, c.uri) if s3lib.is_s3(c.uri) else Path(c.uri).read_bytes()
        except OSError as exc:
            return c, Rejected(RejectReason.UNREADABLE, str(exc))
        min_side = min_train_side if c.split == "train" else cfg.ingest.min_val_side
        try:
            rgb, channels = decode_image(data, cfg.ingest.max_pixels, min_side)
        except Rejected as rej:
            return c, rej
        return c, (pixel_sha256(rgb), rgb.shape[1], rgb.shape[0], encode_png(rgb), channels)

    decoded = []
    with ThreadPoolExecutor(cfg.ingest.download_workers) as pool:
        for result in tqdm(pool.map(check, candidates), total=len(candidates), desc="ingest", unit="img"):
            decoded.append(result)
    return dedupe_and_write(decoded, images_dir)


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
        sha, width, height, png, channels = result
        if sha in kept_by_sha:
            rejects.append(RejectRow(c.uri, c.split, RejectReason.DUPLICATE.value, f"same pixels as {kept_by_sha[sha]}"))
            continue
        ident = image_id(c)
        if ident in used_ids:  # e.g. a.png and a.jpg side by side
            ident = f"{ident}-{sha[:8]}"
        used_ids.add(ident)
        kept_by_sha[sha] = ident
        (images_dir / f"{ident}.png").write_bytes(png)
        accepted.append(ManifestRow(ident, c.uri, sha, width, height, c.split, f"images/{ident}.png", channels))
    accepted.sort(key=lambda r: (r.split, r.id))
    rejects.sort(key=lambda r: (r.split, r.source_uri))
    return accepted, rejects


def write_csv(path: Path, fields: list[str], rows) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    path.write_text(buf.getvalue())


def read_manifest(path: Path) -> list[ManifestRow]:
    with open(path, newline="") as fh:
        return [
            ManifestRow(r["id"], r["source_uri"], r["sha256"], int(r["width"]), int(r["height"]), r["split"], r["path"],
                        int(r["source_channels"]))
            for r in csv.DictReader(fh)
        ]


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
        write_csv(tmp / paths.manifest.name, MANIFEST_FIELDS, accepted)
        write_csv(tmp / paths.rejects.name, REJECT_FIELDS, rejects)
    summary = summarise(accepted, rejects)
    create_table_artifact(key="ingest-summary", table=summary, description="Images accepted and rejected, by split")
    for r in rejects:
        log.warning("rejected %s (%s): %s", r.source_uri, r.reason, r.detail)
    counts = {"accepted": len(accepted), "rejected": len(rejects)}
    print(f"ingest: {counts['accepted']} accepted, {counts['rejected']} rejected -> {paths.manifest}")
    return counts
