"""Training benchmark: samples/s of the Ray Train loop against a plain PyTorch loop, in one run.

Both loops train the same sr_x4 network (``tasks.sr_x4.model``, whatever its ``arch``) with the
same loss (its ``loss:`` block), the same optimiser and schedule, and the same seeded shard
stream, on this machine, so the ratio of the two rates is the cost of running the loop under Ray Train (one worker) rather than as a bare loop.
Nothing under the project's ``data/``, ``runs/``, ``models/`` or ``mlflow.db`` is touched: the
shards are copied into a work folder (a temporary one, removed at the end, unless ``--workdir``)
that is the project root of the Ray runs (its checkpoints, MLflow database, models/ and plots/).
The copy's val split is cut to ``--val-images`` (train() validates on it after the last step,
outside the measurement, so this only shortens the run); the train split is the real one.

    .venv/bin/python benchmarks/train.py                   # cpu, defaults from params.yaml
    .venv/bin/python benchmarks/train.py --steps 80 --repeats 3
    .venv/bin/python benchmarks/train.py --device cuda     # bf16 autocast + channels_last, as the product

1. Ray: ``pipelines.stages.train.train`` (the product's driver: a local Ray, a ``TorchTrainer`` with one
   worker of ``train.cpus_per_worker`` CPUs, MLflow logging every ``log_every`` steps, one checkpoint
   at the last step, then the quick validation and models/ write). The steady rate is taken from
   the MLflow metric timestamps: the rank-0 worker logs at step ``--warmup`` and at the last step,
   so ``batch * (steps - warmup) / (t_last - t_warmup)`` covers steps warmup+1..steps only. Ray
   start-up, worker start, model build, the first ``--warmup`` steps, the final checkpoint, the
   validation and Ray shutdown are outside it (their times are printed separately). The window
   does include the product's own per-``log_every`` MLflow write, which is part of its loop.
   ``samples_per_s`` as the product logs it (a 20-step moving window) is printed as a cross-check.
2. Plain: the same pieces with no Ray in the benchmark process: ``training.loop.train_step`` over
   ``training.shards.train_batches`` (same batch, seed, shuffle buffer and ``loader_workers``),
   ``torch.set_num_threads(cpus_per_worker)``, timed over the same steps warmup+1..steps.

Ray is started for each Ray run and shut down after it, so the plain loop never shares the CPUs
with idle Ray daemons (they are part of Ray's cost). Repeats alternate the order (plain, Ray, Ray,
plain, ...) so a drift in machine load hits both alike; medians are printed, and the ratio per
repeat. FLOP are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one batch (matmul
and convolution FLOP only; element-wise work is not counted): the network's forward pass, and the
whole training step (network forward + backward, the VGG passes of output and target when the loss
has a feature term, the loss), split by module class.

Where the CPUs went in each window is sampled with psutil every 0.5 s: the loop's process (and its
DataLoader worker), Ray's other processes, and other work on the host. A shared machine skews the
rates, so windows with other work above ``--quiet`` cores are marked and the overhead is also printed
over the quiet windows alone.

The table goes to stdout; progress (and Ray's own messages) to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import count_flops as flop_count, ending, ingest, load_average, progress, shard, with_feature_weights  # benchmarks/common.py: run as scripts, this folder is on sys.path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.common.env import apply_quiet_defaults, keep_freed_memory# noqa: E402

# As the CLI sets them, before Ray / MLflow are imported; Ray's workers inherit them through the
# raylet this process starts.
apply_quiet_defaults()
keep_freed_memory()
TASK = "sr_x4"
METER_WINDOW = 20  # pipelines.stages.train.ThroughputMeter's default window


class CpuSampler:
    """CPU seconds of this process and of every process under it (Ray's daemons and workers, DataLoader
    workers), and of the whole host, sampled every ``interval`` s in a thread; read back per time window.

    It says where the CPUs went in a window: into the training loop's processes, into Ray's other
    processes, or into work outside this benchmark (other users of the machine). Without psutil it
    records nothing and the report leaves those columns out.
    """

    def __init__(self, interval: float = 0.5):
        import threading

        try:
            import psutil
        except ImportError:
            psutil = None
        self.psutil, self.interval = psutil, interval
        self.samples: list[tuple[float, tuple[float, float], dict[int, tuple[float, int, str, int]]]] = []
        self._stop = threading.Event()
        self.own_cores = 0.0  # what the sampling itself cost, CPU-s per second of its life
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def __enter__(self) -> CpuSampler:
        if self.psutil is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.psutil is not None:
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        start = time.time()
        while True:
            self._snapshot()
            if self._stop.wait(self.interval):
                self._snapshot()
                self.own_cores = time.thread_time() / max(1e-9, time.time() - start)
                return

    def _snapshot(self) -> None:
        ps = self.psutil
        me = ps.Process()
        procs: dict[int, tuple[float, int, str, int]] = {}
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(ps.Error):
                with proc.oneshot():
                    t = proc.cpu_times()
                    procs[proc.pid] = (t.user + t.system, proc.ppid(), " ".join(proc.cmdline())[:120], proc.nice())
        host = ps.cpu_times()
        busy = sum(host) - host.idle - getattr(host, "iowait", 0.0) - getattr(host, "guest", 0.0) - getattr(host, "guest_nice", 0.0)
        self.samples.append((time.time(), (busy, getattr(host, "nice", 0.0)), procs))

    def _at(self, t: float) -> tuple[tuple[float, float], dict[int, float], dict[int, tuple[int, str, int]]]:
        """Host (busy, niced user) CPU-s and each process's CPU-s at wall time ``t``, linearly interpolated."""
        s = self.samples
        i = next((k for k in range(1, len(s)) if s[k][0] >= t), len(s) - 1)
        (ta, ba, pa), (tb, bb, pb) = s[i - 1], s[i]
        w = 0.0 if tb == ta else min(1.0, max(0.0, (t - ta) / (tb - ta)))
        cpu = {pid: pa.get(pid, (0.0,))[0] * (1 - w) + v[0] * w for pid, v in pb.items()}
        for pid, v in pa.items():
            cpu.setdefault(pid, v[0])  # ended in between: its last reading
        info = {pid: (v[1], v[2], v[3]) for d in (pa, pb) for pid, v in d.items()}
        return tuple(x * (1 - w) + y * w for x, y in zip(ba, bb)), cpu, info

    def window(self, a: float, b: float, loop_root: str | None) -> dict[str, float] | None:
        """Cores used over [a, b] by the loop (the process whose command line holds ``loop_root``, or this
        process when None, with its children), by the other processes under this one, and by the rest
        of the host. None when nothing was sampled around the window."""
        if len(self.samples) < 2 or self.samples[0][0] > a or self.samples[-1][0] < b:
            return None
        (busy_a, nice_a), cpu_a, _ = self._at(a)
        (busy_b, nice_b), cpu_b, info = self._at(b)
        me = os.getpid()
        roots = {pid for pid, (_, cmd, _) in info.items() if (loop_root in cmd if loop_root else pid == me)}
        loop = set(roots)
        while True:  # the loop's descendants (its DataLoader workers)
            more = {pid for pid, (ppid, _, _) in info.items() if ppid in loop} - loop
            if not more:
                break
            loop |= more
        used = {pid: cpu_b.get(pid, 0.0) - cpu_a.get(pid, 0.0) for pid in set(cpu_a) | set(cpu_b)}
        span = b - a
        ours = sum(used.values())
        in_loop = sum(used[p] for p in loop if p in used)
        by_kind: dict[str, float] = {}
        for pid, cpu in used.items():
            if pid not in loop:
                kind = "driver" if pid == me else process_kind(info.get(pid, (0, ""))[1])
                by_kind[kind] = by_kind.get(kind, 0.0) + cpu / span
        ours_niced = sum(cpu for pid, cpu in used.items() if info.get(pid, (0, "", 0))[2] > 0)
        return {"loop": in_loop / span, "rest": (ours - in_loop) / span, "outside": max(0.0, (busy_b - busy_a - ours) / span),
                "outside_niced": max(0.0, (nice_b - nice_a - ours_niced) / span),
                "loop_cpu_s": in_loop, "by_kind": by_kind, "found_loop": bool(roots),
                "nice": sorted({info[pid][2] for pid in roots})}


