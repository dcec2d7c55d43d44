"""Scale check of the data half: ingest and shard time per image and peak memory as the
collection grows (a benchmark, not a test).

A collection of distinct images is generated from the shipped T91 and BSD200 (a random crop of
128-256 px from those at least 128 px on a side, a flip and rot90, a per-channel gain and offset, and the image's index written into
its first pixel so that no two are the same pixels), never committed: it lives in a work folder.
For each ``--sizes`` entry a fresh process runs the real ``decode_all`` (ingest's work) and
``write_split`` (sr_x4's train shards) on the first N images (plus Set5 as val), on the data
engine (``--engine``, Ray by default: Ray is started first and timed apart), and reports:

- seconds per image for ingest and for shard (linear growth: the same per image at every size);
- peak memory: this process (the flow's side: VmHWM), the largest single Ray worker, and the
  largest sum over the workers at one moment (sampled every 0.2 s), per phase (flat: the same at
  every size).

    .venv/bin/python benchmarks/scale.py                    # 1000 and 5000 images
    .venv/bin/python benchmarks/scale.py --sizes 200,1000 --engine local

The table goes to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ending, load_average, progress as _progress  # benchmarks/common.py: run as scripts, this folder is on sys.path

for _key, _value in {"NO_ALBUMENTATIONS_UPDATE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TASK = "sr_x4"
LINEAR, FLAT = 1.25, 1.25
MIN_SIDE = 128  # the generated images' smallest side: above every default task's patch  # the largest size against the smallest: within these ratios


def progress(msg: str) -> None:
    _progress(msg, "scale")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Ingest and shard time per image and peak memory at growing collection "
                                "sizes, on a generated collection. Table on stdout, progress on stderr.")
    p.add_argument("--sizes", default="1000,5000", help="collection sizes, comma-separated (default: %(default)s)")
    p.add_argument("--engine", choices=["ray", "local"], default="ray", help="data.engine (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="data.workers: a local Ray's CPUs, 0 = all (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="the generated collection's seed (default: 0)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for the collection and outputs (kept); default: a temporary folder removed at the end")
    p.add_argument("--datasets", type=Path, default=None,
                   help="datasets folder with T91/HR, BSD200/HR, Set5/HR (default: $PERCEPT_DATASETS, else ../shared/datasets)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one size, in a fresh process
    args = p.parse_args(argv)
    args.size_list = sorted({int(x) for x in args.sizes.split(",") if x.strip()})
    if not args.size_list or min(args.size_list) < 1:
        p.error("--sizes: positive integers")
    return args


# --- the collection -----------------------------------------------------------------------------


def generate(count: int, folder: Path, datasets: Path, seed: int) -> None:
    """``count`` distinct PNGs in ``folder`` (kept between sizes: the first N are a prefix)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.png")))
    if have >= count:
        return
    images = []  # every source at least MIN_SIDE on a side, so that every crop is
    for path in sorted(p for s in ("T91", "BSD200") for p in (datasets / s / "HR").glob("*.png")):
        with Image.open(path) as img:
            if min(img.size) >= MIN_SIDE:
                images.append(np.asarray(img.convert("RGB")))
    for i in range(have, count):
        image = images[i % len(images)]
        rng = np.random.default_rng((seed, i))
        side = min(int(rng.integers(MIN_SIDE, 2 * MIN_SIDE + 1)), *image.shape[:2])
        y, x = int(rng.integers(0, image.shape[0] - side + 1)), int(rng.integers(0, image.shape[1] - side + 1))
        crop = np.rot90(image[y : y + side, x : x + side], int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        shifted = crop * rng.uniform(0.8, 1.2, 3) + rng.uniform(-20, 20, 3)
        out = np.clip(shifted, 0, 255).astype(np.uint8)
        out[0, 0] = (i & 255, (i >> 8) & 255, (i >> 16) & 255)  # the index: no two images alike
        Image.fromarray(out).save(folder / f"g{i:07d}.png", compress_level=1)
        if (i + 1) % 1000 == 0:
            progress(f"generated {i + 1}/{count}")


# --- one size, in its own process --------------------------------------------------------------


class MemorySampler:
    """Peak RSS of Ray's worker processes (``ray::`` in their command line), sampled in a thread."""

    def __init__(self, every: float = 0.2):
        self.every, self.worker_max, self.workers_sum = every, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            rss = []
            for proc in psutil.process_iter(["cmdline", "memory_info"]):
                cmd = proc.info.get("cmdline") or []
                if cmd and cmd[0].startswith("ray::") and proc.info.get("memory_info"):
                    rss.append(proc.info["memory_info"].rss)
            if rss:
                self.worker_max, self.workers_sum = max(self.worker_max, max(rss)), max(self.workers_sum, sum(rss))
            self._stop.wait(self.every)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


def _status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return 0


def run_size(args: argparse.Namespace, datasets: Path, work: Path) -> dict:
    import yaml

    from pipelines.common.params import parse_config
    from pipelines.services.engine import data_engine, init_ray, stop_ray
    from pipelines.data.manifest import MANIFEST_FIELDS, read_manifest, write_csv
    from pipelines.stages.ingest import decode_all, list_source
    from pipelines.stages.shard import image_jobs, write_split

    count = args.child
    train = work / f"train-{count}"
    train.mkdir()
    for path in sorted((work / "collection").glob("*.png"))[:count]:
        os.symlink(path, train / path.name)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["ingest"]["sources"] = [{"uri": str(train), "split": "train"}, {"uri": str(datasets / "Set5" / "HR"), "split": "val"}]
    raw["ingest"]["follow_links"] = True  # the links point into the collection folder
    raw["tasks"] = {TASK: raw["tasks"][TASK]}
    raw["train"]["tasks"] = [TASK]
    raw["compare"] = {}  # its sheet names models this benchmark does not train
    raw["data"].update(engine=args.engine, workers=args.workers)
    cfg = parse_config(raw, source="scale benchmark")
    out = work / f"out-{count}"
    (out / "manifest" / "images").mkdir(parents=True)
    (out / "shards").mkdir()

    t0 = time.perf_counter()
    started = args.engine == "ray" and init_ray(cfg, num_cpus=args.workers or None)
    figures: dict = {"images": count, "start_s": time.perf_counter() - t0}
    try:
        candidates = [c for s in cfg.ingest.sources for c in list_source(s, cfg)]
        base = _status("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")  # reset this process's high-water mark
        with MemorySampler() as mem:
            t1 = time.perf_counter()
            accepted, rejects = decode_all.fn(candidates, cfg, out / "manifest" / "images")
            figures["ingest_s"] = time.perf_counter() - t1
        figures["ingest_mem"] = {"flow": _status("VmHWM") - base, "worker": mem.worker_max, "workers": mem.workers_sum}
        manifest = out / "manifest" / "manifest.csv"
        write_csv(manifest, MANIFEST_FIELDS, accepted)
        jobs = image_jobs(TASK, cfg, read_manifest(manifest), manifest.parent, "train")
        base = _status("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")
        with MemorySampler() as mem, data_engine(cfg) as mapper:
            t2 = time.perf_counter()
            shards = write_split.fn(jobs, out / "shards", "train", cfg, mapper)
            figures["shard_s"] = time.perf_counter() - t2
        figures["shard_mem"] = {"flow": _status("VmHWM") - base, "worker": mem.worker_max, "workers": mem.workers_sum}
    finally:
        if started:
            stop_ray()
    figures["accepted_train"] = sum(r.split == "train" for r in accepted)
    figures["rejects"] = [f"{r.source_uri} ({r.reason})" for r in rejects][:5]
    figures["samples"] = sum(s["samples"] for s in shards)
    figures["expected_samples"] = count * cfg.task(TASK).patches_per_image
    return figures


# --- the report --------------------------------------------------------------------------------


def report(args, rows: list[dict], elapsed: float) -> None:
    mb = 1e6
    out = [f"percept scale check: ingest + {TASK} shard of a generated collection, engine {args.engine}, "
           f"{os.cpu_count()} cores", ""]
    out.append(f"   {'images':>6}  {'ray start s':>11}  {'ingest s':>8}  {'ms/img':>6}  {'shard s':>7}  {'ms/img':>6}  "
               f"{'samples/s':>9}  {'peak MB: flow / worker / all workers (ingest | shard)':<52}  checks")
    for r in rows:
        im, sh = r["ingest_mem"], r["shard_mem"]
        ok = r["accepted_train"] == r["images"] and r["samples"] == r["expected_samples"]
        out.append(f"   {r['images']:>6}  {r['start_s']:>11.1f}  {r['ingest_s']:>8.1f}  {1e3 * r['ingest_s'] / r['images']:>6.1f}  "
                   f"{r['shard_s']:>7.1f}  {1e3 * r['shard_s'] / r['images']:>6.1f}  {r['samples'] / r['shard_s']:>9.0f}  "
                   f"{im['flow'] / mb:>5.0f} / {im['worker'] / mb:>4.0f} / {im['workers'] / mb:>5.0f} | "
                   f"{sh['flow'] / mb:>5.0f} / {sh['worker'] / mb:>4.0f} / {sh['workers'] / mb:>5.0f}       "
                   f"{'ok' if ok else 'MISMATCH ' + json.dumps(r['rejects'])}")
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        out.append("")
        out.append(f"   {large['images']} against {small['images']} images ({large['images'] / small['images']:.0f}x the input):")
        for phase in ("ingest", "shard"):
            ratio = (large[f"{phase}_s"] / large["images"]) / (small[f"{phase}_s"] / small["images"])
            out.append(f"   {phase} time per image x{ratio:.2f}: {'linear' if ratio <= LINEAR else 'GROWS FASTER THAN LINEAR'}")
            for who in ("flow", "worker", "workers"):
                a, b = small[f"{phase}_mem"][who], large[f"{phase}_mem"][who]
                if not a and not b:
                    continue
                ratio = b / max(a, 1)
                verdict = "flat" if ratio <= FLAT or b - a < 50 * mb else "GROWS"
                out.append(f"   {phase} peak memory, {who}: {a / mb:.0f} -> {b / mb:.0f} MB (x{ratio:.2f}): {verdict}")
        out.append(f"   (linear: time per image within x{LINEAR}; flat: peak within x{FLAT} or 50 MB)")
    out.append("")
    out.extend(ending(args.load_start, elapsed))
    print("\n".join(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pipelines.common.paths import Paths

    datasets = (args.datasets or Paths(ROOT).datasets()).resolve()
    if args.child:
        print(json.dumps(run_size(args, datasets, args.workdir)), flush=True)
        return 0
    start, args.load_start = time.perf_counter(), load_average()
    for sub in ("T91", "BSD200", "Set5"):
        if not (datasets / sub / "HR").is_dir():
            print(f"error: {datasets / sub / 'HR'} not found (set $PERCEPT_DATASETS or pass --datasets)", file=sys.stderr)
            return 2
    work, cleanup = (args.workdir.resolve(), False) if args.workdir else (Path(tempfile.mkdtemp(prefix="percept-scale-")), True)
    work.mkdir(parents=True, exist_ok=True)
    try:
        progress(f"generating {max(args.size_list)} images in {work / 'collection'}")
        generate(max(args.size_list), work / "collection", datasets, args.seed)
        rows = []
        for count in args.size_list:
            for stale in (work / f"train-{count}", work / f"out-{count}"):
                shutil.rmtree(stale, ignore_errors=True)
            progress(f"{count} images: ingest and shard in a fresh process")
            cmd = [sys.executable, __file__, "--child", str(count), "--workdir", str(work), "--engine", args.engine,
                   "--workers", str(args.workers), "--datasets", str(datasets)]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                print(f"error: the {count}-image run failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            progress(f"{count} images: ingest {rows[-1]['ingest_s']:.1f} s, shard {rows[-1]['shard_s']:.1f} s")
        report(args, rows, time.perf_counter() - start)
    finally:
        if cleanup:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
