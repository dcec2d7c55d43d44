"""The ``tune`` flow: a recipe search of one task on Ray Tune, declared in params.yaml (``tune.<task>``).

Each trial is the train stage's own training (``make_trainer``: the same loop, checkpoints and
MLflow logging) on shards without the tuning split, scored on that split by the task's gate
metric at ``reports`` even points; ASHA stops the trials that trail at a rung and Optuna's TPE
(seeded) picks the next settings, the task's current recipe first. A trial's driver reserves a
little memory and no CPU, and the trials at once are as many as the cluster's CPUs (GPUs) hold,
so two trials on two cores do not starve each other's workers.

The search is named by its settings, recipe, data and code (``search_name``): running the same
command again resumes it (``Tuner.restore``), keeping finished trials. MLflow gets one parent
run per search and one nested run per trial.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipelines.common.errors import ConfigError
from pipelines.common.fingerprints import search_name
from pipelines.common.params import load_config, parse_config
from pipelines.common.paths import Paths
from pipelines.common.schema import Config
from pipelines.common.search_schema import Choice, TuneSearch
from pipelines.search.report import apply_settings, log_search_artifacts, round_settings, summary_lines
from pipelines.search.split import SearchPaths, prepare, variant_key
from pipelines.services import tracking
from pipelines.services.engine import init_ray, stop_ray
from pipelines.stages.train import RUNG, SCORE, make_trainer, storage, worker_resources
from training.quality import METRICS

log = logging.getLogger(__name__)
TRIAL_MEMORY = 256 * 2**20  # what a trial's driver reserves: it waits on its trainer, using no CPU
STOPPED_TAG = "percept.stopped_early"
TRIAL_TAG = "percept.trial"


@dataclass(frozen=True)
class Trial:
    id: str
    settings: dict[str, Any]
    reports: int  # how many times it was scored
    figure: float | None  # its last figure on the tuning split
    state: str  # completed, stopped early, cut short (the time budget), failed
    run_id: str | None  # its nested MLflow run


@dataclass(frozen=True)
class SearchOutcome:
    name: str
    task: str
    metric: str
    higher_is_better: bool
    parent_run_id: str
    trials: list[Trial]
    best: Trial
    current: Trial | None  # the trial of the task's current recipe: the figure to beat


# ------------------------------------------------------------------------------------------
# The search's pieces (pure)


def param_space(search: TuneSearch) -> dict[str, Any]:
    """Tune's search space for ``tune.<task>.space``."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, dim in search.space.items():
        if isinstance(dim, Choice):
            space[key] = tune.choice(dim.choices)
        elif dim.integer:
            low, high = int(dim.low), int(dim.high)
            space[key] = tune.lograndint(low, high + 1) if dim.log else tune.randint(low, high + 1)
        else:
            space[key] = tune.loguniform(dim.low, dim.high) if dim.log else tune.uniform(dim.low, dim.high)
    return space


def current_settings(task: str, cfg: Config, search: TuneSearch) -> dict[str, Any] | None:
    """The task's recipe as a point of the space (the first trial: the figure to beat), or None when
    a current value lies outside it."""
    block = cfg.task(task).model_dump(mode="json")
    point = {}
    for key, dim in search.space.items():
        value: Any = block
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        inside = value in dim.choices if isinstance(dim, Choice) else (
            isinstance(value, (int, float)) and dim.low <= value <= dim.high)
        if not inside:
            return None
        point[key] = value
    return point


def trial_config(cfg: Config, task: str, search: TuneSearch, settings: dict[str, Any]) -> Config:
    """The config a trial trains with: its settings in the task's block, the search's steps, and
    checkpoints only where it reports (``report_steps``), the last one kept."""
    cfg = cfg.with_task_settings(task, {**settings, **({"optim.steps": search.steps} if search.steps else {})})
    steps = cfg.task(task).optim.steps
    if steps < search.reports:
        raise ConfigError(f"tune.{task}: a trial of {steps} steps cannot report {search.reports} times (lower reports)")
    first = report_steps(steps, search.reports)[0]
    train = cfg.train.model_copy(update={"checkpoint_every": steps, "keep_checkpoints": 1,
                                         "log_every": min(cfg.train.log_every, first)})
    return cfg.model_copy(update={"train": train})


