"""The train stage on a real (two-node, one-machine) Ray cluster: DDP, MLflow, faults, resume.

Every run trains a tiny SR net (the paper's: 8 channels, 1 residual block, instance norm) on tiny shards
(24 patches of 32 px), so a run takes seconds. The module shares one 2-node Ray cluster of one
CPU per node (``ray_cluster``: 1-CPU workers land one per node) and one set of shards
(``sr_project``); each training gets its own project root (models/, plots/, checkpoints, MLflow
database), so no test resumes another's run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

pytestmark = pytest.mark.integration
TASK = "sr_x4"


# ------------------------------------------------------------------------------------------
# Helpers


def new_project(base: Path, sr_project: Path) -> Path:
    """A fresh project root holding a copy of the shared shards and of the empty MLflow database
    (nothing trained yet)."""
    shutil.copytree(sr_project / "data" / "shards", base / "data" / "shards")
    shutil.copyfile(sr_project / "mlflow.db", base / "mlflow.db")
    return base


def config(params: dict[str, Any]):
    from pipelines.common.params import parse_config

    return parse_config(params, source="test params")


def mlflow_client(params: dict[str, Any]):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=params["mlflow"]["tracking_uri"])


def mlflow_runs(params: dict[str, Any]) -> list:
    """Every run of the test's experiment, deleted ones included."""
    from mlflow.entities import ViewType

    client = mlflow_client(params)
    exp = client.get_experiment_by_name(params["mlflow"]["experiment"])
    assert exp is not None, "no MLflow experiment was created"
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)


def steps_logged(params: dict[str, Any], run_id: str, key: str = "loss_total") -> Counter:
    """step -> how many times ``key`` was logged at that step."""
    return Counter(m.step for m in mlflow_client(params).get_metric_history(run_id, key))


def train_workers() -> dict[str, Any]:
    """actor id -> state of every RayTrainWorker the cluster has seen (alive or dead), from Ray's
    state API (of the cluster this process is connected to): each one's node, pid and state."""
    import ray
    from ray.util.state import list_actors

    actors = list_actors(
        address=ray.get_runtime_context().gcs_address,
        filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=10_000, raise_on_missing_output=False,
    )  # fmt: skip
    return {a.actor_id: a for a in actors}


def committed_step(storage: Path) -> int | None:
    """The step of the latest checkpoint Ray Train has committed under ``storage`` (None if none).

    Ray Train V2 resumes from the checkpoint its manager snapshot names, so that file (not a
    checkpoint folder still being written) is what says "a restart can resume from here"."""
    for snap in storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            latest = json.loads(snap.read_text()).get("latest_checkpoint_result")
        except (OSError, ValueError):  # being written
            continue
        if latest:
            return int(latest["metrics"]["step"])
    return None


def wait_for_checkpoint(storage: Path, timeout: float, running) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = committed_step(storage)
        if step is not None:
            return step
        if not running():
            pytest.fail(f"training ended before any checkpoint was committed under {storage}")
        time.sleep(0.02)
    pytest.fail(f"no checkpoint committed under {storage} within {timeout:.0f}s")


def saved_model(project: Path) -> dict[str, Any]:
    return torch.load(project / "models" / TASK / "model.pt", map_location="cpu", weights_only=True)


def assert_one_finished_run(params: dict[str, Any], run_id: str | None = None) -> Any:
    runs = mlflow_runs(params)
    assert len(runs) == 1, f"expected one MLflow run, found {[(r.info.run_name, r.info.status) for r in runs]}"
    assert runs[0].info.status == "FINISHED"
    if run_id is not None:
        assert runs[0].info.run_id == run_id
    return runs[0]


# ------------------------------------------------------------------------------------------
# 1. Smoke: two DDP workers, one MLflow run, outputs written


