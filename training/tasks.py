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
from training import realworld
from training.options import HIGHER_IS_BETTER, GateConfig, LossConfig, ModelConfig, OptimConfig, parse_model_config


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StyleOptions(BaseModel):
    """Fast style transfer: one model per style image."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    style_image: str = Field("data/raw/styles/the-wave.jpg", min_length=1, description="the style image (acquire copies the default styles in)")
    # The style image's longer side, in pixels, before its Gram matrices are taken (null: as it is).
    # It sets the size of the strokes and textures the model paints, relative to the content.
    style_size: int | None = Field(256, ge=16, le=8192)


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
    # Fixed strengths evaluation also scores a levelled degradation at (noise sigma, JPEG quality,
    # blur sigma), each against its input: a blind model must help at every one (the gate's harm rule).
    eval_levels: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.eval_levels and not issubclass(self.degradation, deg.LevelledDegradation):
            raise ValueError(f"task {self.name!r}: eval_levels need a degradation with one strength, not {self.degradation.kind}")
        unknown = [m for m in self.metrics if m not in HIGHER_IS_BETTER]
        if unknown:
            raise ValueError(f"task {self.name!r}: unknown metrics {unknown}; known: {', '.join(HIGHER_IS_BETTER)}")
        self.make_gate_config().check_metrics(self.metrics)

    def block_defaults(self) -> dict[str, dict[str, Any]]:
        """The task's defaults per params block; a block in params.yaml is merged over these."""
        return {"degradation": self.degradation_defaults, "model": self.model_defaults, "loss": self.loss_defaults,
                "optim": self.optim_defaults}

    def make_degradation(self, overrides: dict[str, Any] | None = None) -> deg.Degradation:
        return self.degradation(**{**self.degradation_defaults, **(overrides or {})})

    def make_model_config(self, overrides: dict[str, Any] | None = None) -> ModelConfig:
        return parse_model_config(merge_model_block(self.model_defaults, overrides or {}))

    def make_loss_config(self, overrides: dict[str, Any] | None = None) -> LossConfig:
        return LossConfig(**{**self.loss_defaults, **(overrides or {})})

    def make_optim_config(self, overrides: dict[str, Any] | None = None) -> OptimConfig:
        return OptimConfig(**{**self.optim_defaults, **(overrides or {})})

    def make_gate_config(self, overrides: dict[str, Any] | None = None) -> GateConfig:
        return GateConfig(**{**self.gate_defaults, **(overrides or {})})