def report_steps(steps: int, reports: int) -> list[int]:
    """The steps a trial of ``steps`` reports at: ``reports`` of them, evenly spread, the last one last."""
    return [round(steps * k / reports) for k in range(1, reports + 1)]


def concurrency(cfg: Config, search: TuneSearch, resources: dict[str, float]) -> int:
    """Trials at once: ``tune.<task>.concurrent``, else as many as the cluster holds."""
    if search.concurrent:
        return search.concurrent
    need = worker_resources(cfg)
    return max(1, min(int(resources.get(k, 0) // (v * cfg.train.workers)) for k, v in need.items() if v))


def best_trial(trials: list[Trial], higher_is_better: bool) -> Trial:
    scored = [t for t in trials if t.figure is not None and not math.isnan(t.figure)]
    if not scored:
        raise RuntimeError("no trial reported a figure: see the trials' errors above")
    return (max if higher_is_better else min)(scored, key=lambda t: t.figure)


# ------------------------------------------------------------------------------------------
# A trial (runs in its own Ray actor)


def run_trial(settings: dict[str, Any], setup: dict[str, Any]) -> None:
    """One trial: the task trained with ``settings``, scored on the tuning split at each report."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    root, task = Path(setup["root"]), setup["task"]
    cfg = parse_config(setup["params"])
    search = cfg.tune[task]
    trial_cfg = trial_config(cfg, task, search, settings)
    trial_id = ray.tune.get_context().get_trial_id()
    name = f"{setup['name']}-{trial_id}"
    mlflow = tracking.client(cfg.mlflow, root)
    run_id, _ = tracking.find_or_create_run(mlflow, setup["experiment_id"], name, {
        "mlflow.parentRunId": setup["parent_run_id"], "percept.task": task, TRIAL_TAG: trial_id})
    tracking.log_params(mlflow, run_id, settings)
    shards = Path(setup["shards"][variant_key({k: settings[k] for k in search.shard_space()})])
    trainer = make_trainer(task, trial_cfg, root, shards, name, run_id, score_on=Path(setup["split"]),
                           report_steps=report_steps(trial_cfg.task(task).optim.steps, search.reports),
                           callbacks=[TuneReportCallback()])
    trainer.fit()
    mlflow.set_terminated(run_id, status="FINISHED")


def _stopping_scheduler(search: TuneSearch, tracking_uri: str, parent_run_id: str):
    """ASHA that also tags the trial's MLflow run when it stops one (the tag survives a restore)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class TaggingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP and result.get(RUNG, 0) < search.reports:
                _tag_stopped(tracking_uri, parent_run_id, trial.trial_id)
            return decision

    # max_t one past the last report: at max_t ASHA says STOP to every trial, which Tune then tears
    # down while its driver still waits on the trainer's last moments (an ActorDiedError, at
    # times a crash in Ray's error decoding). Below it, a trial that reports for the last time
    # simply ends; the rungs a trial can reach (grace x reduction_factor^k) are the same.
    return TaggingASHA(time_attr=RUNG, max_t=search.reports + 1, grace_period=search.grace,
                       reduction_factor=search.reduction_factor)


def _tag_stopped(tracking_uri: str, parent_run_id: str, trial_id: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    for run in _children(client, parent_run_id):
        if run.data.tags.get(TRIAL_TAG) == trial_id:
            client.set_tag(run.info.run_id, STOPPED_TAG, "true")


def _children(client, parent_run_id: str) -> list:
    exp = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'", max_results=10000)


def _progress_callback(task: str, search: TuneSearch, metric: str):
    from ray.tune import Callback

    class Progress(Callback):
        """One line per report and per finished trial (Tune's own tables are off)."""

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if SCORE in result:
                log.info("[tune %s] trial %s report %d/%d: %s %.4f (%s)", task, trial.trial_id,
                         result.get(RUNG, 0), search.reports, metric, result[SCORE], _settings_text(trial.config))

        def on_trial_complete(self, iteration, trials, trial, **info):
            done = sum(t.status == "TERMINATED" for t in trials)
            log.info("[tune %s] trial %s ended; %d of %d trials done", task, trial.trial_id, done, search.trials)

    return Progress()


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in settings.items())


# ------------------------------------------------------------------------------------------
# The driver


def search(task: str, cfg: Config, paths: Paths = Paths()) -> SearchOutcome:
    """Run (or resume) the search ``tune.<task>`` declares; returns every trial and the best."""
    spec = cfg.tune.get(task)
    if spec is None:
        raise ConfigError(f"tune.{task} is not in params.yaml: declare a search first, e.g.\n"
                          f"tune:\n  {task}:\n    space:\n      optim.lr: {{low: 1.0e-4, high: 3.0e-3, log: true}}\n"
                          "    trials: 8\n(docs/tuning.md)")
    root = paths.root.resolve()
    metric = cfg.gate(task).metric
    higher = METRICS[metric].higher_is_better
    started = init_ray(cfg)
    try:
        shards = prepare(task, cfg, spec, paths)  # on the Ray just started or joined
        name = search_name(task, cfg, SearchPaths(paths.root, task).manifest)
        mlflow = tracking.client(cfg.mlflow, root)
        exp_id = tracking.experiment_id(mlflow, cfg, root)
        parent, resumed = tracking.find_or_create_run(mlflow, exp_id, name, {"percept.task": task, "percept.kind": "tune"})
        tracking.log_params(mlflow, parent, {"task": task, "metric": metric, "split": "tuning split (training images)",
                                             **{f"space.{k}": v.model_dump(mode="json") for k, v in spec.space.items()},
                                             **spec.model_dump(mode="json", exclude={"space"})})
        log.info("tune %s: search %s (MLflow run %s%s), %d trials by %s", task, name, parent,
                 ", resumed" if resumed else "", spec.trials, metric)
        setup = {"root": str(root), "task": task, "params": cfg.model_dump(mode="json"), "name": name,
                 "experiment_id": exp_id, "parent_run_id": parent, "shards": {k: str(v) for k, v in shards.items()},
                 "split": str(SearchPaths(paths.root, task).split_images.resolve())}
        try:
            results = _fit(task, cfg, spec, name, setup, metric, higher, root)
        except BaseException:
            mlflow.set_terminated(parent, status="FAILED")
            raise
        outcome = _record(task, spec, name, metric, higher, parent, results, mlflow, current_settings(task, cfg, spec),
                          spec.steps or cfg.task(task).optim.steps)
        mlflow.set_terminated(parent, status="FINISHED")
        return outcome
    finally:
        if started:
            stop_ray()


def _fit(task: str, cfg: Config, spec: TuneSearch, name: str, setup: dict[str, Any], metric: str, higher: bool, root: Path):
    import ray
    from ray import tune

    storage_path, filesystem = storage(cfg, root)
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"memory": TRIAL_MEMORY})
    where = f"{storage_path.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(where, storage_filesystem=filesystem):
        log.info("tune %s: resuming the search in %s (finished trials are kept)", task, where)
        tuner = tune.Tuner.restore(where, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=filesystem)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        first = current_settings(task, cfg, spec)
        if spec.searcher == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            searcher = OptunaSearch(points_to_evaluate=[first] if first else None, seed=cfg.seed)
        else:
            searcher = BasicVariantGenerator(points_to_evaluate=[first] if first else None, random_state=cfg.seed)
        tracking_uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, root)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(spec),
            tune_config=tune.TuneConfig(
                metric=SCORE, mode="max" if higher else "min", num_samples=spec.trials, search_alg=searcher,
                scheduler=_stopping_scheduler(spec, tracking_uri, setup["parent_run_id"]),
                max_concurrent_trials=concurrency(cfg, spec, ray.cluster_resources()),
                time_budget_s=spec.minutes * 60 if spec.minutes else None,
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage_path, storage_filesystem=filesystem, verbose=0,
                                      callbacks=[_progress_callback(task, spec, metric)]),
        )
    return tuner.fit()