def test_two_workers_train_log_once_and_write_the_model(tmp_path, sr_project, ray_cluster, train_params):
    from pipelines.common.paths import Paths
    from pipelines.stages.train import train

    steps, log_every = 40, 2
    project = new_project(tmp_path, sr_project)
    params = train_params(project, "smoke", tasks={TASK: {"optim": {"steps": steps, "ema_decay": 0.9}}},
                          train={"workers": 2, "log_every": log_every})
    outcome = train(TASK, config(params), Paths(project))
    assert outcome.steps == steps

    model_dir = project / "models" / TASK
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.pt", "run.json"]
    run = json.loads((model_dir / "run.json").read_text())
    assert run["steps"] == steps and run["mlflow_run_id"] == outcome.mlflow_run_id and run["run_name"] == outcome.run_name
    assert json.loads((model_dir / "config.json").read_text())["model"]["sr_channels"] == 8
    assert saved_model(project)["step"] == steps

    # optim.ema_decay: the saved weights are the average of the DDP model's (loadable as a model),
    # and the final checkpoint keeps the last step's beside it for a resumed run.
    from pipelines.stages.train import STATE_FILE
    from training.inference import model_from_state

    checkpoints = [torch.load(f, map_location="cpu", weights_only=True) for f in (project / "smoke" / "runs").rglob(STATE_FILE)]
    final = max(checkpoints, key=lambda c: c["step"])
    assert final["step"] == steps and final["average"]["updates"] == steps
    model_from_state(saved_model(project))
    averaged = saved_model(project)["model"]
    assert averaged.keys() == final["last_model"].keys()
    assert any(not torch.equal(v, averaged[k]) for k, v in final["last_model"].items())

    # One MLflow run for the whole training, finished. Rank 0 alone logs (the losses averaged over
    # the ranks): one entry per logged step; were both ranks logging, every step would have two.
    mlflow_run = assert_one_finished_run(params, outcome.mlflow_run_id)
    logged = list(range(log_every, steps + 1, log_every))
    per_step = steps_logged(params, outcome.mlflow_run_id)
    assert sorted(per_step) == logged
    assert set(per_step.values()) == {1}, f"steps logged more than once: {per_step}"
    assert {"loss_pixel", "loss_feature", "lr", "samples_per_s"} <= set(mlflow_run.data.metrics)
    assert outcome.losses["total"] == pytest.approx(outcome.losses["pixel"] + outcome.losses["feature"], rel=1e-5)

    # The loss curves for `dvc plots`: a header and one row per logged step, in order.
    rows = (project / "plots" / "train" / f"{TASK}.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    assert header[0] == "step" and "loss_total" in header
    assert [int(r.split("\t")[0]) for r in rows[1:]] == logged
    total = [float(r.split("\t")[header.index("loss_total")]) for r in rows[1:]]

    # Training works (fixed seed, so a fixed stream of batches): the last logged losses are well
    # below the first ones (about 0.45 -> 0.15 here; the bar is far lower).
    first, last = sum(total[:4]) / 4, sum(total[-4:]) / 4
    assert last < 0.75 * first, f"loss did not go down: first {total[:4]}, last {total[-4:]}"


# ------------------------------------------------------------------------------------------
# 2. Multi-node: the workers ran on both nodes, and 2 workers x 2 samples == 1 worker x 4 samples


def gradient_free(state: dict[str, Any]) -> set[str]:
    """Parameters the output does not depend on at all (mathematically zero gradient).

    A conv bias that feeds an instance norm is one (the norm subtracts the per-channel mean, so a
    per-channel shift is removed), as is the last norm's bias of a residual block (a per-channel
    shift, carried through the next conv, is removed by that conv's norm). Found by probing, not by
    name: the output's gradient for a random input and direction, with ``last_conv`` (zero-initialised,
    so it would block every gradient below it) set to random weights; these sit ~1e7 below the rest.
    """
    from training.inference import model_from_state

    torch.manual_seed(0)
    model = model_from_state(state).train()
    with torch.no_grad():
        model.last_conv.weight.normal_(0, 0.01)
    y = model(torch.rand(2, 3, 8, 8))
    (y * torch.randn_like(y)).sum().backward()
    size = {n: p.grad.abs().max().item() for n, p in model.named_parameters()}
    typical = sorted(size.values())[len(size) // 2]
    return {n for n, g in size.items() if g < 1e-4 * typical}


def test_two_nodes_and_ddp_equals_one_worker_with_the_whole_batch(tmp_path, sr_project, ray_cluster, train_params):
    from pipelines.common.paths import Paths
    from pipelines.stages.train import train
    from training.inference import model_from_state

    # 10 steps at lr 1e-4, 4 samples per step; see below for why few, small steps.
    steps, lr = 10, 1e-4
    runs = {}
    for workers in (2, 1):
        project = new_project(tmp_path / f"w{workers}", sr_project)
        params = train_params(project, f"w{workers}", tasks={TASK: {"optim": {"steps": steps, "lr": lr}}},
                              # fp32, contiguous: bf16 rounding, and channels-last kernels that sum in another order for
                              # another batch size, part the runs by more than 1e-5 (3e-4 and 3e-5 measured)
                              train={"workers": workers, "log_every": 2, "data_order": "sequential", "bf16": False,
                                     "channels_last": False})  # fmt: skip
        before = set(train_workers())
        outcome = train(TASK, config(params), Paths(project))
        assert outcome.steps == steps
        ran = [a for actor_id, a in train_workers().items() if actor_id not in before]
        runs[workers] = (project, params, outcome, ran)

    # Two nodes of one CPU each, two workers of one CPU each: one worker per node (Ray's view).
    assert len(ray_cluster.node_ids()) == 2
    ran = runs[2][3]
    assert len(ran) == 2, f"expected the 2 training workers, Ray saw {ran}"
    assert {w.node_id for w in ran} == ray_cluster.node_ids(), f"the workers did not use both nodes: {ran}"

    # Why the weights must agree: `sequential` cuts one fixed sample order into global batches of
    # 4, of which rank r takes samples 2r..2r+1, so both runs see the same 4 samples per step. Each
    # loss term is a mean over equally sized samples, so the full-batch gradient is the mean of
    # the two half-batch gradients, which is what DDP's all-reduce computes (sum / world size).
    # Instance norm normalises each sample on its own (batch norm would not: its statistics would
    # span 2 samples instead of 4). Same initial weights (seeded; DDP broadcasts rank 0's anyway),
    # same clipping of the same gradient, same Adam state: the runs differ only by float rounding.
    #
    # Why only 10 small steps, and why some parameters are left out: Adam divides each gradient
    # element by its own running magnitude, so it does not damp rounding differences, it scales
    # them up where gradients are small. (1) Parameters with a mathematically zero gradient (see
    # gradient_free) get pure rounding noise, which Adam turns into steps of up to lr: they drift
    # apart between the runs by ~lr per step, harmlessly (the output ignores them), so they are
    # skipped. (2) The rest agree to ~1e-7 over 10 steps at lr 1e-4, but at lr 2e-3 discrete
    # events (a VGG max-pool or ReLU flipping on a rounding difference) already part the runs by
    # ~1e-3 within 5 steps (measured with a single-process simulation of both runs).
    (p2, params2, _, _), (p1, params1, _, _) = runs[2], runs[1]
    assert params1["tasks"] == params2["tasks"]
    one, two = saved_model(p1), saved_model(p2)
    skip = gradient_free(one)
    assert skip and all(n.endswith(".bias") for n in skip), skip
    assert one["model"].keys() == two["model"].keys()
    for name in one["model"]:
        if name not in skip:
            torch.testing.assert_close(two["model"][name], one["model"][name], rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    # What the two nets compute agrees as well (the skipped parameters included, as they must).
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(model_from_state(two)(x), model_from_state(one)(x), rtol=1e-4, atol=1e-5)
    # And the losses logged on the way (rank-averaged for DDP).
    loss = {w: [m.value for m in sorted(mlflow_client(p).get_metric_history(o.mlflow_run_id, "loss_total"), key=lambda m: m.step)]
            for w, (_, p, o, _) in runs.items()}  # fmt: skip
    assert len(loss[1]) == steps // 2 and loss[2] == pytest.approx(loss[1], rel=1e-4)


# ------------------------------------------------------------------------------------------
# 3. Fault: a worker process dies mid-run; Ray Train restarts the group from the last checkpoint


def test_killed_worker_recovers_from_the_last_checkpoint(tmp_path, sr_project, ray_cluster, train_params, capfd):
    import psutil

    from pipelines.common.paths import Paths
    from pipelines.stages.train import train

    steps, every, log_every = 60, 10, 5
    project = new_project(tmp_path, sr_project)
    params = train_params(project, "fault", tasks={TASK: {"optim": {"steps": steps}}},
                          train={"workers": 2, "checkpoint_every": every, "log_every": log_every, "max_failures": 1})  # fmt: skip
    before = set(train_workers())
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["outcome"] = train(TASK, config(params), Paths(project))
        except BaseException as exc:  # reported by the main thread
            result["error"] = exc

    thread = threading.Thread(target=run, name="train", daemon=True)
    thread.start()
    try:
        # The victim is chosen while the workers start (the state API is slow next to a step),
        # and killed the moment the first checkpoint is committed: mid-run, with 50 steps to go.
        deadline, alive = time.monotonic() + 90, []
        while len(alive) < 2 and time.monotonic() < deadline and thread.is_alive():
            alive = [a for k, a in train_workers().items() if k not in before and a.state == "ALIVE" and a.pid]
            time.sleep(0.2)
        assert len(alive) == 2, f"the 2 training workers did not start: {alive}"
        victim = max(alive, key=lambda a: a.pid)  # either rank will do
        # Only a pid that Ray reports for this test's own training on this module's own cluster,
        # and only while it is that worker process.
        process = psutil.Process(victim.pid)
        assert "RayTrainWorker" in " ".join(process.cmdline()), process.cmdline()
        ckpt = wait_for_checkpoint(Path(params["train"]["storage_path"]), 90, thread.is_alive)
        process.send_signal(signal.SIGKILL)
    finally:
        thread.join(timeout=180)
    assert not thread.is_alive(), "training did not finish after the worker was killed"
    assert "error" not in result, f"training failed: {result.get('error')!r}"
    outcome = result["outcome"]

    # It finished the planned steps, in the one MLflow run it started with.
    assert ckpt < steps
    assert outcome.steps == steps and saved_model(project)["step"] == steps
    assert json.loads((project / "models" / TASK / "run.json").read_text())["steps"] == steps
    assert_one_finished_run(params, outcome.mlflow_run_id)

    # The kill was recovered from: the victim is dead, and a second group of 2 workers started...
    workers = {k: a for k, a in train_workers().items() if k not in before}
    assert workers[victim.actor_id].state == "DEAD"
    assert len(workers) == 4, f"expected 2 workers, then 2 replacements: {list(workers.values())}"
    # ... from the checkpoint, not from scratch: rank 0 said so, and the steps up to the committed
    # checkpoint were logged once (a restart from step 0 would have logged them again).
    resumed = [int(k) for k in re.findall(r"resuming from step (\d+)", "".join(capfd.readouterr()))]
    assert resumed and resumed[0] >= ckpt and resumed[0] % every == 0, resumed
    per_step = steps_logged(params, outcome.mlflow_run_id)
    assert sorted(per_step) == list(range(log_every, steps + 1, log_every))
    assert all(per_step[s] == 1 for s in per_step if s <= ckpt), per_step


# ------------------------------------------------------------------------------------------
# 4. Resume: the CLI killed mid-run (driver and all), then the same command again


def percept_train(project: Path, ray_address: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray_address, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        # Its own session (process group), so the whole group can be killed at once.
        return subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "--params", "params.yaml", "train", "--task", TASK],
            cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


# "gan": the adversarial term on (issue 27): its discriminator is checkpointed and resumed with the network.
@pytest.mark.parametrize("gan", [False, True], ids=["plain", "gan"])
def test_interrupted_cli_training_resumes_where_it_stopped(tmp_path, sr_project, ray_cluster, train_params, gan):
    steps, every = 60, 10
    project = new_project(tmp_path, sr_project)
    task = {"optim": {"steps": steps}, **({"loss": {"gan": {"weight": 0.1, "features": 8}}} if gan else {})}
    params = train_params(project, "resume", tasks={TASK: task},
                          train={"workers": 1, "checkpoint_every": every, "log_every": 5})  # fmt: skip
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    storage = Path(params["train"]["storage_path"])

    # The driver joins this module's cluster (RAY_ADDRESS): killing the driver's process group then
    # kills exactly what this test started, and Ray ends the dead job's actors (controller,
    # workers) on its own; no stray local Ray is left behind.
    first = percept_train(project, ray_cluster.address, tmp_path / "first.log")
    try:
        ckpt = wait_for_checkpoint(storage, 90, lambda: first.poll() is None)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    assert not (project / "models" / TASK).exists(), "the first run finished before it was killed"
    runs = mlflow_runs(params)
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"  # killed: nobody closed it

    second = percept_train(project, ray_cluster.address, tmp_path / "second.log")
    try:
        second.wait(timeout=150)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(timeout=30)
    output = (tmp_path / "second.log").read_text(errors="replace")
    assert second.returncode == 0, output[-5000:]

    resumed = [int(k) for k in re.findall(r"resuming from step (\d+)", output)]
    assert resumed, f"the second run did not resume:\n{output[-5000:]}"
    assert resumed[0] >= ckpt > 0 and resumed[0] % every == 0 and resumed[0] < steps
    run = json.loads((project / "models" / TASK / "run.json").read_text())
    assert run["steps"] == steps and saved_model(project)["step"] == steps
    mlflow_run = assert_one_finished_run(params, run["mlflow_run_id"])
    assert mlflow_run.data.tags["percept.run_name"] == run["run_name"]
    assert sorted(steps_logged(params, run["mlflow_run_id"])) == list(range(5, steps + 1, 5))
    if gan:
        from pipelines.stages.train import STATE_FILE

        # the discriminator's loss was logged before and after the restart, and the last checkpoint
        # holds the discriminator and its optimiser beside the network
        assert sorted(steps_logged(params, run["mlflow_run_id"], "loss_disc")) == list(range(5, steps + 1, 5))
        last = max(storage.rglob(STATE_FILE), key=lambda f: f.stat().st_mtime)
        state = torch.load(last, map_location="cpu", weights_only=True)
        assert state["step"] == steps and state["adversary"]["optimizer"]["state"]
        assert any(k.endswith("weight.original") for k in state["adversary"]["net"])  # spectral norm


# ------------------------------------------------------------------------------------------
# 5. Checkpoints in S3: storage_path s3://... on a real S3-compatible server


def test_checkpoints_go_to_s3_and_the_model_comes_back(tmp_path, sr_project, ray_cluster, train_params, s3_env, bucket):
    from pipelines.common.paths import Paths
    from pipelines.stages.train import train

    project = new_project(tmp_path, sr_project)
    params = train_params(
        project, "s3", tasks={TASK: {"optim": {"steps": 6}}},
        train={"workers": 1, "checkpoint_every": 3, "storage_path": f"s3://{bucket}/runs"},
        s3={"endpoint_url": s3_env.endpoint_url},
    )
    outcome = train(TASK, config(params), Paths(project))
    assert outcome.steps == 6 and saved_model(project)["step"] == 6
    keys = [o["Key"] for page in s3_env.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="runs/")
            for o in page.get("Contents", [])]
    assert any(k.startswith(f"runs/{outcome.run_name}/checkpoint_") and k.endswith("/state.pt") for k in keys), keys
    assert not (project / "runs").exists()  # nothing was written locally instead


def test_a_search_on_the_cluster_runs_its_trials_side_by_side(tmp_path, sr_project, ray_cluster, train_params):
    """`percept tune` joined to a cluster of two 1-CPU nodes: two trials of 1-CPU workers at once,
    so one on each node; each scored at its report steps, the parent run's best their best."""
    from pipelines.common.paths import Paths
    from pipelines.search.tune import search

    project = new_project(tmp_path, sr_project)
    shutil.copytree(sr_project / "data" / "manifest", project / "data" / "manifest")
    space = {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}
    params = train_params(project, "tune", train={"workers": 1},
                          tune={TASK: {"space": space, "trials": 2, "reports": 2, "steps": 10, "tuning_images": 2}})
    outcome = search(TASK, config(params), Paths(project))

    assert len(outcome.trials) == 2 and {t.state for t in outcome.trials} <= {"completed", "stopped early"}
    client = mlflow_client(params)
    runs = [client.get_run(t.run_id) for t in outcome.trials]
    (first, second) = sorted((r.info.start_time, r.info.end_time) for r in runs)
    assert second[0] < first[1], "the second trial started only after the first ended"
    for run in runs:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "tuning_psnr_y"))
        assert steps and steps == [5, 10][: len(steps)], steps
    assert outcome.best.figure == max(t.figure for t in outcome.trials)


