"""Data benchmarks: how fast shards are built, and how fast pairs are read back (shards vs loose PNGs).

Everything is measured in one run on this machine and reported next to a baseline from the same
run (1 worker vs all cores; loose PNG files vs tar shards), so a noisy machine still gives a
meaningful ratio. Nothing under ``data/`` is touched: the manifest, shards and loose files are
built in a work folder (a temporary one, removed at the end, unless ``--workdir`` is given).

    .venv/bin/python benchmarks/data.py                  # defaults from params.yaml (sr_x4)
    .venv/bin/python benchmarks/data.py --patches-per-image 4 --repeats 5

1. Shard build: the sr_x4 train split of an ingested T91 manifest (Set5 as val), built with
   ``pipelines.shard.write_split`` through ``sample_mapper`` at 1 worker and at all cores.
   "steady" excludes the process pool's start-up (measured after a warm-up task per worker);
   "end to end" includes it, as ``percept shard`` pays it.
2. Read: the train pairs decoded to uint8 arrays (input and target) through a torch DataLoader
   (``batch_size=None``), from the shards via ``training.shards.pair_dataset`` and from the same
   PNG bytes written out as loose files (a map-style Dataset, PIL decode), at num_workers=2 and, as
   a reference without the worker-to-main transfer, 0. Workers are persistent and warmed up with
   one untimed pass, so worker start-up is not in the figures. "warm" reads
   from the page cache; "cold" evicts the files first (fsync + posix_fadvise DONTNEED on each of
   our own files; the host may still cache the virtual disk, so this is cold-ish).

The table goes to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ending import ending, load_average  # benchmarks/ending.py: run as scripts, this folder is on sys.path

# Quiet, offline defaults (as the CLI sets them); spawned pool workers inherit them.
for _key, _value in {"NO_ALBUMENTATIONS_UPDATE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]
TASK = "sr_x4"


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Shard build rate (1 worker vs all cores) and read rate (shards vs loose PNG files), "
        "measured in one run. Table on stdout, progress on stderr.",
    )
    p.add_argument("--patches-per-image", type=int, default=None,
                   help=f"train patches per image (default: tasks.{TASK}.patches_per_image in params.yaml)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed read passes per measurement, and shard builds per worker count; medians are printed (default: %(default)s)")
    p.add_argument("--build-repeats", type=int, default=None, help="shard builds per worker count (default: --repeats)")
    p.add_argument("--read-workers", type=_int_list, default=[2, 0],
                   help="DataLoader num_workers values for the read benchmark, comma-separated; 0 reads in the main "
                   "process, a reference without the worker-to-main transfer (default: 2,0)")
    p.add_argument("--no-cold", action="store_true", help="skip the cold page cache read passes")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for the manifest, shards and loose files (kept); default: a temporary folder removed at the end")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="settings file (default: %(default)s)")
    p.add_argument("--datasets", type=Path, default=None,
                   help="datasets folder holding T91/HR and Set5/HR (default: $PERCEPT_DATASETS, else ../shared/datasets)")
    args = p.parse_args(argv)
    if args.build_repeats is None:
        args.build_repeats = args.repeats
    if args.repeats < 1 or args.build_repeats < 1 or min(args.read_workers) < 0:
        p.error("--repeats and --build-repeats must be >= 1, --read-workers >= 0")
    if args.patches_per_image is not None and args.patches_per_image < 1:
        p.error("--patches-per-image must be >= 1")
    return args


def make_config(args: argparse.Namespace, datasets: Path):
    """params.yaml with the ingest sources pointed at the datasets folder and the patch count set."""
    import yaml

    from pipelines.config import parse_config

    raw = yaml.safe_load(args.params.read_text())
    raw["ingest"]["sources"] = [
        {"uri": str(datasets / "T91" / "HR"), "split": "train"},
        {"uri": str(datasets / "Set5" / "HR"), "split": "val"},
    ]
    if args.patches_per_image is not None:
        raw["tasks"][TASK]["patches_per_image"] = args.patches_per_image
    return parse_config(raw, source=str(args.params))


def ingest(cfg, manifest_dir: Path) -> Path:
    """The ingest flow's steps, called as plain functions (no Prefect engine)."""
    from pipelines.ingest import MANIFEST_FIELDS, decode_all, list_source, write_csv

    candidates = [c for s in cfg.ingest.sources for c in list_source(s, cfg)]
    (manifest_dir / "images").mkdir(parents=True)
    accepted, rejects = decode_all.fn(candidates, cfg, manifest_dir / "images")
    manifest = manifest_dir / "manifest.csv"
    write_csv(manifest, MANIFEST_FIELDS, accepted)
    progress(f"ingest: {len(accepted)} accepted, {len(rejects)} rejected of {len(candidates)} files")
    if rejects:
        progress("rejected: " + ", ".join(f"{r.source_uri} ({r.reason})" for r in rejects))
    return manifest


