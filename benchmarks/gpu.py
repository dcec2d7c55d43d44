"""GPU check: every task's training step and a short training run on one GPU, with what a GPU host
has (PyTorch, NumPy, Pillow, PyYAML, tqdm) plus the wheels ``benchmarks/gpu.sh`` carries (pydantic,
albumentations). No Ray, MLflow, Prefect or DVC: only ``training/`` and the config and evaluation
code they need.

For each task (``train.tasks`` by default; settings from params.yaml with the ``gpu`` profile, the
same per-task networks and losses as the CPU default at the paper's patch sizes):

1. training pairs cut from the images (the task's own degradation, a process per core), put on
   the device, so the step is measured without a loader (the sample stream is a separate figure);
2. the training step (model forward and backward, loss, Adam) in fp32 (TF32 convolutions on a
   GPU), channels-last, bf16 autocast, and bf16 + channels-last: samples/s, TFLOP/s
   (FlopCounterMode, conv and matmul only) and the share of ``--peak-tflops``;
3. the sample stream: the pairs written as raw ``.npy`` shards and read back by
   ``training.shards.train_batches`` with ``--loader-workers`` processes (default: the host's
   cores less two), pinned and copied to the device a step ahead, as training reads them:
   samples/s against the step's consumption in its fastest mode (above 1: the GPU never waits);
4. ``--seconds`` of training in the fastest mode (cosine schedule over the steps that fit), then
   the task's validation figures on Set5 and Set14 against the baseline, by the protocol
   ``percept evaluate`` follows;
5. inference latency at 1024² output per network kind (fp32, bf16, bf16 + channels-last).

Figures go to stdout as tables and to ``--out`` as JSON (written after every task, so a run cut
short keeps what it measured). ``--tiny`` runs the same code on the CPU at toy sizes in seconds:
the test suite does, so this script never rots between GPU sessions.

    bash benchmarks/gpu.sh                                  # on the GPU machine (see that file)
    python benchmarks/gpu.py --tiny --device cpu --out /tmp/gpu   # what the tests run
    python benchmarks/gpu.py --device cpu --profile '' --steps-only --pairs 64   # the CPU default's step, 4 ways
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.common.params import parse_config# noqa: E402
from pipelines.common.schema import Config# noqa: E402
from training.images import list_images  # noqa: E402
from common import count_flops, progress  # noqa: E402  benchmarks/common.py: run as a script, this folder is on sys.path
from training.pairs import sample_seed, train_pair  # noqa: E402

MODES = ("fp32", "channels_last", "bf16", "bf16+channels_last")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--profile", default="gpu", help="params profile(s) to merge (default: %(default)s; '' for none)")
    p.add_argument("--datasets", type=Path, default=Path(os.environ.get("PERCEPT_DATASETS", ROOT.parent / "shared" / "datasets")),
                   help="folder with T91/, Set5/, Set14/, styles/ (default: $PERCEPT_DATASETS or ../shared/datasets)")
    p.add_argument("--weights", type=Path, default=Path(os.environ.get("PERCEPT_WEIGHTS", ROOT.parent / "shared" / "weights")),
                   help="folder with the feature network file (default: $PERCEPT_WEIGHTS or ../shared/weights)")
    p.add_argument("--train-sets", default="T91", help="comma list of folders under --datasets to cut patches from")
    p.add_argument("--tasks", help="comma list (default: train.tasks)")
    p.add_argument("--seconds", type=float, default=30.0, help="training time per task (default: %(default)s)")
    p.add_argument("--val-sets", default="Set5,Set14", help="comma list of folders under --datasets to validate on")
    p.add_argument("--pairs", type=int, default=1024, help="training pairs per task (default: %(default)s)")
    p.add_argument("--timed-steps", type=int, default=20, help="steps timed per mode (default: %(default)s)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak (H100/H200 SXM: 989)")
    p.add_argument("--infer-size", type=int, default=1024, help="output side for the latency figure (default: %(default)s)")
    p.add_argument("--tiny", action="store_true", help="toy sizes: patches 32 px, 2 timed steps, 2 s of training")
    p.add_argument("--steps-only", action="store_true", help="only the step timings (no training, validation or latency): "
                   "with --device cpu --profile '' the precision and memory-format ratios of the CPU default")
    p.add_argument("--loader-workers", type=int, default=max(1, (os.cpu_count() or 1) - 2),
                   help="loader processes for the stream figure (default: the host's cores less two: %(default)s)")
    p.add_argument("--stream-seconds", type=float, default=3.0, help="timed streaming per task (default: %(default)s)")
    p.add_argument("--out", type=Path, help="write results.json (and the tables) here")
    return p.parse_args(argv)


def load_cfg(args: argparse.Namespace) -> Config:
    raw = yaml.safe_load(args.params.read_text())
    raw["profile"] = args.profile or None
    os.environ.pop("PERCEPT_PROFILE", None)  # the flag decides
    # Files straight from the datasets and weights folders: no acquire stage runs here.
    feature = raw.setdefault("feature_net", {})
    feature["weights"] = str(args.weights / Path(feature.get("weights", "vgg_normalised_conv3_1.pth")).name)
    for block in raw["tasks"].values():
        options = block.get("options") or {}
        if "style_image" in options:
            options["style_image"] = str(args.datasets / "styles" / Path(options["style_image"]).name)
    if args.tiny:  # toy sizes, same code: every task's patch 32 px (a multiple of every scale), batch 2
        for name, block in raw["tasks"].items():
            block.update(patch_size=32, patches_per_image=1)
            block["optim"] = {**block.get("optim", {}), "batch_size": 2}
        for profile in (raw.get("profiles") or {}).values():
            for block in (profile.get("tasks") or {}).values():
                for key in ("patch_size", "patches_per_image"):
                    block.pop(key, None)
                (block.get("optim") or {}).pop("batch_size", None)
    return parse_config(raw, source=str(args.params))


def read_images(folders: list[Path]) -> list[np.ndarray]:
    from PIL import Image

    images = []
    for folder in folders:
        for path in list_images(folder):
            with Image.open(path) as img:
                images.append(np.asarray(img.convert("RGB")))
    if not images:
        raise FileNotFoundError(f"no images under {', '.join(map(str, folders))}")
    return images


_IMAGES: list[np.ndarray] = []


def _init_pool(images: list[np.ndarray]) -> None:
    global _IMAGES
    _IMAGES = images


def _one_pair(job: tuple[Any, int, int, int, str]) -> tuple[np.ndarray, np.ndarray]:
    degradation, patch, image_index, k, task = job
    pair = train_pair(_IMAGES[image_index], degradation, patch, sample_seed(0, task, image_index, k))
    return pair.input, pair.target


def make_pairs(task: str, cfg: Config, images: list[np.ndarray], count: int, pool) -> tuple[np.ndarray, np.ndarray]:
    params = cfg.task(task)
    usable = [i for i, im in enumerate(images) if min(im.shape[:2]) >= params.patch_size]
    if not usable:
        raise ValueError(f"{task}: no image is at least {params.patch_size} px on a side")
    jobs = [(params.degradation, params.patch_size, usable[j % len(usable)], j // len(usable), task) for j in range(count)]
    pairs = list(pool.map(_one_pair, jobs, chunksize=8)) if pool else [_one_pair(j) for j in jobs]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


class Task:
    """One task's network, loss and optimiser on the device, fed from pairs held on the device."""

    def __init__(self, name: str, cfg: Config, pairs: tuple[np.ndarray, np.ndarray], device: torch.device) -> None:
        from pipelines.use.pretrained import init_pretrained, task_loss
        from training.models import build_transform_net

        self.name, self.cfg, self.device = name, cfg, device
        self.params = params = cfg.task(name)
        self.degradation = params.degradation
        self.model_config = params.model.model_copy(update={"in_channels": self.degradation.input_channels})
        self.build = lambda: init_pretrained(build_transform_net(self.model_config, self.degradation.input_scale),
                                             cfg.feature_net)
        self.loss = task_loss(params, cfg.feature_net, Path("/"), device)  # load_cfg made the paths absolute
        self.inputs = torch.from_numpy(pairs[0]).to(device)
        self.targets = torch.from_numpy(pairs[1]).to(device)
        self.generator = torch.Generator(device="cpu").manual_seed(0)

    def batch(self, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from training.loop import to_model_input

        idx = torch.randint(0, len(self.inputs), (self.params.optim.batch_size,), generator=self.generator).to(self.device)
        return (to_model_input(self.inputs[idx], self.degradation.input_channels, self.device, channels_last),
                to_model_input(self.targets[idx], 3, self.device, channels_last))

    def fresh(self, channels_last: bool, steps: int):
        from training.loop import make_optimizer

        torch.manual_seed(0)
        model = self.build().to(self.device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optim = self.params.optim.model_copy(update={"steps": max(1, steps)})
        optimizer, scheduler = make_optimizer(model, optim)
        return model, optimizer, scheduler, optim

    def step(self, model, optimizer, scheduler, mode: str, step: int | None = None):
        """One training step; ``step`` None times the full loss (every term, also in a pixel-only start)."""
        from training.loop import train_step

        inputs, targets = self.batch(channels_last=mode.endswith("channels_last"))
        dtype = torch.bfloat16 if mode.startswith("bf16") else None
        return train_step(model, self.loss, optimizer, scheduler, inputs, targets, self.params.optim.grad_clip, dtype, step)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_step_flops(task: Task) -> float:
    model, optimizer, scheduler, _ = task.fresh(False, 1)
    return count_flops(lambda: task.step(model, optimizer, scheduler, "fp32"))[0]


def stream_rate(task: Task, pairs: tuple[np.ndarray, np.ndarray], workers: int, seconds: float) -> float:
    """Samples/s of the train stream on raw shards of ``pairs``, delivered on the device."""
    import tempfile

    from training.images import encode_npy
    from training.loop import prefetch_to_device
    from training.shards import ShardWriter, train_batches

    with tempfile.TemporaryDirectory(prefix="gpu-stream-") as folder:
        writer = ShardWriter(Path(folder), "train", max_samples=64, max_bytes=64_000_000)
        for i, (x, y) in enumerate(zip(*pairs)):
            writer.write({"__key__": f"s{i:06d}".encode(), "input.npy": encode_npy(x), "target.npy": encode_npy(y),
                          "meta.json": b"{}"})
        urls = [str(Path(folder) / s["name"]) for s in writer.close()]
        batch = task.params.optim.batch_size
        batches = prefetch_to_device(train_batches(urls, batch, 0, loader_workers=workers,
                                                   pin_memory=task.device.type == "cuda"), task.device)
        for _ in range(3 + workers):  # every loader worker started and filled its buffer
            next(batches)
        sync(task.device)
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            inputs, _ = next(batches)
            n += inputs.shape[0]
        sync(task.device)
        rate = n / (time.perf_counter() - start)
        del batches  # stops the loader workers before the folder goes
    return rate


def time_mode(task: Task, mode: str, steps: int) -> float:
    """Samples/s of the training step in ``mode``, after untimed warm-up steps."""
    model, optimizer, scheduler, _ = task.fresh(mode.endswith("channels_last"), 10 * steps)
    for _ in range(3):
        task.step(model, optimizer, scheduler, mode)
    sync(task.device)
    start = time.perf_counter()
    for _ in range(steps):
        task.step(model, optimizer, scheduler, mode)
    sync(task.device)
    return steps * task.params.optim.batch_size / (time.perf_counter() - start)


def train_for(task: Task, mode: str, seconds: float, rate: float) -> tuple[torch.nn.Module, dict[str, Any]]:
    steps = max(2, int(seconds * rate / task.params.optim.batch_size))
    model, optimizer, scheduler, _ = task.fresh(mode.endswith("channels_last"), steps)
    sync(task.device)
    start, first, last = time.perf_counter(), None, None
    for i in range(steps):
        result = task.step(model, optimizer, scheduler, mode, step=i)
        if i == 0:
            first = result.losses["total"]
    last = result.losses["total"]
    sync(task.device)
    elapsed = time.perf_counter() - start
    return model, {"steps": steps, "seconds": elapsed, "samples_per_s": steps * task.params.optim.batch_size / elapsed,
                   "loss_first": first, "loss_last": last}


def validate(task: Task, model: torch.nn.Module, datasets: Path, sets: list[str], tiny: bool) -> dict[str, Any]:
    from pipelines.use.scoring import evaluate_images, instruments, load_image_set
    from pipelines.use.predictors import Predictor
    from training.inference import Engine
    from training.options import InferenceConfig

    model = model.float().to(memory_format=torch.contiguous_format).eval()
    engine = Engine(model, task.degradation.input_scale, task.degradation.input_channels,
                    InferenceConfig(device=str(task.device), tile=None, batch=1, bf16=False))
    cfg = task.cfg
    tools = instruments(task.name, cfg, Path("/"), str(task.device))  # the config's paths are absolute (load_cfg)
    figures = {}
    for set_name in sets:
        images = load_image_set(datasets / set_name, task.name, cfg)
        if tiny:
            images = images[:1]
        report, _ = evaluate_images(task.name, Predictor("gpu", engine), images, cfg, set_name, tools, progress=False)
        head = cfg.reported_metrics(task.name)
        figures[set_name] = {m: report[m] for m in head} | {f"baseline_{m}": report["baseline"][m] for m in head}
    return figures


def latency(kind: str, model: torch.nn.Module, scale: int, in_channels: int, size: int, device: torch.device,
            repeats: int) -> dict[str, float]:
    """Median milliseconds per ``size``² output image, batch 1, per inference path."""
    x = torch.rand(1, in_channels, size // scale, size // scale, device=device)
    model = model.to(device).eval()
    out = {}
    for mode in MODES:
        m = model.to(memory_format=torch.channels_last) if mode.endswith("channels_last") else model
        xi = x.contiguous(memory_format=torch.channels_last) if mode.endswith("channels_last") else x
        times = []
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode.startswith("bf16")):
            for i in range(repeats + 3):
                sync(device)
                start = time.perf_counter()
                m(xi)
                sync(device)
                if i >= 3:
                    times.append(time.perf_counter() - start)
        out[mode] = 1000 * statistics.median(times)
    progress(f"latency {kind} {size}²: " + ", ".join(f"{k} {v:.2f} ms" for k, v in out.items()))
    return out


def table(results: dict[str, Any], peak: float) -> str:
    lines = ["| task | step GFLOP/sample | fp32 | CL | bf16 | bf16+CL (samples/s) | best TFLOP/s (% of peak) | "
             "stream/s (loader workers), ÷ step | trained | loss first -> last | validation |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results["tasks"].items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error']} | | | | | | | | | |")
            continue
        rates = r["samples_per_s"]
        best = max(rates, key=rates.get)
        tflops = rates[best] * r["gflop_per_sample"] / 1000
        val = []
        for set_name, v in r.get("validation", {}).items():
            head = next(iter(v))
            val.append(f"{set_name} {head} {v[head]:.4g} vs {v['baseline_' + head]:.4g}")
        t = r.get("training")
        trained = f"{t['steps']} steps, {t['seconds']:.0f} s, {t['samples_per_s']:.0f}/s" if t else "-"
        losses = f"{t['loss_first']:.4g} -> {t['loss_last']:.4g}" if t else "-"
        st = r["stream"]
        stream = f"{st['samples_per_s']:.0f} ({st['loader_workers']}), x{st['vs_step']:.2f}"
        lines.append(f"| {name} | {r['gflop_per_sample']:.2f} | " + " | ".join(f"{rates[m]:.0f}" for m in MODES) +
                     f" | {tflops:.2f} ({100 * tflops / peak:.1f} %) | {stream} | {trained} | {losses} | {'; '.join(val) or '-'} |")
    if results.get("latency"):
        lines += ["", f"| network | {' | '.join(MODES)} (ms per {results['infer_size']}² image) |",
                  "| --- |" + " --- |" * len(MODES)]
        for kind, ms in results["latency"].items():
            lines.append(f"| {kind} | {' | '.join(f'{ms[m]:.2f}' for m in MODES)} |")
    return "\n".join(lines)


def train_and_validate(task: Task, entry: dict[str, Any], args: argparse.Namespace, device: torch.device,
                       latencies: dict[str, dict[str, float]], seen_nets: set[str]) -> None:
    """``--seconds`` of training in the fastest mode, validation, and (once per network) latency."""
    best = max(entry["samples_per_s"], key=entry["samples_per_s"].get)
    model, entry["training"] = train_for(task, best, args.seconds, entry["samples_per_s"][best])
    entry["training"]["mode"] = best
    entry["validation"] = validate(task, model, args.datasets, args.val_sets.split(","), args.tiny)
    net_key = json.dumps([task.model_config.model_dump(), task.degradation.input_scale], sort_keys=True)
    if net_key not in seen_nets:  # one latency figure per distinct network
        seen_nets.add(net_key)
        kind = f"{task.name} ({task.model_config.arch})"
        latencies[kind] = latency(kind, task.build(), task.degradation.input_scale, task.degradation.input_channels,
                                  args.infer_size, device, 3 if args.tiny else 20)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.datasets, args.weights = args.datasets.resolve(), args.weights.resolve()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if args.tiny:
        args.seconds, args.pairs, args.timed_steps, args.infer_size = 2.0, 8, 2, 64
        args.loader_workers, args.stream_seconds = 1, 0.5
    cfg = load_cfg(args)
    tasks = args.tasks.split(",") if args.tasks else cfg.train.tasks
    started = time.perf_counter()
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "python": platform.python_version(), "profile": args.profile,
        "seconds_per_task": args.seconds, "peak_tflops": args.peak_tflops, "infer_size": args.infer_size,
        "tasks": {}, "latency": {},
    }
    progress(f"gpu check on {results['device']} (torch {torch.__version__}), tasks: {', '.join(tasks)}")
    images = read_images([args.datasets / s for s in args.train_sets.split(",")])
    workers = 1 if args.tiny else min(16, os.cpu_count() or 1)
    pool = ProcessPoolExecutor(workers, initializer=_init_pool, initargs=(images,)) if workers > 1 else None
    if pool is None:
        _init_pool(images)
    seen_nets: set[str] = set()
    try:
        for name in tasks:
            t0 = time.perf_counter()
            try:
                task = Task(name, cfg, make_pairs(name, cfg, images, args.pairs, pool), device)
                entry: dict[str, Any] = {"patch": task.params.patch_size, "batch": task.params.optim.batch_size,
                                         "arch": task.model_config.arch}
                entry["gflop_per_sample"] = count_step_flops(task) / task.params.optim.batch_size / 1e9
                entry["samples_per_s"] = {mode: time_mode(task, mode, args.timed_steps) for mode in MODES}
                fp32 = entry["samples_per_s"]["fp32"]
                progress(f"{name}: " + ", ".join(f"{m} {v:.1f}/s (x{v / fp32:.2f})" for m, v in entry["samples_per_s"].items()))
                pairs = (task.inputs.cpu().numpy(), task.targets.cpu().numpy())
                entry["stream"] = {"loader_workers": args.loader_workers,
                                   "samples_per_s": stream_rate(task, pairs, args.loader_workers, args.stream_seconds)}
                entry["stream"]["vs_step"] = entry["stream"]["samples_per_s"] / max(entry["samples_per_s"].values())
                progress(f"{name}: stream {entry['stream']['samples_per_s']:.0f}/s with {args.loader_workers} loader workers, "
                    f"x{entry['stream']['vs_step']:.2f} the step's consumption")
                if not args.steps_only:
                    train_and_validate(task, entry, args, device, results["latency"], seen_nets)
            except Exception as exc:  # one broken task must not cost the others their figures
                traceback.print_exc()
                entry = {"error": f"{type(exc).__name__}: {exc}"}
            entry["wall_s"] = time.perf_counter() - t0
            results["tasks"][name] = entry
            progress(f"{name}: {json.dumps(entry)}")
            if args.out:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    finally:
        if pool is not None:
            pool.shutdown()
    text = table(results, args.peak_tflops)
    print(f"{results['device']}, torch {results['torch']}, {args.seconds:.0f} s of training per task, "
          f"profile {args.profile or 'none'}, total {time.perf_counter() - started:.0f} s\n\n{text}")
    if args.out:
        (args.out / "results.md").write_text(text + "\n")
    return 1 if any("error" in r for r in results["tasks"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
