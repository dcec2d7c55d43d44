"""The ``train`` stage: a Ray Train ``TorchTrainer`` running ``training.loop`` on every worker.

The driver names the run deterministically (task + params + shard index), so running the same
command again resumes from the last checkpoint in ``storage_path`` (Ray Train V2 semantics); it
also owns the single MLflow run, which rank 0 logs into. The outputs under ``models/<task>/``
(weights, config, loss curves, MLflow run id) are replaced whole when training ends.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipelines.common.fingerprints import run_name
from pipelines.common.fsutil import atomic_write_text, staging_dir
from pipelines.common.params import parse_config
from pipelines.common.paths import Paths
from pipelines.common.schema import Config
from pipelines.services import tracking
from pipelines.services.engine import init_ray, stop_ray
from pipelines.services.plots import TEMPLATE, write_plots_template
from training.models import build_transform_net
from training.pairs import sample_seed
from training.shards import shard_urls

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
SCORE = "score"  # a trial's figure on the tuning split: the task's gate metric (pipelines/search/)
RUNG = "rung"  # which of its report steps a trial has reached: the scheduler's clock, right after a resume too
LOSS_KEYS = ["total", "pixel", "feature", "style", "tv", "ssim", "colour", "batch_colour", "gan", "disc"]


@dataclass(frozen=True)
class TrainOutcome:
    run_name: str
    mlflow_run_id: str
    steps: int
    model_dir: Path
    losses: dict[str, float]  # the last logged step's loss parts


# ------------------------------------------------------------------------------------------
# Driver


def storage(cfg: Config, root: Path) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for RunConfig: a local folder, or S3 through s3fs.

    pyarrow's own S3 filesystem ignores endpoint overrides from the environment and trips on
    S3-compatible servers' directory markers, so an s3:// path goes through s3fs.
    """
    path = cfg.checkpoint_storage
    if not path.startswith("s3://"):
        return str((root / path).resolve()), None
    import boto3
    import pyarrow.fs
    import s3fs

    # Credentials come from the standard chain here, on the driver, and travel with the
    # filesystem object to the workers, which may not have the same environment or profile.
    found = boto3.Session().get_credentials()
    keys = {}
    if found is not None:
        frozen = found.get_frozen_credentials()
        keys = {"key": frozen.access_key, "secret": frozen.secret_key, "token": frozen.token}
    fs = s3fs.S3FileSystem(
        endpoint_url=cfg.s3.endpoint_url, client_kwargs={"region_name": cfg.s3.region} if cfg.s3.region else None, **keys
    )
    return path.removeprefix("s3://"), pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def worker_params(cfg: Config, root: Path) -> dict[str, Any]:
    """The config as plain data for the workers, with paths made absolute (workers run elsewhere)."""
    data = cfg.model_dump(mode="json")
    data["feature_net"]["weights"] = str((root / cfg.feature_net.weights).resolve())
    for name in cfg.task_names:
        options = data["tasks"][name].get("options") or {}
        if "style_image" in options:
            options["style_image"] = str((root / options["style_image"]).resolve())
    data["mlflow"]["tracking_uri"] = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, root)
    return data


IN_JOB_ENV = "PERCEPT_IN_RAY_JOB"  # set in a submitted job's driver: train there, do not submit again


def job_server(cfg: Config) -> str | None:
    """The Ray job server ``percept train`` submits itself to: an ``http(s)://`` ``train.ray_address``
    (the dashboard's address), unless this process already is that job's driver."""
    address = cfg.train.ray_address or ""
    return address if address.startswith(("http://", "https://")) and not os.environ.get(IN_JOB_ENV) else None


AGENT_WAIT_S = 180  # a head just started (or busy) may not have its job agent yet: Ray says "try again later"