def merge_model_block(defaults: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    """A ``model:`` block over the task's defaults; a block naming another ``arch`` starts from that
    network's own defaults instead (the paper's net for a resnet task: ``model: {arch: johnson}``)."""
    if "arch" in block and block["arch"] != defaults.get("arch", "johnson"):
        return dict(block)
    return {**defaults, **block}


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


# Restoration and SR: the resnet (residual blocks without norm, a sub-pixel tail, a global skip
# from the input or its bicubic upscale) on pixel L1 alone. Measured on 2 CPU cores (docs/networks.md): it
# gains 2-5x the dB of the paper's nets in the same minutes; the VGG term costs a third of a step
# and lowers PSNR. Same-size tasks run their body at half resolution (unshuffle 2): x2 the steps
# per second and twice the receptive field of the same net at full resolution.
SR_MODEL = {"arch": "resnet", "channels": 64, "residual_blocks": 4}
PIXEL_LOSS = {"pixel_weight": 1.0, "pixel": "l1", "feature_weight": 0.0, "feature_layer": "relu2_2"}
# The zero-initialised tail starts every net at its baseline, so the paper's lr 1e-3 is safe here
# (the paper's nets needed 2e-4 to stay above their input).
PIXEL_OPTIM = {"lr": 1e-3, "warmup_steps": 20, "batch_size": 16}
RESTORE_MODEL = {**SR_MODEL, "unshuffle": 2}
# The paper's networks stay one line away: `model: {arch: johnson, ...}` in a task block (the
# `paper` profile in params.yaml switches every task to them and to the paper's losses).
# SR is scored by the field's protocol (Y channel, scale-pixel border crop) and promoted on PSNR-Y;
# a block with the feature loss is promoted on the feature distance instead (sr_x4_perceptual).
# periodic_db: the output's energy at the upsampler's period over the target's (a grid texture > 0,
# and sharpness too); grid_db: how much more it peaks there than the target (a grid alone).
SR_METRICS = ("psnr_y", "ssim_y", "feature_distance", "periodic_db", "grid_db")
SR_GATE = {"metric": "psnr_y", "margin": 0.01, "tolerances": {"ssim_y": 0.005}}

register(Task("sr_x4", "4x super-resolution (Johnson et al. 2016)", deg.BicubicDownscale, {"scale": 4},
              model_defaults=SR_MODEL, loss_defaults=PIXEL_LOSS, optim_defaults=PIXEL_OPTIM,
              metrics=SR_METRICS, gate_defaults=SR_GATE))
# The paper's perceptual SR: the same network on the feature reconstruction loss at relu2_2 (a
# tenth of pixel L1 keeps the colours), sharper edges and texture at a lower PSNR; promoted on the
# feature distance, with no PSNR tolerance (trading PSNR for it is the point). It starts on pixel
# L1 alone (cheap steps, no VGG): from bicubic, 250 CPU steps of the feature loss ended above the
# pixel-led model's feature distance; from a pixel-led start the feature loss only has to sharpen.
# Two changes against the feature loss's grid (docs/blind-restoration.md): a loss on the error's
# part that repeats at the upsampler's period (grid_weight; the squared phase means are ~1e-4, hence
# the weight), and two small convs at the output resolution that tie the sub-pixel phases
# together (hr_channels).
register(Task("sr_perceptual", "super-resolution on the feature loss (Johnson et al. 2016)", deg.BicubicDownscale, {"scale": 4},
              model_defaults={**SR_MODEL, "hr_channels": 8},
              loss_defaults={**PIXEL_LOSS, "feature_weight": 1.0, "pixel_weight": 0.1, "pixel_only_steps": 450,
                             "grid_weight": 3000.0},
              optim_defaults=PIXEL_OPTIM, metrics=SR_METRICS, gate_defaults={"metric": "feature_distance", "margin": 0.01}))
# Real-world SR (Real-ESRNet, Wang et al. 2021): the same network trained on Real-ESRGAN's second-order
# degradation (training/realworld.py), so that a real photo's noise, JPEG blocks and ringing are
# removed rather than sharpened. It is evaluated on Set5/Set14 degraded the same way at a fixed
# seed per image, against bicubic on those inputs.
register(Task("sr_real", "4x super-resolution of real photos (Real-ESRGAN's degradations)", realworld.SecondOrder,
              {"scale": 4}, model_defaults=SR_MODEL, loss_defaults=PIXEL_LOSS, optim_defaults=PIXEL_OPTIM,
              metrics=SR_METRICS, gate_defaults=SR_GATE))
register(Task("sr_x8", "8x super-resolution (Johnson et al. 2016)", deg.BicubicDownscale, {"scale": 8},
              model_defaults=SR_MODEL, loss_defaults=PIXEL_LOSS, optim_defaults=PIXEL_OPTIM,
              metrics=SR_METRICS, gate_defaults=SR_GATE))
# Restoration covers a range of levels (DnCNN-B, FBCNN): each sample draws its level from it, and
# evaluation scores fixed levels across it; the paper's single levels are one line in a block
# ({sigma: 25}). denoise and jpeg are conditioned on the level (a fourth input channel, FFDNet's
# noise map and FBCNN's quality factor; training/conditioning.py): the blind net smoothed a
# quality-90 JPEG by 0.9 dB and fell 0.7 dB short at sigma 10 (docs/blind-restoration.md).
register(Task("denoise", "Gaussian denoising, sigma 0..50/255, given the sigma", deg.GaussianNoise,
              {"sigma": (0.0, 50.0), "condition": True},
              model_defaults=RESTORE_MODEL, loss_defaults=PIXEL_LOSS, optim_defaults=PIXEL_OPTIM, eval_levels=(10, 25, 50)))
register(Task("deblur", "blind Gaussian deblurring, sigma 0.5..3 px", deg.GaussianBlur, {"sigma": (0.5, 3.0)},
              model_defaults=RESTORE_MODEL, loss_defaults=PIXEL_LOSS, optim_defaults=PIXEL_OPTIM, eval_levels=(1, 2, 3)))
register(Task("jpeg", "JPEG artefact removal, quality 10..95, read from the file", deg.JpegCompression,
              {"quality": (10, 95), "condition": True},
              model_defaults=RESTORE_MODEL, loss_defaults=PIXEL_LOSS, optim_defaults=PIXEL_OPTIM,
              eval_levels=(10, 30, 60, 90)))
# Colorization: the colornet (a frozen VGG encoder, chroma predicted at 1/8 resolution, bounded by
# chroma_gamut, sharpened by the guided filter, with the image-mean context) predicting a
# distribution over 16 x 16 (Cb, Cr) bins, trained on their cross-entropy with class rebalancing
# (Zhang et al. 2016). Regression (L1 + 1 - SSIM + colourfulness terms, the previous default; how
# to select it: params.yaml's colorize block) fades an uncertain colour toward sepia and needed colourfulness terms
# that add colour everywhere, right or wrong; the bin distribution keeps a confident colour's
# saturation. On the default budget it moved the whole SSIM/colour frontier on Set14 by about
# 0.002 SSIM, and trains 30 % faster per step (no SSIM, no colourfulness): docs/networks.md.
COLOR_MODEL = {"arch": "colornet", "channels": 96, "residual_blocks": 4, "downsample": 2, "chroma_gamut": True,
               "global_context": True, "chroma_guide": 4, "chroma_bins": 16}
COLOR_LOSS = {**PIXEL_LOSS, "pixel_weight": 0.0, "chroma_bin_weight": 1.0, "chroma_bin_rebalance": 0.2}
register(Task("colorize", "colorization: gray in, colour out", deg.Grayscale, {"channels": 3},
              model_defaults=COLOR_MODEL, loss_defaults=COLOR_LOSS, optim_defaults=PIXEL_OPTIM,
              metrics=("psnr", "ssim", "feature_distance", "colourfulness"), colour_targets_only=True))
# Fast style transfer: the paper's style net with instance norm (Ulyanov et al. 2016), content
# loss at relu2_2, Gram style loss at every layer the feature net has. The weights balance the
# two: at style_weight 1e5 (what the paper's loss scale suggests) the style term was 1e4 times the
# content term and every output became the texture alone; at 0.5 the net learns the palette and
# strokes in ~250 CPU steps and keeps faces, boats and text recognisable (docs/results.md). The gate adds
# a bound on the content loss, so a model that paints over its input is never promoted.
STYLE_LOSS = {"feature_weight": 1.0, "feature_layer": "relu2_2", "style_weight": 0.5, "tv_weight": 0.0}
STYLE_GATE = {"metric": "perceptual_total", "margin": 0.0, "limits": {"content_loss": 8.0}}
register(Task("style", "fast style transfer: content in, stylised out", deg.Identity, {}, StyleOptions,
              model_defaults={"arch": "johnson", "residual_blocks": 5, "norm": "instance", "upsample": "resize_conv"},
              loss_defaults=STYLE_LOSS, optim_defaults={"lr": 1e-3, "warmup_steps": 20, "batch_size": 4},
              metrics=("perceptual_total", "content_loss", "style_loss"), gate_defaults=STYLE_GATE))
