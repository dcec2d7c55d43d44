"""Data benchmarks: how fast the data half builds on Ray, and how fast the train stream feeds a step.

Everything is measured in one run on this machine, each figure next to a baseline from the same
run, so a noisy machine still gives a meaningful ratio. Nothing under ``data/`` is touched: the
manifest and shards are built in a work folder (temporary, removed at the end, unless ``--workdir``).

    .venv/bin/python benchmarks/data.py                    # defaults from params.yaml (sr_x4)
    .venv/bin/python benchmarks/data.py --tflops 100,330,989 --seconds 5

1. Build: ingest (decode + validate + PNG) of T91 + BSD200 and Set5, and shard (cut + degrade +
   encode) of sr_x4's train split, on a local Ray of 1 and of 2 workers (``data.workers``), and in
   this process alone (``data.engine: local``, the baseline). Ray's start and its workers' first
   imports are timed apart ("start"), so images/s is the steady rate a large collection sees. The
   shards of every run are compared: they must be byte-identical.
2. Stream: ``training.shards.train_batches`` (resampled shards, shuffle buffer, batches of
   ``--batch``) read for ``--seconds`` after a warm-up, with 1 loader worker (one loader core; the
   batch crosses to this process through shared memory) and in this process (0 workers). "old" is
   the stream as it was before raw samples: PNG samples through webdataset's tar reader and
   ``decode("rgb8")``; "png" the PNG samples through the new reader; "raw" the ``.npy`` samples.
   Pairs/s and megapixels/s (target pixels) per loader core, and bytes on disk per sample.
3. GPU feed: the sr_x4 training step's FLOPs per sample (forward + backward, conv and matmul,
   counted by ``torch.utils.flop_counter``) at the stream's patch size, and for a GPU running at
   each ``--tflops`` the samples/s it would consume and the loader cores that takes at the
   measured per-core rate (raw and old). Set it against any GPU: its bf16 TFLOP/s times the
   share of peak the step reaches (``benchmarks/gpu.py`` measures that share on the card).

The table goes to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import count_flops, ending, ingest, load_average, progress, shard, with_feature_weights  # benchmarks/common.py: run as scripts, this folder is on sys.path

for _key, _value in {"NO_ALBUMENTATIONS_UPDATE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                     "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(_key, _value)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TASK = "sr_x4"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Build rate on Ray (1 and 2 workers vs this process), the train "
                                "stream's pairs/s per loader core (old PNG vs raw samples) and the loader cores a "
                                "GPU needs. Table on stdout, progress on stderr.")
    p.add_argument("--ray-workers", type=_int_list, default=[1, 2],
                   help="local Ray sizes (CPUs) to build with, comma-separated (default: 1,2)")
    p.add_argument("--seconds", type=float, default=4.0, help="timed reading per stream measurement (default: %(default)s)")
    p.add_argument("--batch", type=int, default=32, help="stream batch size (default: %(default)s)")
    p.add_argument("--tflops", type=_int_list, default=[100, 330, 989],
                   help="GPU throughputs (TFLOP/s actually reached by the step) to size the loader for (default: "
                   "100,330,989: an H100's dense bf16 peak is 989, a third of it 330)")
    p.add_argument("--train-sets", default="T91,BSD200", help="datasets ingested as train (default: %(default)s)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for the manifest and shards (kept); default: a temporary folder removed at the end")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="settings file (default: %(default)s)")
    p.add_argument("--datasets", type=Path, default=None,
                   help="datasets folder holding <set>/HR (default: $PERCEPT_DATASETS, else ../shared/datasets)")
    args = p.parse_args(argv)
    if args.seconds <= 0 or args.batch < 1:
        p.error("--seconds must be > 0 and --batch >= 1")
    return args


def make_config(args: argparse.Namespace, datasets: Path, engine: str, workers: int = 0, encoding: str = "raw"):
    import yaml

    from pipelines.common.params import parse_config

    raw = yaml.safe_load(args.params.read_text())
    raw["ingest"]["sources"] = [{"uri": str(datasets / s / "HR"), "split": "train"} for s in args.train_sets.split(",")]
    raw["ingest"]["sources"].append({"uri": str(datasets / "Set5" / "HR"), "split": "val"})
    raw["tasks"] = {TASK: raw["tasks"][TASK]}
    raw["train"]["tasks"] = [TASK]
    raw["compare"] = {}  # its sheet names models this benchmark does not train
    raw["data"].update(engine=engine, workers=workers)
    raw["shard"]["encoding"] = encoding
    return parse_config(with_feature_weights(raw, ROOT), source=str(args.params))


# --- 1. build -----------------------------------------------------------------------------------


def build(cfg, folder: Path) -> dict:
    """Ingest, then shard the train split, timing Ray's start apart from the work."""
    from pipelines.services.engine import data_engine, init_ray, stop_ray
    from pipelines.stages.ingest import list_source
    from pipelines.data.manifest import read_manifest

    candidates = [c for s in cfg.ingest.sources for c in list_source(s, cfg)]
    t0 = time.perf_counter()
    started = cfg.data.engine == "ray" and init_ray(cfg, num_cpus=cfg.data.workers or None)
    try:
        if started:  # one task per CPU first, so every worker has started and imported its modules
            with data_engine(cfg) as mapper:
                list(mapper(_warm, [None] * 2 * (cfg.data.workers or os.cpu_count() or 1) * cfg.data.items_per_task))
        t1 = time.perf_counter()
        manifest = ingest(cfg, folder / "manifest")
        t2 = time.perf_counter()
        with data_engine(cfg) as mapper:
            shards = shard(cfg, TASK, manifest, folder / "shards", ("train",), mapper)
        t3 = time.perf_counter()
    finally:
        if started:
            stop_ray()
    images = sum(row.split == "train" for row in read_manifest(manifest))
    return {"start_s": t1 - t0, "ingest_s": t2 - t1, "shard_s": t3 - t2, "files": len(candidates),
            "images": images, "samples": sum(s["samples"] for s in shards), "rejects": len(candidates) - len(read_manifest(manifest)),
            "digests": [s["sha256"] for s in shards], "shards": shards}