def test_a_finished_trial_run_again_reports_its_last_figure_without_training(tmp_path, sr_project, ray_cluster, train_params):
    """A search killed after a trial's last step but before Tune recorded its end reruns that trial:
    the same run name resumes at the end, and the loop reports its figure again (Tune needs a
    result from every trial) instead of reporting nothing."""
    from pipelines.common.paths import Paths
    from pipelines.stages.train import SCORE, make_trainer

    project = new_project(tmp_path, sr_project)
    params = train_params(project, "trial", tasks={TASK: {"optim": {"steps": 6}}}, train={"workers": 1})
    cfg, split = config(params), sr_project / "raw" / "val"
    client = mlflow_client(params)
    run_id = client.create_run(client.create_experiment("trial")).info.run_id

    def fit():
        trainer = make_trainer(TASK, cfg, project, Paths(project).shards(TASK), "trial-run", run_id, score_on=split,
                               report_steps=[3, 6])
        return trainer.fit()

    first = fit()
    assert first.metrics["step"] == 6 and first.metrics[SCORE] > 0
    again = fit()
    assert again.metrics["step"] == 6 and again.metrics[SCORE] == pytest.approx(first.metrics[SCORE], abs=1e-9)
    history = client.get_metric_history(run_id, "tuning_psnr_y")
    assert sorted(m.step for m in history) == [3, 6], "the second fit trained and logged nothing"