def build_once(cfg, jobs, folder: Path, workers: int) -> dict:
    """One build of the train split; times with and without the pool's start-up."""
    from dataclasses import replace

    from pipelines.shard import sample_mapper, write_split

    folder.mkdir(parents=True)
    t0 = time.perf_counter()
    with sample_mapper(workers) as mapper:
        # One cheap job per worker, so each spawned worker has imported its modules before timing.
        warm = [replace(jobs[i % len(jobs)], patches=1) for i in range(workers)]
        for _ in mapper(warm):
            pass
        t1 = time.perf_counter()
        shards = write_split.fn(jobs, folder, "train", cfg, mapper)
        t2 = time.perf_counter()
    t3 = time.perf_counter()
    return {"steady_s": t2 - t1, "total_s": t3 - t0, "startup_s": t1 - t0, "shards": shards}


def bench_build(cfg, jobs, work: Path, repeats: int) -> tuple[list[dict], tuple[Path, list[dict]]]:
    cores = os.cpu_count() or 1
    images, samples = len(jobs), sum(j.patches for j in jobs)
    rows, keep = [], None
    digests = {}
    for workers in sorted({1, cores}):
        runs = []
        for r in range(repeats):
            folder = work / f"shards-w{workers}-r{r}"
            progress(f"build: {images} images -> {samples} samples, {workers} worker(s), run {r + 1}/{repeats}")
            res = build_once(cfg, jobs, folder, workers)
            digests[folder] = [s["sha256"] for s in res["shards"]]
            runs.append(res)
            if keep is None:
                keep = (folder, res["shards"])
            else:
                shutil.rmtree(folder)
        steady = statistics.median(x["steady_s"] for x in runs)
        total = statistics.median(x["total_s"] for x in runs)
        rows.append({"workers": workers, "steady_s": steady, "total_s": total,
                     "startup_s": statistics.median(x["startup_s"] for x in runs),
                     "images": images, "samples": samples})
    if len({tuple(d) for d in digests.values()}) != 1:
        progress("WARNING: builds differ between worker counts (shards should be byte-identical)")
    return rows, keep


# --- read benchmark -------------------------------------------------------------------------


class LoosePairs:
    """A map-style torch Dataset over loose input/target PNG files, decoded with PIL."""

    def __init__(self, items: list[tuple[str, str, str]]):
        self.items = items  # (key, input path, target path)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        import numpy as np
        from PIL import Image

        key, inp, tgt = self.items[i]
        return {"key": key, "input": _load_rgb(inp, Image, np), "target": _load_rgb(tgt, Image, np)}


def _load_rgb(path: str, Image, np):
    with Image.open(path) as img:
        return np.array(img.convert("RGB"))  # as webdataset's "rgb8" decoder, plus our copy


def write_loose(urls: list[str], folder: Path) -> list[tuple[str, str, str]]:
    """The train samples' PNG bytes, unchanged, as one input and one target file per sample."""
    import tarfile

    folder.mkdir(parents=True)
    found: dict[str, dict[str, str]] = {}
    for url in urls:
        with tarfile.open(url) as tar:
            for m in tar:
                key, _, suffix = m.name.partition(".")
                if suffix not in ("input.png", "target.png"):
                    continue
                path = folder / m.name
                path.write_bytes(tar.extractfile(m).read())
                found.setdefault(key, {})[suffix] = str(path)
    return [(k, v["input.png"], v["target.png"]) for k, v in found.items()]


