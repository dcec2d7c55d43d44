"""The ``promote`` stage: the gate between ``challenger`` and ``champion``.

Both are evaluated now, on the same validation images (``evaluate.sets``), through their
registered pyfuncs; ``champion`` is read from the registry at that moment, so an alias moved by
hand in the MLflow UI is what the challenger must beat. With no champion the challenger must
beat the task's baseline (bicubic, or the degraded input). The decision and its figures become
version tags, a Prefect artifact, ``registry/<task>.promotion.json`` and one line on stdout.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import numpy as np
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipelines import tracking
from pipelines.config import Config
from pipelines.evaluate import EvaluationError, evaluate_images, instruments, load_image_set
from pipelines.fsutil import atomic_write_text
from pipelines.paths import Paths
from pipelines.predictors import ModelSpecError, load_predictor
from pipelines.registry import CHALLENGER, CHAMPION, TAG
from training.quality import Decision, decide

log = logging.getLogger(__name__)


def pooled(reports: list[dict[str, Any]], names: tuple[str, ...], key: str | None = None) -> dict[str, float]:
    """Means over every image of every set (``key="baseline"``: the baseline's figures)."""
    rows = [r[key] if key else r for report in reports for r in report["per_image"]]
    return {n: float(np.mean([row[n] for row in rows])) for n in names}


def figures_of(uri: str, task: str, cfg: Config, images: dict[str, list], tracking_uri: str, tools) -> list[dict[str, Any]]:
    scale = cfg.degradation(task).input_scale
    predictor = load_predictor(uri, task, scale, cfg.evaluate.tile, cfg.evaluate.overlap, tracking_uri)
    return [evaluate_images(task, predictor, imgs, cfg, name, tools, progress=False)[0] for name, imgs in images.items()]


def alias_version(client, task: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(task, alias).version)
    except MlflowException:
        return None


@flow(name="promote")
def promote_flow(task: str, cfg: Config, paths: Paths = Paths(), version: int | None = None, force: bool = False) -> dict[str, Any]:
    client = tracking.client(cfg.mlflow, paths.root)
    tracking_uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, paths.root)
    challenger = str(version) if version is not None else alias_version(client, task, CHALLENGER)
    if challenger is None:
        raise ModelSpecError(f"{task} has no @{CHALLENGER} version: run `percept register --task {task}` first")
    champion = alias_version(client, task, CHAMPION)
    gate, names = cfg.gate(task), cfg.reported_metrics(task)
    record: dict[str, Any] = {"task": task, "challenger": int(challenger), "champion_before": champion and int(champion),
                              "gate": gate.model_dump(), "forced": force}
    if champion == challenger:
        decision, figures = Decision(False, f"version {challenger} is already @{CHAMPION}"), {}
    else:
        images = {n: load_image_set(paths.root / folder, task, cfg) for n, folder in cfg.evaluate.sets.items()}
        tools = instruments(task, cfg, paths.root)
        try:
            ours = figures_of(f"models:/{task}/{challenger}", task, cfg, images, tracking_uri, tools)
            figures = {"challenger": pooled(ours, names), "baseline": pooled(ours, names, "baseline")}
        except (EvaluationError, ModelSpecError) as exc:
            decision, figures = Decision(False, f"evaluation of the challenger failed: {exc}"), {}
            record["failed"] = True
        else:
            if champion is not None:
                figures["champion"] = pooled(figures_of(f"models:/{task}/{champion}", task, cfg, images, tracking_uri, tools), names)
            incumbent = "champion" if champion is not None else "baseline"
            label = f"@{CHAMPION} v{champion}" if champion is not None else "the baseline"
            decision = decide(gate, figures["challenger"], figures[incumbent], label)
            if force and not decision.promote and not any(math.isnan(v) for v in figures["challenger"].values()):
                decision = Decision(True, f"forced ({decision.reason})", decision.deltas)
    if decision.promote:
        client.set_registered_model_alias(task, CHAMPION, challenger)
    record.update(promoted=decision.promote, reason=decision.reason, deltas=decision.deltas, figures=figures,
                  champion_after=int(alias_version(client, task, CHAMPION) or 0) or None)
    client.set_model_version_tag(task, challenger, TAG + "promotion", "promoted" if decision.promote else "rejected")
    client.set_model_version_tag(task, challenger, TAG + "promotion.reason", decision.reason[:5000])
    client.set_model_version_tag(task, challenger, TAG + "promotion.figures", json.dumps(figures)[:5000])
    create_markdown_artifact(key=f"promotion-{task.replace('_', '-')}", markdown=markdown(record), description=f"Promotion gate of {task}")
    atomic_write_text(paths.promotion(task), json.dumps(record, indent=2, sort_keys=True) + "\n")
    verdict = "PROMOTED" if decision.promote else "not promoted"
    record["line"] = (f"promote {task}: v{challenger} {verdict}; @{CHAMPION} is "
                      f"{record['champion_after'] and 'v' + str(record['champion_after'])}: {decision.reason}")
    log.info(record["line"])
    return record


def markdown(record: dict[str, Any]) -> str:
    lines = [f"# Promotion gate: {record['task']}", "",
             f"**{'Promoted' if record['promoted'] else 'Not promoted'}**: v{record['challenger']}. {record['reason']}", "",
             f"Champion before: {record['champion_before'] and 'v' + str(record['champion_before'])}; "
             f"after: {record['champion_after'] and 'v' + str(record['champion_after'])}.", ""]
    figures = record["figures"]
    if figures:
        names = list(next(iter(figures.values())))
        lines += ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {who} | " + " | ".join(f"{vals[n]:.4f}" for n in names) + " |" for who, vals in figures.items()]
    return "\n".join(lines) + "\n"
