"""The task registry: one entry per image-to-image task.

An entry says how a task's input is made from a clean target (its degradation class and the
defaults ``params.yaml`` may override) and which task-specific options it takes. Everything else
(sharding, training, evaluation) reads the entry; adding a task is one ``register`` call here
plus a block under ``tasks:`` in ``params.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from training import degradations as deg
from training.loop import OptimConfig
from training.losses import LossConfig
from training.models import TransformNetConfig
from training.quality import METRICS, GateConfig


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StyleOptions(BaseModel):
    """Fast style transfer: one model per style image."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    style_image: str = Field("data/raw/styles/the-wave.jpg", min_length=1)


@dataclass(frozen=True)
class Task:
    """A registry entry. ``*_defaults`` are the task's own defaults; params.yaml overrides them."""

    name: str
    description: str
    degradation: type[deg.Degradation]
    degradation_defaults: dict[str, Any] = field(default_factory=dict)
    options: type[BaseModel] = NoOptions
    model_defaults: dict[str, Any] = field(default_factory=dict)
    loss_defaults: dict[str, Any] = field(default_factory=dict)
    optim_defaults: dict[str, Any] = field(default_factory=dict)
    # What evaluation reports (names in training.quality.METRICS) and how promotion compares.
    metrics: tuple[str, ...] = ("psnr", "ssim", "feature_distance")
    gate_defaults: dict[str, Any] = field(default_factory=lambda: {"metric": "psnr", "margin": 0.01, "tolerances": {"ssim": 0.005}})
    # Evaluate only on images that have colour: a gray target (Set14's bridge and man) equals a
    # colorizer's gray input, scoring the baseline an infinite PSNR that swamps every mean.
    colour_targets_only: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"task {self.name!r}: unknown metrics {unknown}; known: {', '.join(METRICS)}")
        self.make_gate_config().check_metrics(self.metrics)

    def block_defaults(self) -> dict[str, dict[str, Any]]:
        """The task's defaults per params block; a block in params.yaml is merged over these."""
        return {"degradation": self.degradation_defaults, "model": self.model_defaults, "loss": self.loss_defaults,
                "optim": self.optim_defaults}

    def make_degradation(self, overrides: dict[str, Any] | None = None) -> deg.Degradation:
        return self.degradation(**{**self.degradation_defaults, **(overrides or {})})

    def make_model_config(self, overrides: dict[str, Any] | None = None) -> TransformNetConfig:
        return TransformNetConfig(**{**self.model_defaults, **(overrides or {})})

    def make_loss_config(self, overrides: dict[str, Any] | None = None) -> LossConfig:
        return LossConfig(**{**self.loss_defaults, **(overrides or {})})

    def make_optim_config(self, overrides: dict[str, Any] | None = None) -> OptimConfig:
        return OptimConfig(**{**self.optim_defaults, **(overrides or {})})

    def make_gate_config(self, overrides: dict[str, Any] | None = None) -> GateConfig:
        return GateConfig(**{**self.gate_defaults, **(overrides or {})})


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))}") from None


# The paper's SR net: 4 residual blocks, batch norm. Pixel L1 plus a light feature loss, so that a
# short CPU run beats bicubic in PSNR; raise feature_weight for the paper's perceptual look.
SR_MODEL = {"residual_blocks": 4, "norm": "batch", "upsample": "resize_conv", "global_skip": True}
SR_LOSS = {"pixel_weight": 1.0, "pixel": "l1", "feature_weight": 0.05, "feature_layer": "relu2_2"}
# The paper's lr 1e-3 throws a residual (global-skip) net far from bicubic in its first steps;
# 2e-4 with a short warm-up beats bicubic within ~100 CPU steps.
SR_OPTIM = {"lr": 2e-4, "warmup_steps": 20, "steps": 600, "batch_size": 8}
# Same-size restoration: the style-net shape (down x4, 5 residual blocks, up), instance norm.
# A global skip: the net learns a correction of the degraded input, so even a short run starts
# at the input's own PSNR and improves on it.
RESTORE_MODEL = {"residual_blocks": 5, "norm": "instance", "upsample": "resize_conv", "global_skip": True}
RESTORE_LOSS = {"pixel_weight": 1.0, "pixel": "l1", "feature_weight": 0.05, "feature_layer": "relu2_2"}
# As for SR: lr 1e-3 from the first step pushed a 150-step denoiser below its own input; with
# 2e-4 and a short warm-up, 150 CPU steps gain +2.0 dB RGB PSNR on deblur, +0.2 on jpeg, +0.1 on
# denoise (val shards, measured in-process).
RESTORE_OPTIM = {"lr": 2e-4, "warmup_steps": 20}
# SR is scored by the field's protocol (Y channel, scale-pixel border crop); a pixel-heavy loss
# is promoted on PSNR-Y. Raise feature_weight and switch the gate to feature_distance for the
# paper's perceptual SR.
SR_METRICS = ("psnr_y", "ssim_y", "feature_distance")
SR_GATE = {"metric": "psnr_y", "margin": 0.01, "tolerances": {"ssim_y": 0.005}}

register(Task("sr_x4", "4x super-resolution (Johnson et al. 2016)", deg.BicubicDownscale, {"scale": 4},
              model_defaults=SR_MODEL, loss_defaults=SR_LOSS, optim_defaults=SR_OPTIM,
              metrics=SR_METRICS, gate_defaults=SR_GATE))
register(Task("sr_x8", "8x super-resolution (Johnson et al. 2016)", deg.BicubicDownscale, {"scale": 8},
              model_defaults=SR_MODEL, loss_defaults=SR_LOSS, optim_defaults=SR_OPTIM,
              metrics=SR_METRICS, gate_defaults=SR_GATE))
register(Task("denoise", "Gaussian denoising, sigma 25/255", deg.GaussianNoise, {"sigma": 25.0},
              model_defaults=RESTORE_MODEL, loss_defaults=RESTORE_LOSS, optim_defaults=RESTORE_OPTIM))
register(Task("deblur", "Gaussian deblurring", deg.GaussianBlur, {"sigma": 2.0},
              model_defaults=RESTORE_MODEL, loss_defaults=RESTORE_LOSS, optim_defaults=RESTORE_OPTIM))
register(Task("jpeg", "JPEG artefact removal, quality 10", deg.JpegCompression, {"quality": 10},
              model_defaults=RESTORE_MODEL, loss_defaults=RESTORE_LOSS, optim_defaults=RESTORE_OPTIM))
register(Task("colorize", "colorization: gray in, colour out", deg.Grayscale, {"channels": 3},
              model_defaults=RESTORE_MODEL, loss_defaults=RESTORE_LOSS, optim_defaults=RESTORE_OPTIM,
              metrics=("psnr", "ssim", "feature_distance", "colourfulness"), colour_targets_only=True))
# Fast style transfer: content loss at relu2_2, Gram style loss at every layer the feature net
# has, total variation; instance norm is what makes it look right (Ulyanov et al. 2016).
register(Task("style", "fast style transfer: content in, stylised out", deg.Identity, {}, StyleOptions,
              model_defaults={"residual_blocks": 5, "norm": "instance", "upsample": "resize_conv"},
              loss_defaults={"feature_weight": 1.0, "feature_layer": "relu2_2", "style_weight": 1e5, "tv_weight": 1e-6},
              metrics=("perceptual_total", "content_loss", "style_loss"), gate_defaults={"metric": "perceptual_total", "margin": 0.0}))