def submit_when_ready(client, entrypoint: str, runtime_env: dict, wait_s: float = AGENT_WAIT_S,
                      pause_s: float = 5) -> str:
    """``client.submit_job``, submitted again while the job server answers that it has no agent yet."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as error:  # the SDK's error for an HTTP 500 from the job server
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            log.warning("the Ray job server has no job agent yet; submitting again in %g s", pause_s)
            time.sleep(pause_s)


def submit_job(task: str, cfg: Config, params_file: Path, root: Path = Path(".")) -> None:
    """Submit this very command as a Ray job, as the KubeRay RayJob's entrypoint does: the driver
    runs on the cluster's head, in the project folder every node shares (same path), with the
    head's environment (the stack gives its nodes the MLflow, S3 and profile settings). It blocks,
    streams the job's output, and raises when the job fails."""
    import shlex
    import subprocess
    import sys

    from ray.job_submission import JobStatus, JobSubmissionClient

    address = job_server(cfg)
    entrypoint = (f"cd {shlex.quote(str(root.resolve()))} && {shlex.quote(sys.executable)} -m pipelines.cli "
                  f"--params {shlex.quote(str(params_file.resolve()))} train --task {shlex.quote(task)}")
    forwarded = {k: v for k, v in os.environ.items() if k == "PERCEPT_PROFILE"}  # no secrets in the job's record
    runtime_env = {"env_vars": {IN_JOB_ENV: "1", **forwarded}}
    log.info("submitting %s to the Ray job server %s", task, address)
    client = JobSubmissionClient(address)
    job_id = submit_when_ready(client, entrypoint, runtime_env)
    log.info("Ray job %s: following its output (`ray job logs %s --address %s`)", job_id, job_id, address)
    subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "logs", "--follow", "--address", address, job_id])
    while not (status := client.get_job_status(job_id)).is_terminal():  # the log stream can end first
        time.sleep(1)
    if status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"the Ray job training {task} ended {status.value} (`ray job logs {job_id} --address "
                           f"{address}` shows why)")


def train(task: str, cfg: Config, paths: Paths = Paths()) -> TrainOutcome:
    params = cfg.task(task)
    index_path = paths.shards(task) / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} not found: run `percept shard --task {task}` (or `dvc repro`) first")
    root = paths.root.resolve()
    name = run_name(task, cfg, index_path)
    mlflow = tracking.client(cfg.mlflow, root)
    exp_id = tracking.experiment_id(mlflow, cfg, root)
    run_id, resumed = tracking.find_or_create_run(mlflow, exp_id, name, {"percept.task": task})
    tracking.log_params(mlflow, run_id, {"task": task, **params.model_dump(mode="json", exclude={"name"}),
                                         "train": cfg.train.model_dump(mode="json"), "seed": cfg.seed})
    log.info("training %s as run %s (MLflow run %s%s)", task, name, run_id, ", resumed" if resumed else "")

    started = init_ray(cfg)
    try:
        return _fit(task, cfg, paths, name, run_id, exp_id, mlflow)
    finally:
        if started:
            stop_ray()


def make_trainer(task: str, cfg: Config, root: Path, shards: Path, name: str, run_id: str,
                 score_on: Path | None = None, report_steps: list[int] | None = None, callbacks: list | None = None):
    """The ``TorchTrainer`` of one training: ``train_loop_per_worker`` on ``shards`` under the run
    ``name`` (the same name resumes from its last checkpoint), logging into MLflow run ``run_id``.
    A search's trial: ``score_on``, a folder of clean images each report also scores the model on;
    ``report_steps``, steps that checkpoint and report besides every ``train.checkpoint_every``."""
    import ray.train
    from ray.train.torch import TorchTrainer

    storage_path, filesystem = storage(cfg, root)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "params": worker_params(cfg, root),
            "task": task,
            "shards": str(shards.resolve()),
            "mlflow_run_id": run_id,
            **({"score_on": str(score_on.resolve())} if score_on else {}),
            **({"report_steps": report_steps} if report_steps else {}),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.workers,
            use_gpu=cfg.train.gpus_per_worker > 0,
            resources_per_worker=worker_resources(cfg),
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            callbacks=callbacks,
        ),
    )


def worker_resources(cfg: Config) -> dict[str, float]:
    """What each Ray Train worker reserves."""
    return {"CPU": cfg.train.cpus_per_worker, **({"GPU": cfg.train.gpus_per_worker} if cfg.train.gpus_per_worker else {})}


