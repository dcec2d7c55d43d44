"""The ``evaluate`` stage: a model and its task's baseline, scored on whole clean images.

Each input is made from a clean image the way the task's shards make validation inputs (for
SR: mod-crop to the scale, MATLAB-compatible bicubic downscale, rounded to 8 bits), the model
runs on the whole image (tiled when ``evaluate.tile`` is set), and the task's metrics
(``training.quality``) score output and baseline against the clean image. A report per image
set holds the means, the baseline's means and per-image figures; a comparison sheet shows crops.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.common.fingerprints import evaluation_sha256
from pipelines.common.fsutil import atomic_write_bytes, atomic_write_text, sha256_file
from pipelines.common.schema import Config
from pipelines.use.scoring import EvaluationError, eval_sets, evaluate_images, instruments, load_image_set
from training.images import encode_png
from training.quality import METRICS, better

log = logging.getLogger(__name__)


def write_report(report: dict[str, Any], sheet: np.ndarray, out_dir: Path) -> tuple[Path, Path]:
    """``<set>.json`` and ``<set>.png`` in ``out_dir``, each written atomically."""
    json_path, png_path = out_dir / f"{report['image_set']}.json", out_dir / f"{report['image_set']}.png"
    atomic_write_text(json_path, json.dumps(report, indent=2, sort_keys=False) + "\n")
    atomic_write_bytes(png_path, encode_png(sheet))
    return json_path, png_path


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The report without per-image rows: every figure of a set (``reports/<task>/summary.json``)."""
    return {k: v for k, v in report.items() if k not in ("per_image", "skipped", "task", "model", "image_set", *STAMPS)}


def dvc_metrics(task: str, cfg: Config, reports: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``metrics/<task>.json``: the same few keys whatever the task, so `dvc metrics show` and
    `dvc metrics diff` fit a terminal: the gate's metric and, per evaluation set (its levels stay in
    the reports), the model's value, the baseline's and the gain (positive: better)."""
    metric = cfg.gate(task).metric
    figures = {"metric": metric}
    for name in cfg.evaluate.sets:
        value, base = reports[name][metric], reports[name]["baseline"][metric]
        figures[name] = {"value": value, "baseline": base, "gain": better(metric, value, base)}
    return figures


STAMPS = ("weights_sha256", "settings_sha256")  # what a report scored: promote reuses it when both match


def summary_line(report: dict[str, Any]) -> str:
    names = [n for n in METRICS if n in report["baseline"]]
    ours = ", ".join(f"{n} {report[n]:.4g}" for n in names)
    theirs = ", ".join(f"{n} {report['baseline'][n]:.4g}" for n in names)
    skipped = f", {len(report['skipped'])} skipped" if report.get("skipped") else ""
    return (f"{report['task']} {report['model']} on {report['image_set']} ({report['images']} images{skipped}): {ours} | "
            f"{report['baseline']['model']}: {theirs}")


def run(task: str, model: str, cfg: Config, paths, images: Path | None = None, out: Path | None = None,
        progress: bool = True, any_task: bool = False) -> dict[str, dict[str, Any]]:
    """Evaluate ``model`` on ``images`` (one folder) or on every ``evaluate.sets`` folder, each also
    at the task's evaluation levels (blind restoration: ``Set5-sigma10``, ``Set5-sigma50``, ...).

    Without ``images`` this is the DVC stage: reports go to ``reports/<task>/`` (every set's figures
    together in its ``summary.json``), the gate's metric per set to ``metrics/<task>.json``, and, when the
    model is a training output with an MLflow run, the figures and sheets are logged into that run.
    """
    from pipelines.services import tracking
    from pipelines.use.predictors import load_predictor

    scale = cfg.degradation(task).input_scale
    tracking_uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, paths.root)
    if any_task and images is None:
        raise EvaluationError("--any-task needs --images: the stage's reports and metrics are the task's own model's")
    predictor = load_predictor(model, task, scale, cfg.evaluate.tile, cfg.evaluate.overlap, tracking_uri,
                               inference=cfg.inference, any_task=any_task)
    tools = instruments(task, cfg, paths.root)
    sets = eval_sets(task, cfg, {images.name: images} if images else {n: paths.root / f for n, f in cfg.evaluate.sets.items()})
    out_dir = out if out or images else paths.reports(task)
    weights = Path(model) / "model.pt" if Path(model).is_dir() else Path(model)
    stamp = sha256_file(weights) if weights.is_file() and images is None else None
    reports, written = {}, []
    # one hash per folder, not per level: the levels of a folder read the same images
    stamps = {folder: evaluation_sha256(task, cfg, folder) for folder in {one.folder for one in sets}} if stamp else {}
    for one in sets:
        images_at = load_image_set(one.folder, task, cfg, one.level)
        report, sheet = evaluate_images(task, predictor, images_at, cfg, one.name, tools, progress,
                                        one.metrics(cfg.reported_metrics(task)))
        if stamp:
            report.update(weights_sha256=stamp, settings_sha256=stamps[one.folder])
        reports[one.name] = report
        if out_dir is not None:
            written.extend(write_report(report, sheet, out_dir))
        print(summary_line(report), file=sys.stderr)
    if images is None:
        atomic_write_text(paths.report_summary(task), json.dumps({n: summary(r) for n, r in reports.items()}, indent=2) + "\n")
        atomic_write_text(paths.metrics(task), json.dumps(dvc_metrics(task, cfg, reports), indent=2) + "\n")
        _log_to_training_run(Path(model), reports, written, tracking_uri)
    return reports


def _log_to_training_run(model_dir: Path, reports: dict[str, dict[str, Any]], files: list[Path], tracking_uri: str) -> None:
    run_file = model_dir / "run.json"
    if not run_file.is_file():
        return
    from mlflow.tracking import MlflowClient

    from pipelines.services import tracking

    run = json.loads(run_file.read_text())
    client = MlflowClient(tracking_uri=tracking_uri)
    figures = {}
    for name, report in reports.items():
        for key, value in summary(report).items():
            if isinstance(value, dict):
                figures.update({f"eval_{name}_baseline_{k}": v for k, v in value.items() if isinstance(v, float)})
            elif isinstance(value, float):
                figures[f"eval_{name}_{key}"] = value
    tracking.log_metrics(client, run["mlflow_run_id"], figures, step=run.get("steps", 0))
    for path in files:
        client.log_artifact(run["mlflow_run_id"], str(path), artifact_path="evaluation")
