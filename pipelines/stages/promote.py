"""The ``promote`` stage: the gate between ``challenger`` and ``champion``.

Both are scored on the same validation images (``evaluate.sets``): the champion now, through
its registered pyfunc; the challenger too, unless the ``evaluate`` stage's reports already scored
its very weights (same sha256) with the same images and settings. ``champion`` is read from the registry at that moment, so an alias moved by
hand in the MLflow UI is what the challenger must beat. With no champion the challenger must
beat the task's baseline (bicubic, or the degraded input). The decision and its figures become
version tags, a Prefect artifact, ``registry/<task>.promotion.json`` and one line on stdout.
"""

from __future__ import annotations

import json
import logging
import math
from functools import cached_property
from typing import Any

import numpy as np
from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pipelines.common.fingerprints import evaluation_sha256
from pipelines.common.fsutil import atomic_write_text
from pipelines.common.paths import Paths
from pipelines.common.schema import Config
from pipelines.services import tracking
from pipelines.services.descriptions import gate_markdown, with_gate
from pipelines.services.registry import CHALLENGER, CHAMPION, TAG, WEIGHTS_TAG, alias_version
from pipelines.use.predictors import ModelSpecError, load_predictor
from pipelines.use.scoring import EvalSet, EvaluationError, eval_sets, evaluate_images, instruments, load_image_set
from training.quality import Decision, decide

log = logging.getLogger(__name__)


def pooled(reports: list[dict[str, Any]], names: tuple[str, ...], key: str | None = None) -> dict[str, float]:
    """Means over every image of every set (``key="baseline"``: the baseline's figures)."""
    rows = [r[key] if key else r for report in reports for r in report["per_image"]]
    # a metric that needs a network is not scored at a blind task's levels: pooled where it is
    return {n: float(np.mean([row[n] for row in rows if n in row])) for n in names}


class Evaluator:
    """Scores registered versions through their pyfuncs on the ``evaluate.sets`` images, which
    (with the metric networks) are loaded on first use: a reused challenger needs neither."""

    def __init__(self, task: str, cfg: Config, paths: Paths, tracking_uri: str):
        self.task, self.cfg, self.paths, self.tracking_uri = task, cfg, paths, tracking_uri

    @cached_property
    def inputs(self) -> tuple[list[tuple[EvalSet, list]], Any]:
        return ([(s, load_image_set(s.folder, self.task, self.cfg, s.level)) for s in sets(self.task, self.cfg, self.paths)],
                instruments(self.task, self.cfg, self.paths.root))

    def __call__(self, uri: str) -> list[dict[str, Any]]:
        images, tools = self.inputs
        cfg, scale = self.cfg, self.cfg.degradation(self.task).input_scale
        predictor = load_predictor(uri, self.task, scale, cfg.evaluate.tile, cfg.evaluate.overlap, self.tracking_uri)
        reported = cfg.reported_metrics(self.task)
        return [evaluate_images(self.task, predictor, imgs, cfg, s.name, tools, False, s.metrics(reported))[0]
                for s, imgs in images]


def sets(task: str, cfg: Config, paths: Paths) -> list[EvalSet]:
    """What the gate scores: every ``evaluate.sets`` folder, and each at the task's levels."""
    return eval_sets(task, cfg, {name: paths.root / folder for name, folder in cfg.evaluate.sets.items()})


def stage_reports(task: str, cfg: Config, paths: Paths, weights_sha256: str | None) -> list[dict[str, Any]] | None:
    """The evaluate stage's reports (``reports/<task>/<set>.json``) when they scored these very
    weights on the same images with the same settings: the challenger need not be run again."""
    reports, stamps = [], {}
    for one in sets(task, cfg, paths):
        path = paths.reports(task) / f"{one.name}.json"
        report = json.loads(path.read_text()) if path.is_file() else {}
        if one.folder not in stamps:  # one hash per folder: its levels read the same images
            stamps[one.folder] = evaluation_sha256(task, cfg, one.folder)
        if not weights_sha256 or report.get("weights_sha256") != weights_sha256 \
                or report.get("settings_sha256") != stamps[one.folder]:
            return None
        reports.append(report)
    return reports


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
        evaluate = Evaluator(task, cfg, paths, tracking_uri)
        weights = client.get_model_version(task, challenger).tags.get(WEIGHTS_TAG)
        try:
            ours = stage_reports(task, cfg, paths, weights)
            record["challenger_figures"] = "evaluate stage" if ours else "pyfunc"
            ours = ours or evaluate(f"models:/{task}/{challenger}")
            figures = {"challenger": pooled(ours, names), "baseline": pooled(ours, names, "baseline")}
            # the primary metric per set and level against that set's baseline: the harm rule
            record["per_set"] = {r["image_set"]: [r[gate.metric], r["baseline"][gate.metric]] for r in ours}
        except (EvaluationError, ModelSpecError) as exc:
            decision, figures = Decision(False, f"evaluation of the challenger failed: {exc}"), {}
            record["failed"] = True
        else:
            if champion is not None:
                figures["champion"] = pooled(evaluate(f"models:/{task}/{champion}"), names)
            incumbent = "champion" if champion is not None else "baseline"
            label = f"@{CHAMPION} v{champion}" if champion is not None else "the baseline"
            decision = decide(gate, figures["challenger"], figures[incumbent], label, record["per_set"])
            if force and not decision.promote and not any(math.isnan(v) for v in figures["challenger"].values()):
                decision = Decision(True, f"forced ({decision.reason})", decision.deltas)
    if decision.promote:
        client.set_registered_model_alias(task, CHAMPION, challenger)
    record.update(promoted=decision.promote, reason=decision.reason, deltas=decision.deltas, figures=figures,
                  champion_after=int(alias_version(client, task, CHAMPION) or 0) or None)
    client.set_model_version_tag(task, challenger, TAG + "promotion", "promoted" if decision.promote else "rejected")
    client.set_model_version_tag(task, challenger, TAG + "promotion.reason", decision.reason[:5000])
    client.set_model_version_tag(task, challenger, TAG + "promotion.figures", json.dumps(figures)[:5000])
    described = client.get_model_version(task, challenger).description
    client.update_model_version(task, challenger, description=with_gate(described, record))
    create_markdown_artifact(key=f"promotion-{task.replace('_', '-')}", markdown=gate_markdown(record), description=f"Promotion gate of {task}")
    atomic_write_text(paths.promotion(task), json.dumps(record, indent=2, sort_keys=True) + "\n")
    verdict = "PROMOTED" if decision.promote else "not promoted"
    record["line"] = (f"promote {task}: v{challenger} {verdict}; @{CHAMPION} is "
                      f"{record['champion_after'] and 'v' + str(record['champion_after'])}: {decision.reason}")
    log.info(record["line"])
    return record