def _fit(task: str, cfg: Config, paths: Paths, name: str, run_id: str, exp_id: str, mlflow) -> TrainOutcome:
    trainer = make_trainer(task, cfg, paths.root.resolve(), paths.shards(task), name, run_id)
    try:
        result = trainer.fit()
    except BaseException:
        mlflow.set_terminated(run_id, status="FAILED")
        raise
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    write_model_dir(task, cfg, paths, state, name, run_id, exp_id, mlflow)
    mlflow.set_terminated(run_id, status="FINISHED")
    # The figures a user judges the model by come from the evaluate stage (whole images, the
    # field's protocol, every metric of the task), which logs them into this same MLflow run.
    losses = {k.removeprefix("loss_"): v for k, v in (result.metrics or {}).items() if k.startswith("loss_")}
    parts = ", ".join(f"{k} {v:.4g}" for k, v in losses.items() if k != "total")
    print(f"train {task}: {state['step']} steps -> {paths.models(task)}; last loss {losses.get('total', float('nan')):.4g}"
          f"{f' ({parts})' if parts else ''}; `percept evaluate --task {task} --model {paths.models(task)}` scores it")
    return TrainOutcome(name, run_id, state["step"], paths.models(task), losses)


def write_model_dir(task: str, cfg: Config, paths: Paths, state: dict[str, Any], name: str, run_id: str, exp_id: str, mlflow) -> None:
    history = tracking.metric_history(mlflow, run_id, [f"loss_{k}" for k in LOSS_KEYS] + ["lr", "samples_per_s"])
    columns = sorted({k for row in history.values() for k in row})
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(["step", *columns])
    for step, row in history.items():
        writer.writerow([step, *(f"{row[c]:.6g}" if c in row else "" for c in columns)])
    with staging_dir(paths.models(task)) as tmp:
        model_file = {k: state[k] for k in ("task", "scale", "model_config", "model", "step", "level") if k in state}
        torch.save(model_file, tmp / "model.pt")
        atomic_write_text(tmp / "config.json", json.dumps(cfg.task(task).model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
        run = {"run_name": name, "mlflow_run_id": run_id, "mlflow_experiment_id": exp_id,
               "tracking_uri": tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, paths.root), "steps": state["step"]}
        atomic_write_text(tmp / "run.json", json.dumps(run, indent=2, sort_keys=True) + "\n")
    atomic_write_text(paths.train_plot(task), buf.getvalue())
    write_plots_template(paths.root / TEMPLATE)  # `dvc plots show` draws these curves offline


# ------------------------------------------------------------------------------------------
# Worker


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: DDP model, seeded resampled shards, periodic checkpoints."""
    import ray.train
    import ray.train.torch

    from pipelines.use.pretrained import init_pretrained, task_loss
    from training.adversarial import Adversary, UNetDiscriminatorSN
    from training.loop import (
        WeightAverage,
        checkpoint_state,
        make_optimizer,
        prefetch_to_device,
        restore_state,
        step_precision,
        to_model_input,
        train_step,
    )
    from training.shards import train_batches

    cfg = parse_config(config["params"])
    task = config["task"]
    params = cfg.task(task)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.train.cpus_per_worker)
    device = ray.train.torch.get_device()
    channels_last, autocast = step_precision(cfg.train.channels_last, cfg.train.bf16, device)

    degradation = params.degradation
    model_config = params.model.model_copy(update={"in_channels": degradation.input_channels})
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts them)
    model = build_transform_net(model_config, degradation.input_scale)
    init_pretrained(model, cfg.feature_net)  # colornet: its encoder starts as the feature network
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    loss_fn = task_loss(params, cfg.feature_net, device=device)  # worker_params made its paths absolute
    optimizer, scheduler = make_optimizer(model, params.optim)
    average = WeightAverage(model, params.optim.ema_decay) if params.optim.ema_decay > 0 else None
    adversary = None
    if params.loss.gan.weight > 0:  # the discriminator: DDP like the network, checkpointed with it
        disc = UNetDiscriminatorSN(3, params.loss.gan.features)
        if channels_last:
            disc = disc.to(memory_format=torch.channels_last)
        adversary = Adversary(params.loss.gan, device, ray.train.torch.prepare_model(disc))

    scorer, report_at = None, set(config.get("report_steps") or ())  # a trial's rungs, besides checkpoint_every
    if rank == 0 and config.get("score_on"):  # a search's trial: scored at each report (pipelines/search/)
        from pipelines.use.scoring import checkpoint_scorer

        scorer = checkpoint_scorer(task, cfg, Path(config["score_on"]))
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location=device, weights_only=True)
            if state["step"] >= params.optim.steps and report_at:
                # A trial that had ended when its search was stopped, before Tune recorded it: its
                # last figure again, since Tune needs one from every trial it runs.
                report = {"step": state["step"], RUNG: len(report_at), **({SCORE: scorer(Path(folder) / STATE_FILE)} if scorer else {})}
                ray.train.report(report)
                return
        start = restore_state(state, model, optimizer, scheduler, average, adversary)
        if rank == 0:
            log.info("[%s] resuming from step %d", task, start)

    per_worker = params.optim.batch_size // world
    batches = train_batches(
        shard_urls(config["shards"], "train"), per_worker,
        # A fresh stream after a restart, so a resumed run does not replay the batches it saw.
        seed=sample_seed(cfg.seed, task, "train-stream", start) % 2**31,
        rank=rank, world_size=world, order=cfg.train.data_order,
        shuffle_buffer=cfg.train.shuffle_buffer, loader_workers=cfg.train.loader_workers,
        pin_memory=device.type == "cuda",
    )
    batches = prefetch_to_device(batches, device)
    mlflow = tracking.client(cfg.mlflow) if rank == 0 else None
    steps = params.optim.steps
    meter = ThroughputMeter(params.optim.batch_size)
    for step in range(start, steps):
        inputs, targets = next(batches)
        result = train_step(
            model, loss_fn, optimizer, scheduler,
            to_model_input(inputs, degradation.input_channels, device, channels_last),
            to_model_input(targets, 3, device, channels_last),
            params.optim.grad_clip, autocast, step=step, adversary=adversary,
        )
        if average:
            average.update()
        done = step + 1
        meter.tick()
        if done % cfg.train.log_every == 0 or done == steps:
            losses = mean_over_ranks(result.losses, world, device)
            if rank == 0:
                metrics = {f"loss_{k}": v for k, v in losses.items()}
                metrics.update(lr=result.lr, grad_norm=result.grad_norm, samples_per_s=meter.rate())
                tracking.log_metrics(mlflow, config["mlflow_run_id"], metrics, step=done)
                log.info(progress_line(task, done, steps, losses, meter))
        if done % cfg.train.checkpoint_every == 0 or done == steps or done in report_at:
            with tempfile.TemporaryDirectory() as folder:
                saved = None
                if rank == 0:
                    extra = {"task": task, "scale": degradation.input_scale, "model_config": model_config.model_dump(mode="json")}
                    if (spec := degradation.level_spec()) is not None:
                        extra["level"] = spec.to_dict()  # what apply and serving need to build the level channel
                    torch.save(checkpoint_state(model, optimizer, scheduler, done, extra, average, adversary), Path(folder) / STATE_FILE)
                    saved = ray.train.Checkpoint.from_directory(folder)
                report = {"step": done, **{f"loss_{k}": v for k, v in result.losses.items()}}
                if report_at:
                    report[RUNG] = sum(at <= done for at in report_at)
                if scorer:
                    report[SCORE] = scorer(Path(folder) / STATE_FILE)  # what evaluate would make of this checkpoint
                    tracking.log_metrics(mlflow, config["mlflow_run_id"], {f"tuning_{cfg.gate(task).metric}": report[SCORE]}, step=done)
                ray.train.report(report, checkpoint=saved)


def mean_over_ranks(values: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    if world == 1:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    return {k: float(v) / world for k, v in zip(keys, packed.tolist())}


class ThroughputMeter:
    """Samples/s over the recent steps, and an ETA."""

    def __init__(self, batch_size: int, window: int = 20):
        self.batch_size, self.window = batch_size, window
        self.times: list[float] = [time.perf_counter()]

    def tick(self) -> None:
        self.times = (self.times + [time.perf_counter()])[-(self.window + 1) :]

    def rate(self) -> float:
        span = self.times[-1] - self.times[0]
        return self.batch_size * (len(self.times) - 1) / span if span > 0 else 0.0

    def eta(self, remaining_steps: int) -> float:
        rate = self.rate()
        return remaining_steps * self.batch_size / rate if rate > 0 else float("nan")


def progress_line(task: str, step: int, steps: int, losses: dict[str, float], meter: ThroughputMeter) -> str:
    parts = " ".join(f"{k} {v:.4g}" for k, v in losses.items() if k != "total")
    eta = meter.eta(steps - step)
    eta_text = f"{int(eta // 60)}m{int(eta % 60):02d}s" if eta == eta else "?"
    return (f"[{task}] step {step}/{steps} ({100 * step / steps:.0f}%) loss {losses.get('total', float('nan')):.4g} "
            f"({parts}) {meter.rate():.1f} samples/s ETA {eta_text}")