def _warm(_):
    import pipelines.data.samples  # noqa: F401 - what the workers import first
    import pipelines.data.validate  # noqa: F401

    time.sleep(0.05)  # long enough that every worker gets a task
    return os.getpid()


def bench_build(args, datasets: Path, work: Path) -> list[dict]:
    rows = []
    for engine, workers in [("local", 1)] + [("ray", w) for w in args.ray_workers]:
        progress(f"build: {engine}, {workers} worker(s)")
        cfg = make_config(args, datasets, engine, workers)
        row = build(cfg, work / f"build-{engine}-{workers}")
        rows.append({"engine": engine, "workers": workers, **row})
        progress(f"build: {engine} x{workers}: start {row['start_s']:.1f} s, ingest {row['ingest_s']:.1f} s, "
                 f"shard {row['shard_s']:.1f} s")
    return rows


# --- 2. stream ------------------------------------------------------------------------------------


def old_stream(urls: list[str], batch: int, seed: int, loader_workers: int):
    """The train stream as it was before raw samples (PNG, webdataset's tar reader and decoder)."""
    import webdataset as wds

    from training.shards import _collate

    pipeline = wds.DataPipeline(
        wds.ResampledShards(list(urls), seed=seed, deterministic=True), wds.tarfile_to_samples(),
        wds.shuffle(256, initial=64, seed=seed), wds.decode("rgb8"), wds.to_tuple("input.png", "target.png"),
        wds.map(lambda pair: (pair[0].copy(), pair[1].copy())), wds.batched(batch, collation_fn=_collate, partial=False),
    )
    loader = wds.WebLoader(pipeline, batch_size=None, num_workers=loader_workers, persistent_workers=loader_workers > 0)
    return iter(loader)


def pairs_per_s(stream, seconds: float, batch: int) -> tuple[float, tuple]:
    for _ in range(4):  # warm-up: worker start, first shards, the shuffle buffer's fill
        inputs, targets = next(stream)
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        inputs, targets = next(stream)
        n += inputs.shape[0]
    return n / (time.perf_counter() - start), tuple(targets.shape[1:])


def bench_stream(args, shard_dirs: dict[str, Path]) -> list[dict]:
    import torch

    from training.shards import shard_urls, train_batches

    torch.set_num_threads(1)
    rows = []
    for name, folder in shard_dirs.items():
        urls = shard_urls(folder, "train")
        size = sum(os.path.getsize(u) for u in urls)
        for workers in (1, 0):
            progress(f"stream: {name}, {workers} loader worker(s), {args.seconds:.0f} s")
            if name == "old":
                stream = old_stream(urls, args.batch, 0, workers)
            else:
                stream = train_batches(urls, args.batch, 0, loader_workers=workers)
            rate, shape = pairs_per_s(stream, args.seconds, args.batch)
            del stream
            rows.append({"stream": name, "workers": workers, "pairs_s": rate, "target": shape, "shard_bytes": size,
                         "samples": json.loads((folder / "index.json").read_text())["splits"]["train"]})
    return rows


# --- 3. GPU feed ------------------------------------------------------------------------------------


