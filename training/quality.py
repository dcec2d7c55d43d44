"""Per-image quality metrics by name, and the promotion gate that compares two models by them.

A task's registry entry lists the metric names it reports; each name here says how to compute
it and which direction is better, so the evaluation, the reports and the gate never hard-code a
metric. ``feature_distance`` needs the frozen feature network, passed in through the context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from training import metrics as m
from training.inference import pair_to_tensor, to_tensor
from training.losses import feature_reconstruction_loss
from training.options import GateConfig, HIGHER_IS_BETTER


@dataclass(frozen=True)
class ScoreContext:
    """What a metric needs besides the two images: the border crop (the scale for SR), whether
    the source image had one channel, and a feature distance function when the task uses one."""

    crop: int = 0
    source_channels: int = 3
    feature_distance: Callable[[np.ndarray, np.ndarray], float] | None = None
    lpips: Callable[[np.ndarray, np.ndarray], float] | None = None
    perceptual: Callable[[np.ndarray, np.ndarray], dict[str, float]] | None = None


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray, ScoreContext], float]
    # Unary metrics describe the output alone (colourfulness); the report also gives the target's.
    unary: bool = False
    # Needs a network (VGG features, LPIPS, the task's loss): the costly part of a whole-image
    # evaluation, left out at a blind task's fixed levels, which are judged by PSNR and SSIM.
    network: bool = False

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.name]


def _feature(out: np.ndarray, target: np.ndarray, ctx: ScoreContext) -> float:
    if ctx.feature_distance is None:
        raise ValueError("feature_distance needs a feature network")
    return ctx.feature_distance(out, target)


def _lpips(out: np.ndarray, target: np.ndarray, ctx: ScoreContext) -> float:
    if ctx.lpips is None:
        raise ValueError("lpips needs its weights (evaluate.lpips in params.yaml)")
    return ctx.lpips(out, target)


def _loss_part(part: str) -> Callable[[np.ndarray, np.ndarray, ScoreContext], float]:
    def fn(out: np.ndarray, target: np.ndarray, ctx: ScoreContext) -> float:
        if ctx.perceptual is None:
            raise ValueError(f"{part} needs the task's perceptual loss")
        return ctx.perceptual(out, target).get(part, 0.0)

    return fn


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("psnr_y", lambda o, t, c: m.psnr_sr(o, t, c.crop, c.source_channels)),
        Metric("ssim_y", lambda o, t, c: m.ssim_y(o, t, c.crop)),  # Y always: see training.metrics
        Metric("psnr", lambda o, t, c: m.psnr(o, t, c.crop)),
        Metric("ssim", lambda o, t, c: m.ssim(o, t, c.crop)),
        Metric("feature_distance", _feature, network=True),
        Metric("lpips", _lpips, network=True),  # reported by every task when evaluate.lpips names its files
        # The task's own weighted training loss on whole images (style transfer is judged by it):
        # content = the feature reconstruction part against the content image.
        Metric("content_loss", _loss_part("feature"), network=True),
        Metric("style_loss", _loss_part("style"), network=True),
        Metric("perceptual_total", _loss_part("total"), network=True),
        Metric("colourfulness", lambda o, t, c: m.colourfulness(o), unary=True),
        # SR: energy at the upsampler's period (the scale) over the target's, in dB; a grid texture > 0
        Metric("periodic_db", lambda o, t, c: m.periodic_energy(o, t, max(2, c.crop), c.crop)),
        # SR: how much more the spectrum peaks at those harmonics than the target's (a grid > 0;
        # sharpness, which periodic_db also counts, raises the peaks' neighbourhood alike)
        Metric("grid_db", lambda o, t, c: m.grid_peaks(o, t, max(2, c.crop), c.crop)),
    )
}
assert set(METRICS) == set(HIGHER_IS_BETTER), "every metric needs its direction in training.options.HIGHER_IS_BETTER"


def score(names: tuple[str, ...], output: np.ndarray, target: np.ndarray, ctx: ScoreContext) -> dict[str, float]:
    """Every named metric of ``output`` against ``target``."""
    return {name: METRICS[name].fn(output, target, ctx) for name in names}


def better(name: str, a: float, b: float) -> float:
    """How much better ``a`` is than ``b`` by metric ``name`` (negative when worse)."""
    return a - b if METRICS[name].higher_is_better else b - a


class FeatureDistance:
    """Mean squared difference of frozen-network features at ``layers``, averaged over layers:
    the feature reconstruction loss of the paper, on whole 8-bit images."""

    def __init__(self, feature_net: torch.nn.Module, layers: tuple[str, ...]):
        # Channels-last: x1.27 for this VGG on whole images on the CPU, equal to 1e-6 relative.
        self.net, self.layers = feature_net.eval().to(memory_format=torch.channels_last), layers
        # The model and its baseline are scored against the same target in a row: the target's
        # features are kept for the next call (on whole images the network is most of the cost).
        self._target: tuple[np.ndarray, dict[str, torch.Tensor]] | None = None

    @torch.inference_mode()
    def __call__(self, output: np.ndarray, target: np.ndarray) -> float:
        if self._target is None or self._target[0] is not target:
            self._target = (target, self.net(self._input(target)))
        ours, theirs = self.net(self._input(output)), self._target[1]
        return float(np.mean([feature_reconstruction_loss(ours[k], theirs[k]).item() for k in self.layers]))

    def _input(self, image: np.ndarray) -> torch.Tensor:
        x = to_tensor(image, 3).to(next(self.net.parameters()).device)
        return x.contiguous(memory_format=torch.channels_last)


class PerceptualScorer:
    """A task's ``PerceptualLoss`` on whole 8-bit images, returning its weighted parts and total.
    The three loss metrics of one image ask for the same pair in a row: computed once."""

    def __init__(self, loss: torch.nn.Module, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.loss = loss.eval().to(self.device)
        self._last: tuple[np.ndarray, np.ndarray, dict[str, float]] | None = None

    @torch.inference_mode()
    def __call__(self, output: np.ndarray, target: np.ndarray) -> dict[str, float]:
        if self._last is not None and self._last[0] is output and self._last[1] is target:
            return self._last[2]
        pair = pair_to_tensor(output, target).to(self.device)
        _, parts = self.loss(pair[:1], pair[1:])
        self._last = (output, target, parts)
        return parts


# ------------------------------------------------------------------------------------------
# The promotion gate


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    deltas: dict[str, float] = field(default_factory=dict)


def decide(gate: GateConfig, challenger: dict[str, float], incumbent: dict[str, float], incumbent_name: str,
           per_set: dict[str, tuple[float, float]] | None = None) -> Decision:
    """Promote only if every figure is finite, no set or level is worse than its baseline
    (``per_set``: name -> (challenger, baseline) by the primary metric; ``no_harm``), the primary
    metric improves by ``margin`` and no secondary metric regresses by more than its tolerance.
    ``incumbent`` is the champion's figures, or the baseline's (bicubic, the degraded input) when
    there is no champion yet."""
    names = (gate.metric, *gate.tolerances)
    for name in (*names, *gate.limits):
        value = challenger.get(name)
        if value is None or math.isnan(value):  # a failed or diverged evaluation is never promoted
            return Decision(False, f"challenger {name} is {value}: not a valid evaluation")
    for name, limit in gate.limits.items():
        if better(name, challenger[name], limit) < 0:
            side = "above" if not METRICS[name].higher_is_better else "below"
            return Decision(False, f"{name} {challenger[name]:.4g} is {side} its limit {limit:.4g}")
    if gate.no_harm:
        for name, (ours, base) in (per_set or {}).items():
            if not better(gate.metric, ours, base) >= 0:
                return Decision(False, f"harms {name}: {gate.metric} {ours:.4f} against the baseline's {base:.4f}")
    deltas = {name: better(name, challenger[name], incumbent[name]) for name in names}
    gain = deltas[gate.metric]
    if not gain >= gate.margin:
        return Decision(False, f"{gate.metric} {challenger[gate.metric]:.4f} vs {incumbent_name} "
                               f"{incumbent[gate.metric]:.4f}: gain {gain:+.4f} is below the margin {gate.margin}", deltas)
    for name, tolerance in gate.tolerances.items():
        if deltas[name] < -tolerance:
            return Decision(False, f"{name} regresses by {-deltas[name]:.4f} against {incumbent_name} "
                                   f"(tolerance {tolerance})", deltas)
    return Decision(True, f"{gate.metric} {challenger[gate.metric]:.4f} beats {incumbent_name} "
                          f"{incumbent[gate.metric]:.4f} by {gain:+.4f} (margin {gate.margin})", deltas)
