"""Scoring a model by the field's protocol: each evaluation image's input made from the clean
image with the task's degradation, the model's output and its baseline's scored against it,
the means, and a comparison sheet. The evaluate stage writes what this returns; promote scores
challenger and champion with it on the same images.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from pipelines.common.errors import UserError
from pipelines.common.schema import Config
from pipelines.use.predictors import Predictor, baseline, load_predictor
from pipelines.use.sheets import render_sheet, row_crops
from training.conditioning import rgb_of
from training.images import DecodeLimits, decode_image, failure_reason, list_images, no_images, read_file
from training.lpips import Lpips
from training.pairs import sample_seed, val_pair
from training.quality import METRICS, FeatureDistance, PerceptualScorer, ScoreContext, score

log = logging.getLogger(__name__)


class EvaluationError(UserError, RuntimeError):
    """A set with no image that could be read, or a model that failed on one: named, in one line."""


@dataclass(frozen=True)
class EvalImage:
    name: str
    target: np.ndarray  # clean, mod-cropped, HxWx3 uint8
    input: np.ndarray  # degraded, HxWx3 uint8 (gray inputs repeated to three channels; a conditioned
    # task's HxWx4 with its level channel, training.degradations.with_level)
    source_channels: int


@dataclass(frozen=True)
class EvalSet:
    """A folder scored at the task's own degradation (``level`` None: its training distribution,
    drawn per image) or at one fixed level of it (``Set5-quality90``)."""

    name: str
    folder: Path
    level: float | None = None

    def metrics(self, reported: tuple[str, ...]) -> tuple[str, ...]:
        """What this set is scored by: at a fixed level, the metrics that need no network (PSNR,
        SSIM: what the gate's harm rule reads), which is most of the cost saved."""
        return reported if self.level is None else tuple(n for n in reported if not METRICS[n].network)


def eval_sets(task: str, cfg: Config, folders: dict[str, Path]) -> list[EvalSet]:
    """Each folder as it is, then at each of the task's evaluation levels (``Config.eval_levels``)."""
    degradation, levels = cfg.degradation(task), cfg.eval_levels(task)
    out = [EvalSet(name, folder) for name, folder in folders.items()]
    for name, folder in folders.items():
        out += [EvalSet(f"{name}-{degradation.level_key}{level:g}", folder, level) for level in levels]
    return out


class ImageSet(list):
    """The ``EvalImage``s of a folder (a list), and ``skipped``: (name, why) for each file that could
    not be read or degraded, reported and left out so that one bad file does not stop an evaluation."""

    def __init__(self, images=(), skipped=()) -> None:
        super().__init__(images)
        self.skipped: list[tuple[str, str]] = list(skipped)


def load_image_set(folder: Path, task: str, cfg: Config, level: float | None = None) -> ImageSet:
    """Every image file under ``folder`` (sorted), with the task's degraded input made from it
    (at ``level``, when given, instead of the block's setting or range).
    A file that cannot be read, decoded or degraded is logged and skipped (``ImageSet.skipped``);
    a folder where none can be is an ``EvaluationError``."""
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: no such folder of images")
    files = list_images(folder)
    if not files:
        raise EvaluationError(no_images(folder))
    stems = [p.stem for p in files]
    degradation = cfg.degradation(task) if level is None else cfg.degradation(task).at(level)
    colour_only = cfg.task(task).entry.colour_targets_only
    images, gray, skipped = ImageSet(), [], []
    limits = DecodeLimits.from_config(cfg.ingest)
    for path in files:
        name = path.stem if stems.count(path.stem) == 1 else path.relative_to(folder).as_posix()
        why = None
        try:
            rgb, channels = decode_image(read_file(path, limits), limits=limits)
        except Exception as exc:  # noqa: BLE001 - whatever the decoder raises, only this file is left out
            why = f"cannot read it ({failure_reason(exc)})"
        else:
            if colour_only and is_gray(rgb):
                gray.append(name)
                continue
            scale = degradation.input_scale
            if min(rgb.shape[:2]) < scale:  # nothing would be left after the mod-crop
                why = f"too small: {rgb.shape[1]}x{rgb.shape[0]}, under the scale ({scale}) on a side"
            else:
                try:
                    # The seed depends on the image name only, so every model sees the same noisy inputs.
                    pair = val_pair(rgb, degradation, sample_seed(cfg.seed, task, "evaluate", name))
                except Exception as exc:  # noqa: BLE001 - a degradation that cannot take this image: this one only
                    why = f"cannot make its input ({type(exc).__name__}: {exc})"
        if why is not None:
            skipped.append((name, why))
            log.warning("skipped %s: %s", path, why)
            continue
        inp = np.repeat(pair.input, 3, axis=2) if pair.input.shape[2] == 1 else pair.input
        images.append(EvalImage(name, pair.target, inp, channels))
    images.skipped = skipped
    if gray:
        log.info("%s: %d gray image(s) left out, %s has no colour to recover there: %s", folder, len(gray), task, ", ".join(gray))
    if not images:
        if not gray:
            first, why = skipped[0]
            raise EvaluationError(f"{folder}: none of its {len(files)} image file(s) could be used "
                                  f"({first}: {why}{'; see the warnings above' if len(skipped) > 1 else ''})")
        unread = f", {len(skipped)} unreadable" if skipped else ""
        raise EvaluationError(f"{folder}: every image is gray{unread}; {task} needs colour targets")
    return images


def is_gray(rgb: np.ndarray) -> bool:
    """No colour at all: R == G == B everywhere (a gray picture stored as RGB counts too)."""
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


@dataclass(frozen=True)
class Instruments:
    """The networks some metrics need, loaded once per evaluation."""

    feature_distance: FeatureDistance | None = None
    lpips: Lpips | None = None
    perceptual: PerceptualScorer | None = None


LOSS_METRICS = frozenset({"content_loss", "style_loss", "perceptual_total"})


def instruments(task: str, cfg: Config, root: Path = Path("."), device: str = "cpu",
                names: tuple[str, ...] | None = None) -> Instruments:
    """The networks the task's metrics (or ``names`` of them) need, on ``device`` (the evaluate
    stage: the CPU)."""
    from training.vgg import load_feature_net

    names, params = names or cfg.reported_metrics(task), cfg.task(task)
    tools: dict[str, Any] = {}
    if "feature_distance" in names:
        layers = (params.loss.feature_layer,)
        tools["feature_distance"] = FeatureDistance(load_feature_net(cfg.feature_net, layers).to(device), layers)
    if "lpips" in names:
        tools["lpips"] = Lpips(cfg.evaluate.lpips)
    if LOSS_METRICS & set(names):
        from pipelines.use.pretrained import task_loss

        tools["perceptual"] = PerceptualScorer(task_loss(params, cfg.feature_net, root, device), device)
    return Instruments(**tools)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def evaluate_images(task: str, predictor: Predictor, images: list[EvalImage], cfg: Config, image_set: str,
                    tools: Instruments, progress: bool = True,
                    metrics: tuple[str, ...] | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """(report, comparison sheet) of ``predictor`` and the task's baseline on ``images``, by
    ``metrics`` (default: all the task reports); the files ``load_image_set`` skipped
    (``images.skipped``) are listed under ``skipped``."""
    names = metrics or cfg.reported_metrics(task)
    scale = cfg.degradation(task).input_scale
    base = baseline(task, scale)
    per_image, rows, skipped = [], [], list(getattr(images, "skipped", []))
    for image in tqdm(images, desc=f"evaluate {task} on {image_set}", unit="img", file=sys.stderr, disable=not progress):
        try:
            output = predictor(image.input)
        except Exception as exc:
            raise EvaluationError(f"{image_set}/{image.name}: the model failed ({exc})") from exc
        if output.shape != image.target.shape or output.dtype != np.uint8:
            raise EvaluationError(f"{image_set}/{image.name}: the model returned {output.dtype} {output.shape}, "
                                  f"expected uint8 {image.target.shape}")
        reference = base(image.input)
        ctx = ScoreContext(crop=scale if scale > 1 else 0, source_channels=image.source_channels,
                           feature_distance=tools.feature_distance, lpips=tools.lpips, perceptual=tools.perceptual)
        ours, theirs = score(names, output, image.target, ctx), score(names, reference, image.target, ctx)
        exact = [who for who, figures in (("the model", ours), (base.name, theirs)) if any(map(math.isinf, figures.values()))]
        if exact:  # one infinite PSNR would make the whole set's mean infinite
            why = f"{' and '.join(exact)} reproduce{'s' if len(exact) == 1 else ''} it exactly (PSNR infinite): left out of the means"
            skipped.append((image.name, why))
            log.warning("%s/%s: %s", image_set, image.name, why)
            continue
        record = {"name": image.name, "width": image.target.shape[1], "height": image.target.shape[0], **ours,
                  "baseline": theirs}
        record.update({f"target_{n}": METRICS[n].fn(image.target, image.target, ctx) for n in names if METRICS[n].unary})
        per_image.append(record)
        if len(rows) < cfg.evaluate.sheet_images:
            crops = row_crops(rgb_of(image.input), reference, output, image.target, scale, cfg.evaluate.sheet_crop)
            head = names[0]
            rows.append((image.name, crops, ["input", f"{base.name} {theirs[head]:.3g}", f"model {ours[head]:.3g}", "target"]))
    keys = [*names, *(f"target_{n}" for n in names if METRICS[n].unary)]
    report = {
        "task": task, "model": predictor.name, "image_set": image_set, "images": len(per_image),
        **{k: _mean([r[k] for r in per_image]) for k in keys},
        "baseline": {"model": base.name, **{k: _mean([r["baseline"][k] for r in per_image]) for k in names}},
        # files of the set that could not be read or scored: left out of the means, named with the reason
        "skipped": [{"name": name, "reason": why} for name, why in skipped],
        "per_image": per_image,
    }
    sheet = render_sheet(rows, f"{task} on {image_set}: {predictor.name} ({names[0]}, higher is "
                               f"{'better' if METRICS[names[0]].higher_is_better else 'worse'})")
    return report, sheet



def checkpoint_scorer(task: str, cfg: Config, folder: Path) -> Callable[[Path], float]:
    """A function from a model file (a checkpoint's state file will do) to its figure on the
    images of ``folder`` by the task's gate metric, made and scored as the evaluate stage would
    (the same degraded inputs, tiles and metric code). The images are read once, here."""
    metric = cfg.gate(task).metric
    images = load_image_set(folder, task, cfg)
    tools = instruments(task, cfg, names=(metric,))
    scale = cfg.degradation(task).input_scale

    def score_file(model_file: Path) -> float:
        predictor = load_predictor(str(model_file), task, scale, cfg.evaluate.tile, cfg.evaluate.overlap,
                                   inference=cfg.inference)
        report, _ = evaluate_images(task, predictor, images, cfg, folder.name, tools, progress=False, metrics=(metric,))
        return float(report[metric])

    return score_file