def process_kind(cmd: str) -> str:
    """A short name for one of Ray's processes, from its command line."""
    first = cmd.split(" ", 1)[0]
    if first.startswith("ray::"):
        return first
    if first.startswith("ray-dashboard-"):
        return "dashboard modules"
    for word in cmd.split():
        name = word.rsplit("/", 1)[-1]
        if name.endswith(".py") or name in ("gcs_server", "raylet"):
            return name
    return first.rsplit("/", 1)[-1] or "?"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Training rate (samples/s) of the Ray Train loop (pipelines.stages.train.train, 1 worker) against a plain "
        "PyTorch loop over the same model, loss, optimiser and shard stream, measured in one run; plus FLOP per "
        "sample and achieved FLOP/s. Table on stdout, progress on stderr.",
    )
    p.add_argument("--steps", type=int, default=40, help="training steps per run (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=10,
                   help="steps left out of the steady window at the start of each run; a multiple of --log-every, "
                   "since the Ray window starts at a logged step (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=None, help=f"global batch (default: tasks.{TASK}.optim.batch_size)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each loop; medians are printed (default: %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cpu, or cuda (one GPU for the Ray worker; bf16 autocast and channels_last as train.bf16 / "
                   "train.channels_last say) (default: %(default)s)")
    p.add_argument("--cpus-per-worker", type=int, default=None,
                   help="Ray CPUs of the worker, also torch threads in both loops (default: train.cpus_per_worker)")
    p.add_argument("--loader-workers", type=int, default=None,
                   help="DataLoader processes in both loops (default: train.loader_workers)")
    p.add_argument("--log-every", type=int, default=None, help="MLflow logging interval of the Ray loop (default: train.log_every)")
    p.add_argument("--worker-niceness", type=int, default=None,
                   help="set RAY_worker_niceness for the Ray runs (Ray starts its workers at nice 15 unless told "
                   "otherwise; the plain loop runs at this process's niceness) (default: Ray's own)")
    p.add_argument("--quiet", type=float, default=0.1,
                   help="a window is 'quiet' when other work on the host used less than this many cores during it; the "
                   "overhead is also printed over quiet windows alone (default: %(default)s)")
    p.add_argument("--shards", type=Path, default=ROOT / "data" / "shards" / TASK,
                   help="the sr_x4 shard folder (index.json + tars) to train on, copied into the work folder; when it "
                   "is missing, small shards are built from --datasets (default: %(default)s)")
    p.add_argument("--datasets", type=Path, default=None,
                   help="datasets folder holding T91/HR and Set5/HR, only used to build shards when --shards is "
                   "missing (default: $PERCEPT_DATASETS, else ../shared/datasets)")
    p.add_argument("--build-images", type=int, default=24,
                   help="T91 images to build shards from when --shards is missing (default: %(default)s)")
    p.add_argument("--val-images", type=int, default=2,
                   help="val images kept in the copy of the shards: train() validates on them after its last step, "
                   "outside the measured window, so fewer only shortens the run; 0 keeps them all (default: %(default)s)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="work folder (project root of the Ray runs; kept); default: a temporary folder removed at the end")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="settings file (default: %(default)s)")
    args = p.parse_args(argv)
    if args.steps < 2 or args.repeats < 1:
        p.error("--steps must be >= 2 and --repeats >= 1")
    for name in ("batch_size", "cpus_per_worker", "log_every", "build_images"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if (args.loader_workers is not None and args.loader_workers < 0) or args.val_images < 0:
        p.error("--loader-workers and --val-images must be >= 0")
    if not 0 < args.warmup < args.steps:
        p.error("--warmup must be between 1 and --steps - 1")
    return args


# --- settings and data ---------------------------------------------------------------------


def load_raw(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    raw = yaml.safe_load(args.params.read_text())
    raw["profile"] = None
    return raw


def bench_config(args: argparse.Namespace, raw: dict[str, Any], work: Path, repeat: int):
    """params.yaml with the benchmark's run length and everything it writes pointed into ``work``.

    Each repeat gets its own checkpoint folder and MLflow experiment: the run name is deterministic
    (task + settings + shards), so sharing either would resume the previous repeat instead of training.
    """
    from pipelines.common.params import parse_config

    raw = copy.deepcopy(raw)
    task = raw["tasks"][TASK]
    optim = dict(task.get("optim") or {})
    optim["steps"] = args.steps
    if args.batch_size is not None:
        optim["batch_size"] = args.batch_size
    task["optim"] = optim
    train = raw.setdefault("train", {})
    train.update(tasks=[TASK], workers=1, ray_address=None, storage_path=str(work / "runs" / f"r{repeat}"),
                 checkpoint_every=args.steps, gpus_per_worker=1 if args.device == "cuda" else 0)
    for key, value in (("cpus_per_worker", args.cpus_per_worker), ("loader_workers", args.loader_workers),
                       ("log_every", args.log_every)):
        if value is not None:
            train[key] = value
    raw["compare"] = {}  # its sheet names models this benchmark does not train
    raw["mlflow"] = {"tracking_uri": f"sqlite:///{work / 'mlflow.db'}", "artifact_location": str(work / "mlartifacts"),
                     "experiment": f"bench-train-r{repeat}"}
    cfg = parse_config(with_feature_weights(raw, ROOT), source=f"{args.params} (benchmark settings)")
    if args.warmup % cfg.train.log_every:
        raise SystemExit(f"error: --warmup ({args.warmup}) must be a multiple of log_every ({cfg.train.log_every}): "
                         "the Ray window starts at a logged step")
    return cfg


def prepare_shards(args: argparse.Namespace, raw: dict[str, Any], dest: Path) -> str:
    """The shards the runs train on, in ``dest``: a copy of --shards, else a small fresh build."""
    if (args.shards / "index.json").is_file():
        shutil.copytree(args.shards, dest)
        return f"copy of {args.shards}"
    from pipelines.common.paths import Paths

    datasets = args.datasets or Paths(ROOT).datasets()
    for sub in ("T91/HR", "Set5/HR"):
        if not (datasets / sub).is_dir():
            raise SystemExit(f"error: {args.shards}/index.json not found, and cannot build shards: {datasets / sub} "
                             "not found (set $PERCEPT_DATASETS or pass --datasets)")
    progress(f"{args.shards} not found: building {TASK} shards from {args.build_images} T91 images (+ Set5 as val)")
    return build_shards(raw, datasets, dest, args.build_images)


def trim_val(shards: Path, keep: int) -> int:
    """Keep the first ``keep`` val samples of the shard folder (rewriting its val tars and index.json);
    the train split is left byte for byte. Returns the val samples left."""
    import hashlib
    import io
    import tarfile

    index_path = shards / "index.json"
    index = json.loads(index_path.read_text())
    entries, kept = [], 0
    for entry in index["shards"]:
        if entry["split"] != "val":
            entries.append(entry)
            continue
        path = shards / entry["name"]
        members: list[tuple[tarfile.TarInfo, bytes]] = []
        keys: list[str] = []
        with tarfile.open(path) as tar:
            for m in tar:
                key = m.name.split(".", 1)[0]  # webdataset's sample key: the name up to the first dot
                if key not in keys:
                    if kept + len(keys) >= keep:
                        break
                    keys.append(key)
                members.append((m, tar.extractfile(m).read() if m.isfile() else b""))
        if not keys:
            path.unlink()
            continue
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for m, data in members:
                tar.addfile(m, io.BytesIO(data))
        path.write_bytes(buf.getvalue())
        kept += len(keys)
        entries.append({**entry, "samples": len(keys), "bytes": len(buf.getvalue()),
                        "sha256": hashlib.sha256(buf.getvalue()).hexdigest()})
    index["shards"] = entries
    index["splits"]["val"] = kept
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return kept


def build_shards(raw: dict[str, Any], datasets: Path, dest: Path, images: int) -> str:
    """As benchmarks/data.py does: ingest T91 (first ``images``) + Set5, shard the sr_x4 train and val splits."""
    import random

    from pipelines.common.params import parse_config

    work = dest.parent / "build"
    pick = work / "T91"
    pick.mkdir(parents=True)
    files = sorted(p for p in (datasets / "T91" / "HR").iterdir() if p.is_file())
    for path in random.Random(0).sample(files, min(images, len(files))):
        os.symlink(path, pick / path.name)
    raw = copy.deepcopy(raw)
    raw["ingest"]["sources"] = [{"uri": str(pick), "split": "train"}, {"uri": str(datasets / "Set5" / "HR"), "split": "val"}]
    raw["ingest"]["follow_links"] = True  # the picks are links into the datasets folder
    raw["data"] = {"engine": "local"}  # a few images: this process, no Ray start for a build step
    cfg = parse_config(raw, source="benchmark shard settings")
    shard(cfg, TASK, ingest(cfg, work / "manifest"), dest)
    return f"built from {images} T91 images"


# --- the pieces both loops share --------------------------------------------------------------


def build_pieces(cfg, device):
    """Model, loss, optimiser and scheduler exactly as ``train_loop_per_worker`` builds them (1 worker)."""
    import torch

    from pipelines.use.pretrained import init_pretrained, task_loss
    from training.loop import make_optimizer
    from training.models import build_transform_net

    params = cfg.task(TASK)
    degradation = params.degradation
    model_config = params.model.model_copy(update={"in_channels": degradation.input_channels})
    torch.manual_seed(cfg.seed)
    model = build_transform_net(model_config, degradation.input_scale)
    if step_args(cfg, device)[0]:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)  # what ray.train.torch.prepare_model does for one worker (no DDP wrapper)
    init_pretrained(model, cfg.feature_net)
    loss_fn = task_loss(params, cfg.feature_net, ROOT, device)
    optimizer, scheduler = make_optimizer(model, params.optim)
    return model, loss_fn, optimizer, scheduler


def stream(cfg, shards: Path, loader_workers: int | None = None):
    from training.pairs import sample_seed
    from training.shards import shard_urls, train_batches

    params = cfg.task(TASK)
    return train_batches(
        shard_urls(shards, "train"), params.optim.batch_size,
        seed=sample_seed(cfg.seed, TASK, "train-stream", 0) % 2**31,  # the product's seed for a fresh run
        order=cfg.train.data_order, shuffle_buffer=cfg.train.shuffle_buffer,
        loader_workers=cfg.train.loader_workers if loader_workers is None else loader_workers,
    )


def step_args(cfg, device):
    from training.loop import step_precision

    return step_precision(cfg.train.channels_last, cfg.train.bf16, device)


def count_flops(cfg, shards: Path, device) -> dict[str, float]:
    """FLOP per sample of the network's forward pass and of one whole training step."""
    import torch

    from training.loop import to_model_input, train_step
    from training.models import count_parameters

    params = cfg.task(TASK)
    channels_last, autocast = step_args(cfg, device)
    model, loss_fn, optimizer, scheduler = build_pieces(cfg, device)
    batches = stream(cfg, shards, loader_workers=0)
    inputs, targets = next(batches)
    x = to_model_input(inputs, params.degradation.input_channels, device, channels_last)
    y = to_model_input(targets, 3, device, channels_last)
    n = x.shape[0]
    with torch.no_grad(), torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        forward, _ = flop_count(lambda: model(x))
    step, by_module = flop_count(lambda: train_step(model, loss_fn, optimizer, scheduler, x, y, params.optim.grad_clip, autocast))
    net = by_module.get(type(model).__name__, 0.0)  # the network class the task's model.arch builds
    vgg = by_module.get(type(loss_fn).__name__, 0.0)
    return {"forward": forward / n, "step": step / n, "step_net": net / n, "step_loss": vgg / n,
            "params": count_parameters(model), "input": tuple(x.shape[1:]), "target": tuple(y.shape[1:])}


# --- the two loops -------------------------------------------------------------------------------


def run_plain(cfg, shards: Path, device, warmup: int) -> dict[str, Any]:
    """The training loop with no Ray: times each step from batch fetch to the end of train_step."""
    import torch

    from training.loop import to_model_input, train_step

    params = cfg.task(TASK)
    torch.set_num_threads(cfg.train.cpus_per_worker)
    channels_last, autocast = step_args(cfg, device)
    t_start = time.perf_counter()
    model, loss_fn, optimizer, scheduler = build_pieces(cfg, device)
    batches = stream(cfg, shards)
    marks = [time.perf_counter()]  # marks[k] = end of step k (marks[0]: the loop's start)
    walls = [time.time()]
    for _ in range(params.optim.steps):
        inputs, targets = next(batches)
        train_step(
            model, loss_fn, optimizer, scheduler,
            to_model_input(inputs, params.degradation.input_channels, device, channels_last),
            to_model_input(targets, 3, device, channels_last),
            params.optim.grad_clip, autocast,
        )
        marks.append(time.perf_counter())
        walls.append(time.time())
    del batches  # stops the persistent DataLoader worker before the next run
    gc.collect()
    steps, every = params.optim.steps, cfg.train.log_every
    window = marks[steps] - marks[warmup]
    edges = sorted({*range(warmup, steps, every), steps})
    blocks = [params.optim.batch_size * (b - a) / (marks[b] - marks[a]) for a, b in zip(edges, edges[1:])]
    return {"rate": params.optim.batch_size * (steps - warmup) / window, "window_s": window, "wall": (walls[warmup], walls[steps]),
            "blocks": blocks,
            "first_steps_s": marks[warmup] - marks[0], "setup_s": marks[0] - t_start, "total_s": time.perf_counter() - t_start}


def run_ray(cfg, root: Path, warmup: int, niceness: int | None = None) -> dict[str, Any]:
    """pipelines.stages.train.train on ``root``; the steady rate from the rank-0 worker's MLflow timestamps."""
    import ray

    from pipelines.services import tracking
    from pipelines.common.paths import Paths
    from pipelines.services.engine import init_ray, stop_ray
    from pipelines.stages.train import train

    params = cfg.task(TASK)
    steps, batch = params.optim.steps, params.optim.batch_size
    os.environ.pop("RAY_ADDRESS", None)  # a local Ray on this machine, as cfg.train.ray_address is null
    if niceness is not None:  # read by the raylet that init_ray starts
        os.environ["RAY_worker_niceness"] = str(niceness)
    with contextlib.redirect_stdout(sys.stderr):  # Ray's forwarded worker output and train()'s summary line
        t0 = time.perf_counter()
        try:
            init_ray(cfg)
            t1 = time.perf_counter()
            wall_start = time.time()
            outcome = train(TASK, cfg, Paths(root))
            wall_end = time.time()
            t2 = time.perf_counter()
        finally:
            stop_ray()  # and its /tmp/rayXXXX folder
        t3 = time.perf_counter()
    client = tracking.client(cfg.mlflow, root)
    stamps = {m.step: m.timestamp / 1000 for m in client.get_metric_history(outcome.mlflow_run_id, "loss_total")}
    meter = {m.step: m.value for m in client.get_metric_history(outcome.mlflow_run_id, "samples_per_s")}
    if warmup not in stamps or steps not in stamps:
        raise RuntimeError(f"the Ray run logged steps {sorted(stamps)}; expected {warmup} and {steps}")
    window = stamps[steps] - stamps[warmup]
    edges = [s for s in sorted(stamps) if warmup <= s <= steps]
    blocks = [batch * (b - a) / (stamps[b] - stamps[a]) for a, b in zip(edges, edges[1:])]
    return {"rate": batch * (steps - warmup) / window, "window_s": window, "wall": (stamps[warmup], stamps[steps]),
            "blocks": blocks,
            "meter": {s: v for s, v in meter.items() if s - METER_WINDOW >= warmup},
            "ray_init_s": t1 - t0, "before_window_s": stamps[warmup] - wall_start, "after_window_s": wall_end - stamps[steps],
            "train_s": t2 - t1, "shutdown_s": t3 - t2, "total_s": t3 - t0}


def mlflow_log_cost(cfg, root: Path, n: int = 5) -> float:
    """Seconds per ``tracking.log_metrics`` call of the product's metric set into the benchmark's sqlite."""
    from pipelines.services import tracking

    client = tracking.client(cfg.mlflow, root)
    exp = tracking.experiment_id(client, cfg, root)
    run_id = client.create_run(exp, run_name="log-cost").info.run_id
    metrics = {f"loss_{k}": 0.1 for k in ("total", "pixel", "feature")}
    metrics.update(lr=1e-4, grad_norm=1.0, samples_per_s=10.0)
    tracking.log_metrics(client, run_id, metrics, step=0)  # first write warms the connection
    t0 = time.perf_counter()
    for i in range(n):
        tracking.log_metrics(client, run_id, metrics, step=i + 1)
    return (time.perf_counter() - t0) / n


# --- report -----------------------------------------------------------------------------------------


def report(args, cfg, flops, plain: list[dict], rays: list[dict], order: list[str], log_cost: float, shards: Path,
           source: str, load_start: str, elapsed: float) -> None:
    import ray
    import torch

    params = cfg.task(TASK)
    steps, warmup, batch = params.optim.steps, args.warmup, params.optim.batch_size
    cuda = args.device == "cuda"
    unit, scale = ("TFLOP/s", 1e12) if cuda else ("GFLOP/s", 1e9)
    samples = json.loads((shards / "index.json").read_text())["splits"]["train"]
    device = torch.cuda.get_device_name(0) if cuda and torch.cuda.is_available() else f"{os.cpu_count()} cores"
    amp = f", bf16 autocast={'on' if cfg.train.bf16 else 'off'}, channels_last={'on' if cfg.train.channels_last else 'off'}" if cuda else ""
    out = [
        f"percept train benchmark — {TASK}, {samples} train samples ({source}), {flops['input'][1]} px inputs -> "
        f"{flops['target'][1]} px targets, batch {batch}, {steps} steps per run",
        f"device {args.device} ({device}{amp}); torch threads = cpus_per_worker = {cfg.train.cpus_per_worker}, "
        f"loader_workers {cfg.train.loader_workers}, log_every {cfg.train.log_every}; python {sys.version.split()[0]}, "
        f"torch {torch.__version__}, ray {ray.__version__}",
        "",
        f"model: {params.model.arch} (" + ", ".join(f"{k} {v}" for k, v in params.model.model_dump().items() if k != "arch")
        + f"), {flops['params'] / 1e6:.3f} M parameters; loss "
        + " + ".join(f"{k} {v}" for k, v in (("pixel " + params.loss.pixel, params.loss.pixel_weight),
                                              (f"feature {params.loss.feature_layer}", params.loss.feature_weight),
                                              ("style", params.loss.style_weight), ("tv", params.loss.tv_weight)) if v > 0),
        f"FLOP per sample (FlopCounterMode, one batch of {batch}; conv/matmul only):",
        f"   network forward                              {flops['forward'] / 1e9:8.3f} GFLOP",
        f"   training step (fwd+bwd, incl. VGG loss)       {flops['step'] / 1e9:8.3f} GFLOP "
        f"(network fwd+bwd {flops['step_net'] / 1e9:.3f}, VGG passes {flops['step_loss'] / 1e9:.3f})",
        "",
        f"steady rate over steps {warmup + 1}-{steps} of each run (the first {warmup} steps and all start-up excluded); "
        f"order {' '.join(order)}",
        f"   {'loop':<6}  {'repeat':>6}  {'samples/s':>9}  {'window s':>8}  {unit:>8}  {'s/step':>7}  "
        f"{'loop cores':>10}  {'loop CPU-s/sample':>17}  {'ray daemons cores':>17}  {'outside cores (niced)':>21}",
    ]
    step_flop = flops["step"]
    for name, rows in (("plain", plain), ("ray", rays)):
        for i, r in enumerate(rows):
            c = r.get("cpu")
            cpu = (f"  {c['loop']:>10.2f}  {c['loop_cpu_s'] / (r['rate'] * r['window_s']):>17.3f}  "
                   f"{c['rest']:>17.2f}  {c['outside']:>13.2f} ({c['outside_niced']:.2f})") if c else ""
            mark = " *" if c and c["outside"] >= args.quiet else ""
            out.append(f"   {name:<6}  {i + 1:>6}  {r['rate']:>9.2f}  {r['window_s']:>8.2f}  "
                       f"{r['rate'] * step_flop / scale:>8.2f}  {batch / r['rate']:>7.3f}{cpu}{mark}")
    p = statistics.median(r["rate"] for r in plain)
    q = statistics.median(r["rate"] for r in rays)
    out.append(f"   median: plain {p:.2f} samples/s ({p * step_flop / scale:.2f} {unit}), "
               f"Ray {q:.2f} samples/s ({q * step_flop / scale:.2f} {unit})")
    overhead = (p / q - 1) * 100
    per = [(a["rate"] / b["rate"] - 1) * 100 for a, b in zip(plain, rays)]
    out.append(f"   Ray / plain = {q / p:.3f}: Ray overhead {overhead:+.1f} % extra time per sample (goal < 10 %); "
               f"per repeat " + ", ".join(f"{x:+.1f} %" for x in per))
    quiet = {name: [r["rate"] for r in rows if r.get("cpu") and r["cpu"]["outside"] < args.quiet]
             for name, rows in (("plain", plain), ("ray", rays))}
    if any(r.get("cpu") for r in plain + rays):
        if quiet["plain"] and quiet["ray"]:
            qp, qq = statistics.median(quiet["plain"]), statistics.median(quiet["ray"])
            out.append(f"   quiet windows only (other work < {args.quiet:g} cores; * marks the others): plain {qp:.2f} "
                       f"({len(quiet['plain'])} of {len(plain)}), Ray {qq:.2f} ({len(quiet['ray'])} of {len(rays)}) samples/s "
                       f"-> Ray overhead {(qp / qq - 1) * 100:+.1f} %")
        else:
            out.append(f"   quiet windows only: none for {' and '.join(k for k, v in quiet.items() if not v)} (other work >= "
                       f"{args.quiet:g} cores, marked *): the figures above mix in other users of the machine; run again when it is idle")
    bp = statistics.median(b for r in plain for b in r["blocks"])
    bq = statistics.median(b for r in rays for b in r["blocks"])
    out.append(f"   less sensitive to bursts of other work: median over the {cfg.train.log_every}-step blocks of all windows "
               f"(plain {sum(len(r['blocks']) for r in plain)}, Ray {sum(len(r['blocks']) for r in rays)} blocks): plain {bp:.2f}, "
               f"Ray {bq:.2f} samples/s -> Ray overhead {(bp / bq - 1) * 100:+.1f} %")
    meter = [v for r in rays for v in r["meter"].values()]
    if meter:
        steps_logged = sorted({s for r in rays for s in r["meter"]})
        out.append(f"   cross-check: the product's samples_per_s ({METER_WINDOW}-step window) at steps "
                   f"{', '.join(map(str, steps_logged))}: median {statistics.median(meter):.2f}")
    kinds: dict[str, list[float]] = {}
    for r in rays:
        for k, v in (r.get("cpu") or {}).get("by_kind", {}).items():
            kinds.setdefault(k, []).append(v)
    if kinds:
        top = sorted(((statistics.median(v), k) for k, v in kinds.items()), reverse=True)[:6]
        out.append("   ray daemons by process, median cores over the Ray windows: "
                   + ", ".join(f"{k} {v:.3f}" for v, k in top))
    nice = {name: sorted({n for r in rows if r.get("cpu") for n in r["cpu"]["nice"]}) for name, rows in (("plain", plain), ("ray", rays))}
    if nice["ray"]:
        out.append(f"   niceness of the loop process: plain {'/'.join(map(str, nice['plain']))}, Ray worker "
                   f"{'/'.join(map(str, nice['ray']))}" + (" (RAY_worker_niceness, from --worker-niceness)" if args.worker_niceness is not None
                                                          else " (Ray's default worker_niceness)"))
    if any(r.get("cpu") and not r["cpu"]["found_loop"] for r in rays):
        out.append("   WARNING: no RayTrainWorker process was found: the Ray loop's CPU is counted as daemons")
    writes = (steps - warmup) // cfg.train.log_every
    window = statistics.median(r["window_s"] for r in rays)
    out.append("   (cores: CPU-seconds per second over the window, from psutil every 0.5 s. loop = the process running the "
               "steps and its DataLoader workers; ray daemons = every other process this benchmark started, Ray's raylet, "
               "GCS, dashboard, train controller and this driver; outside = the rest of the host's busy CPU, in brackets the part "
               "that ran at nice > 0, e.g. other Ray workers; the sampling itself cost "
               f"{statistics.median(r.get('sampler_cores', 0.0) for r in plain + rays):.3f} cores, in the plain loop's process "
               "and in the Ray driver)")
    out.append(f"   MLflow writes inside the Ray window: {writes} x {log_cost * 1000:.1f} ms (measured here) = "
               f"{100 * writes * log_cost / window:.1f} % of it")
    out.append("")
    out.append("fixed costs, outside the rates (medians, s):")
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    out.append(f"   ray: ray.init {med(rays, 'ray_init_s'):.1f}; train() start to step {warmup} logged "
               f"{med(rays, 'before_window_s'):.1f}; last step to train() return (checkpoint, validation, models/) "
               f"{med(rays, 'after_window_s'):.1f}; ray.shutdown {med(rays, 'shutdown_s'):.1f}; all {med(rays, 'total_s'):.1f}")
    out.append(f"   plain: build {med(plain, 'setup_s'):.1f}; first {warmup} steps {med(plain, 'first_steps_s'):.1f}; "
               f"all {med(plain, 'total_s'):.1f}")
    out.append("")
    out.extend(ending(load_start, elapsed))
    print("\n".join(out), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    load_start = load_average()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    raw = load_raw(args)
    if args.workdir is None:
        work, cleanup = Path(tempfile.mkdtemp(prefix="percept-bench-train-")), True
    else:
        work, cleanup = args.workdir.resolve(), False
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            print(f"error: {work} is not empty; give an empty or new --workdir", file=sys.stderr)
            return 2
    progress(f"work folder {work}{' (temporary)' if cleanup else ''}")
    try:
        root = work / "root"
        shards = root / "data" / "shards" / TASK
        source = prepare_shards(args, raw, shards)
        if args.val_images:
            val = trim_val(shards, args.val_images)
            source += f", val split cut to {val} image(s)"
        cfgs = [bench_config(args, raw, work, r) for r in range(args.repeats)]
        device = torch.device(args.device)
        progress("counting FLOP on one batch")
        flops = count_flops(cfgs[0], shards, device)
        plain, rays, order = [], [], []
        for r, cfg in enumerate(cfgs):
            for name in ("plain", "ray") if r % 2 == 0 else ("ray", "plain"):
                progress(f"repeat {r + 1}/{args.repeats}: {name} loop, {cfg.task(TASK).optim.steps} steps")
                with CpuSampler() as sampler:
                    res = run_plain(cfg, shards, device, args.warmup) if name == "plain" else run_ray(cfg, root, args.warmup, args.worker_niceness)
                res["cpu"] = sampler.window(*res["wall"], None if name == "plain" else "RayTrainWorker")
                res["sampler_cores"] = sampler.own_cores
                (plain if name == "plain" else rays).append(res)
                order.append(name)
                progress(f"   {res['rate']:.2f} samples/s over steps {args.warmup + 1}-{args.steps} ({res['total_s']:.1f} s in all)")
        log_cost = mlflow_log_cost(bench_config(args, raw, work, args.repeats), root)
        report(args, cfgs[0], flops, plain, rays, order, log_cost, shards, source, load_start, time.perf_counter() - start)
    finally:
        if cleanup:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
