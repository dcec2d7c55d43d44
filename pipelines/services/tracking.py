"""MLflow glue: one run per training, created by the driver and found again on a restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipelines.common.schema import Config, MlflowConfig

RUN_NAME_TAG = "percept.run_name"


def resolve_tracking_uri(uri: str, root: Path = Path(".")) -> str:
    """Make a relative sqlite:/// URI absolute, so Ray workers in other folders hit the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str((root / uri[len(prefix) :]).resolve())
    return uri


def resolve_artifact_location(location: str | None, root: Path = Path(".")) -> str | None:
    if location is None or "://" in location:
        return location
    return (root / location).resolve().as_uri()


def client(cfg: MlflowConfig, root: Path = Path(".")):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_uri(cfg.tracking_uri, root))


def experiment_id(mlflow_client, cfg: Config, root: Path = Path(".")) -> str:
    """The experiment's id, creating it (artifacts at ``cfg.artifact_location``) on first use.
    An existing experiment keeps the artifact location it was created with (MLflow's rule)."""
    experiment = mlflow_client.get_experiment_by_name(cfg.mlflow.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = resolve_artifact_location(cfg.artifact_location, root)
    return mlflow_client.create_experiment(cfg.mlflow.experiment, artifact_location=location)


def find_or_create_run(mlflow_client, exp_id: str, run_name: str, tags: dict[str, str]) -> tuple[str, bool]:
    """The run tagged with ``run_name`` (a resumed training keeps its run), else a new one."""
    found = mlflow_client.search_runs(
        [exp_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'", max_results=1, order_by=["attributes.start_time ASC"]
    )
    if found:
        run_id = found[0].info.run_id
        if found[0].info.status != "RUNNING":
            mlflow_client.update_run(run_id, status="RUNNING")
        return run_id, True
    run = mlflow_client.create_run(exp_id, run_name=run_name, tags={RUN_NAME_TAG: run_name, **tags})
    return run.info.run_id, False


def log_metrics(mlflow_client, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    mlflow_client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def log_params(mlflow_client, run_id: str, params: dict[str, Any]) -> None:
    """Flattened params; values already logged (a resumed run) are left alone."""
    from mlflow.entities import Param

    existing = mlflow_client.get_run(run_id).data.params
    fresh = [Param(k, str(v)[:6000]) for k, v in flatten(params).items() if k not in existing]
    for i in range(0, len(fresh), 100):  # MLflow takes at most 100 params per batch
        mlflow_client.log_batch(run_id, params=fresh[i : i + 100])


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def metric_history(mlflow_client, run_id: str, keys: list[str]) -> dict[int, dict[str, float]]:
    """step -> {key: value}; after a restart the re-run steps keep their latest value."""
    rows: dict[int, dict[str, float]] = {}
    for key in keys:
        for m in sorted(mlflow_client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
            rows.setdefault(m.step, {})[key] = m.value
    return dict(sorted(rows.items()))