def _record(task: str, spec: TuneSearch, name: str, metric: str, higher: bool, parent: str, results, mlflow,
            first: dict[str, Any] | None, default_steps: int) -> SearchOutcome:
    """Each trial's state onto its nested run; the best, the table and the chart onto the parent."""
    children = {r.data.tags.get(TRIAL_TAG): r for r in _children(mlflow, parent)}
    trials = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        child = children.get(trial_id)
        settings = {k: v for k, v in (result.config or {}).items() if k in spec.space}
        # By the step it reached, not Tune's count of results: a trial resumed after a kill does
        # not report again the steps it had reported before it.
        steps, reached = settings.get("optim.steps", default_steps), int(metrics.get("step", 0))
        reports = sum(at <= reached for at in report_steps(steps, spec.reports))
        figure = metrics.get(SCORE)
        if result.error is not None:
            state, status = "failed", "FAILED"
        elif child is not None and child.data.tags.get(STOPPED_TAG) == "true":
            state, status = "stopped early", "KILLED"
        elif reached >= steps:
            state, status = "completed", "FINISHED"
        else:
            state, status = "cut short", "KILLED"  # the time budget ran out
        if child is not None:
            mlflow.set_tag(child.info.run_id, "percept.state", state)
            if figure is not None:  # what the search ranked it by (a stopped trial may have logged a report more)
                tracking.log_metrics(mlflow, child.info.run_id, {f"search_{metric}": figure}, step=0)
            mlflow.set_terminated(child.info.run_id, status=status)
        trials.append(Trial(trial_id, settings, reports, figure, state, child.info.run_id if child else None))
    best = best_trial(trials, higher)
    current = next((t for t in trials if first is not None and t.settings == first), None)
    tracking.log_metrics(mlflow, parent, {f"best_{metric}": best.figure, "trials": len(trials),
                                          "stopped_early": sum(t.state == "stopped early" for t in trials)}, step=0)
    for key, value in round_settings(best.settings).items():
        mlflow.set_tag(parent, f"best.{key}", str(value))
    mlflow.set_tag(parent, "percept.best_trial", best.id)
    log_search_artifacts(mlflow, parent, task, spec, metric, higher, trials, best, current)
    create_table_artifact(key=f"tune-{task.replace('_', '-')}", description=f"Trials of {name}", table=[
        {"trial": t.id, **{k: v for k, v in t.settings.items()}, metric: t.figure, "reports": t.reports, "state": t.state}
        for t in trials])
    return SearchOutcome(name, task, metric, higher, parent, trials, best, current)


@flow(name="tune")
def tune_flow(task: str, params: str = "params.yaml", apply: bool = False) -> tuple[SearchOutcome, list[str] | None]:
    """Search ``tune.<task>`` of ``params``; with ``apply``, write the best settings into its
    ``tasks.<task>`` (then `dvc repro` trains, evaluates and promotes them through the gate).
    Returns the outcome and, with ``apply``, the settings that changed."""
    outcome = search(task, load_config(params), Paths())
    changed = apply_settings(Path(params), task, round_settings(outcome.best.settings)) if apply else None
    create_markdown_artifact(key=f"tune-{task.replace('_', '-')}-summary", description=f"Best of {outcome.name}",
                             markdown="```\n" + "\n".join(summary_lines(outcome)) + "\n```\n")
    return outcome, changed