def evict(paths: list[str]) -> int:
    """Drop our files from the page cache (flushing first); returns how many were evicted."""
    n = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        finally:
            os.close(fd)
    return n


def timed_passes(loader, expected: int, repeats: int, files: list[str] | None) -> list[float]:
    """Seconds per full pass; the first (untimed) pass starts the persistent workers."""

    def one_pass() -> int:
        n = 0
        for sample in loader:
            if not (str(sample["input"].dtype).endswith("uint8") and sample["target"].ndim == 3):
                raise RuntimeError(f"unexpected sample: input {sample['input'].dtype}, target shape {tuple(sample['target'].shape)}")
            n += 1
        return n

    got = one_pass()
    if got != expected:
        raise RuntimeError(f"read {got} samples, expected {expected}")
    times = []
    for _ in range(repeats):
        if files is not None:
            evict(files)
        t0 = time.perf_counter()
        got = one_pass()
        times.append(time.perf_counter() - t0)
        if got != expected:
            raise RuntimeError(f"read {got} samples, expected {expected}")
    return times


def bench_read(shard_dir: Path, loose_dir: Path, repeats: int, worker_counts: list[int], cold: bool) -> list[dict]:
    import gc

    import torch
    from torch.utils.data import DataLoader

    from training.shards import pair_dataset, shard_urls

    torch.set_num_threads(1)
    urls = shard_urls(shard_dir, "train")
    items = write_loose(urls, loose_dir)
    n = len(items)
    loose_files = [p for _, i, t in items for p in (i, t)]
    sizes = {"shards": sum(os.path.getsize(u) for u in urls), "loose": sum(os.path.getsize(p) for p in loose_files)}
    counts = {"shards": len(urls), "loose": len(loose_files)}
    progress(f"read: {n} pairs; {len(urls)} shard files ({sizes['shards'] / 1e6:.1f} MB) vs "
             f"{len(loose_files)} loose files ({sizes['loose'] / 1e6:.1f} MB)")

    rows = []
    for workers in worker_counts:
        kw = dict(batch_size=None, num_workers=workers, persistent_workers=workers > 0)
        loaders = {
            "shards": (DataLoader(pair_dataset(urls), **kw), urls),
            "loose": (DataLoader(LoosePairs(items), shuffle=False, **kw), loose_files),
        }
        for cache in ("warm", "cold") if cold else ("warm",):
            for name, (loader, files) in loaders.items():
                progress(f"read: {name}, num_workers={workers}, {cache} cache, {repeats} timed pass(es) + 1 warm-up")
                times = timed_passes(loader, n, repeats, files if cache == "cold" else None)
                rows.append({"source": name, "workers": workers, "cache": cache, "median_s": statistics.median(times),
                             "times": times, "samples": n, "files": counts[name], "bytes": sizes[name]})
        del loaders, loader  # stops the persistent workers before the next worker count
        gc.collect()
    return rows


# --- report ---------------------------------------------------------------------------------