def step_flops_per_sample(cfg) -> float:
    """Forward + backward FLOPs of one sr_x4 training sample (conv and matmul), counted on the CPU."""
    import torch

    from pipelines.use.pretrained import task_loss
    from training.models import build_transform_net

    params = cfg.task(TASK)
    model = build_transform_net(params.model.model_copy(update={"in_channels": params.degradation.input_channels}),
                                params.degradation.input_scale)
    loss_fn = task_loss(params, cfg.feature_net, device=torch.device("cpu"))
    side = params.patch_size
    inputs = torch.rand(1, params.degradation.input_channels, side // params.degradation.input_scale,
                        side // params.degradation.input_scale)
    targets = torch.rand(1, 3, side, side)
    return count_flops(lambda: loss_fn(model(inputs), targets)[0].backward())[0]


# --- report ------------------------------------------------------------------------------------------


def report(args, build_rows: list[dict], stream_rows: list[dict], flops: float | None, elapsed: float) -> None:
    out = [f"percept data benchmark: {TASK} ({args.train_sets} train, Set5 val), {os.cpu_count()} cores, "
           f"python {sys.version.split()[0]}", ""]
    base = build_rows[0]
    out.append(f"1. build ({base['files']} files -> {base['images']} train images -> {base['samples']} samples; "
               "start = Ray's start and its workers' first imports, not in the rates)")
    out.append(f"   {'engine':<6} {'workers':>7}  {'start s':>7}  {'ingest img/s':>12}  {'shard img/s':>11}  "
               f"{'samples/s':>9}  {'vs local':>8}  same bytes")
    for r in build_rows:
        work = r["ingest_s"] + r["shard_s"]
        out.append(f"   {r['engine']:<6} {r['workers']:>7}  {r['start_s']:>7.1f}  {r['files'] / r['ingest_s']:>12.1f}  "
                   f"{r['images'] / r['shard_s']:>11.1f}  {r['samples'] / r['shard_s']:>9.0f}  "
                   f"x{(base['ingest_s'] + base['shard_s']) / work:>7.2f}  {'yes' if r['digests'] == base['digests'] else 'NO'}")
    rays = [r for r in build_rows if r["engine"] == "ray"]
    if len(rays) > 1:
        one, most = rays[0], rays[-1]
        out.append(f"   Ray {most['workers']} workers / {one['workers']}: ingest x{one['ingest_s'] / most['ingest_s']:.2f}, "
                   f"shard x{one['shard_s'] / most['shard_s']:.2f}")
    out.append("")
    out.append(f"2. train stream (batches of {args.batch}, resampled shards, shuffle buffer 256; {args.seconds:.0f} s each)")
    out.append(f"   {'stream':<6} {'loader workers':>14}  {'pairs/s':>8}  {'per core':>8}  {'MP/s/core':>9}  "
               f"{'KB/sample':>9}  {'vs old':>7}")
    by = {(r["stream"], r["workers"]): r for r in stream_rows}
    for r in stream_rows:
        cores = max(1, r["workers"])
        mp = r["pairs_s"] * math.prod(r["target"][:2]) / 1e6 / cores
        old = by[("old", r["workers"])]["pairs_s"]
        out.append(f"   {r['stream']:<6} {r['workers']:>14}  {r['pairs_s']:>8.0f}  {r['pairs_s'] / cores:>8.0f}  {mp:>9.1f}  "
                   f"{r['shard_bytes'] / r['samples'] / 1e3:>9.1f}  x{r['pairs_s'] / old:>6.2f}")
    out.append("   (1 worker: the batch is made in a loader process and crosses in shared memory, as in training; "
               "0: made in this process, no transfer)")
    if flops:
        raw, old = by[("raw", 1)]["pairs_s"], by[("old", 1)]["pairs_s"]
        side = stream_rows[0]["target"][0]
        out.append("")
        out.append(f"3. GPU feed: the {TASK} step is {flops / 1e9:.2f} GFLOP per {side} px sample (forward + backward)")
        out.append(f"   {'GPU TFLOP/s':>11}  {'samples/s':>9}  {'loader cores (raw)':>18}  {'(old)':>6}")
        for tf in args.tflops:
            need = tf * 1e12 / flops
            out.append(f"   {tf:>11}  {need:>9.0f}  {need / raw:>18.1f}  {need / old:>6.1f}")
        out.append("   (cores at this machine's per-core rate with 1 loader worker; larger patches cost FLOPs and "
                   "bytes in proportion: megapixels/s per core is the figure to carry over)")
    out.append("")
    out.extend(ending(args.load_start, elapsed))
    print("\n".join(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    args.load_start = load_average()
    from pipelines.common.paths import Paths

    datasets = (args.datasets or Paths(ROOT).datasets()).resolve()
    for sub in [*args.train_sets.split(","), "Set5"]:
        if not (datasets / sub / "HR").is_dir():
            print(f"error: {datasets / sub / 'HR'} not found (set $PERCEPT_DATASETS or pass --datasets)", file=sys.stderr)
            return 2
    if args.workdir is None:
        work, cleanup = Path(tempfile.mkdtemp(prefix="percept-bench-")), True
    else:
        work, cleanup = args.workdir.resolve(), False
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            print(f"error: {work} is not empty; give an empty or new --workdir", file=sys.stderr)
            return 2
    progress(f"work folder {work}{' (temporary)' if cleanup else ''}")
    try:
        build_rows = bench_build(args, datasets, work)
        progress("stream: PNG shards of the same samples")
        png = work / "png-shards"
        shard(make_config(args, datasets, "local", encoding="png"), TASK, work / "build-local-1" / "manifest" / "manifest.csv", png, ("train",))
        shard_dirs = {"old": png, "png": png, "raw": work / "build-local-1" / "shards"}
        stream_rows = bench_stream(args, shard_dirs)
        flops = step_flops_per_sample(make_config(args, datasets, "local"))
        report(args, build_rows, stream_rows, flops, time.perf_counter() - start)
    finally:
        if cleanup:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