def report(cfg, build_rows: list[dict], read_rows: list[dict], args, elapsed: float) -> None:
    params = cfg.task(TASK)
    cores = os.cpu_count() or 1
    out = []
    out.append(f"percept data benchmark — {TASK}, T91 train ({build_rows[0]['images']} images x "
               f"{params.patches_per_image} patches = {build_rows[0]['samples']} samples, {params.patch_size}px targets), "
               f"{cores} cores, python {sys.version.split()[0]}")
    out.append("")
    out.append("1. shard build (write_split through sample_mapper; median of %d)" % args.build_repeats)
    out.append(f"   {'workers':>7}  {'images/s':>9}  {'samples/s':>9}  {'steady s':>8}  {'end-to-end s':>12}  {'pool start s':>12}")
    for r in build_rows:
        out.append(f"   {r['workers']:>7}  {r['images'] / r['steady_s']:>9.1f}  {r['samples'] / r['steady_s']:>9.1f}  "
                   f"{r['steady_s']:>8.2f}  {r['total_s']:>12.2f}  {r['startup_s']:>12.2f}")
    if len(build_rows) > 1:
        one, many = build_rows[0], build_rows[-1]
        out.append(f"   speed-up {many['workers']} workers / 1 worker: steady x{one['steady_s'] / many['steady_s']:.2f}, "
                   f"end to end x{one['total_s'] / many['total_s']:.2f}")
    else:
        out.append("   (one core only: no speed-up to report)")
    out.append("")
    out.append(f"2. read train pairs as uint8 arrays (torch DataLoader, batch_size=None; median of {args.repeats} passes)")
    out.append(f"   {'source':<7}  {'workers':>7}  {'cache':<5}  {'files':>5}  {'MB':>5}  {'samples/s':>9}  {'median s':>8}  passes s")
    by = {}
    for r in read_rows:
        by[(r["source"], r["workers"], r["cache"])] = r
        out.append(f"   {r['source']:<7}  {r['workers']:>7}  {r['cache']:<5}  {r['files']:>5}  {r['bytes'] / 1e6:>5.1f}  "
                   f"{r['samples'] / r['median_s']:>9.0f}  {r['median_s']:>8.3f}  "
                   + " ".join(f"{t:.3f}" for t in r["times"]))
    for workers in args.read_workers:
        for cache in ("warm", "cold"):
            if ("shards", workers, cache) in by:
                ratio = by[("loose", workers, cache)]["median_s"] / by[("shards", workers, cache)]["median_s"]
                out.append(f"   shards / loose, num_workers={workers}, {cache}: x{ratio:.2f}")
    out.append(f"   (a shard goes whole to one DataLoader worker: {read_rows[0]['files']} shard file(s); loose samples are "
               "dealt out one at a time. num_workers=0 decodes in the main process: no worker-to-main transfer)")
    if args.no_cold:
        out.append("   (cold cache passes skipped: --no-cold)")
    out.append("")
    out.extend(ending(args.load_start, elapsed))
    print("\n".join(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    args.load_start = load_average()
    from pipelines.ingest import read_manifest
    from pipelines.paths import Paths
    from pipelines.shard import image_jobs

    datasets = args.datasets or Paths(ROOT).datasets()
    for sub in ("T91/HR", "Set5/HR"):
        if not (datasets / sub).is_dir():
            print(f"error: {datasets / sub} not found (set $PERCEPT_DATASETS or pass --datasets)", file=sys.stderr)
            return 2
    cfg = make_config(args, datasets)

    if args.workdir is None:
        work, cleanup = Path(tempfile.mkdtemp(prefix="percept-bench-")), True
    else:
        work, cleanup = args.workdir.resolve(), False
        work.mkdir(parents=True, exist_ok=True)
        stale = [p for p in ("manifest", "loose") if (work / p).exists()] + [p.name for p in work.glob("shards-*")]
        if stale:
            print(f"error: {work} already holds {', '.join(stale)}; give an empty or new --workdir", file=sys.stderr)
            return 2
    progress(f"work folder {work}{' (temporary)' if cleanup else ''}")
    try:
        manifest = ingest(cfg, work / "manifest")
        jobs = image_jobs(TASK, cfg, read_manifest(manifest), manifest.parent, "train")
        build_rows, (shard_dir, shards) = bench_build(cfg, jobs, work, args.build_repeats)
        # shard_urls reads index.json, as the shard flow writes it (train split only here).
        import json

        from pipelines.shard import index_for

        (shard_dir / "index.json").write_text(json.dumps(index_for(TASK, cfg, shards, manifest)))
        read_rows = bench_read(shard_dir, work / "loose", args.repeats, args.read_workers, not args.no_cold)
        report(cfg, build_rows, read_rows, args, time.perf_counter() - start)
    finally:
        if cleanup:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
