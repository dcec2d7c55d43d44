"""The losses of Johnson, Alahi & Fei-Fei (2016): feature reconstruction, style (Gram), TV, pixel.

Each is a pure function on tensors; :class:`PerceptualLoss` weighs them as ``params.yaml`` says
(``loss:``) and reports every active part, so a run logs what it is actually optimising.
Pure compute: torch and pydantic only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.options import LossConfig
from training.models import chroma_bin_centres, rgb_to_chroma
from training.vgg import FeatureNet


def gram_matrix(f: Tensor) -> Tensor:
    """N x C x C Gram matrix of N x C x H x W features, divided by C*H*W (the paper's G_j).

    Computed in float32 with autocast off: un-normalised sums over H*W overflow float16.
    """
    if f.ndim != 4:
        raise ValueError(f"expected N x C x H x W features, got shape {tuple(f.shape)}")
    n, c, h, w = f.shape
    with torch.autocast(device_type=f.device.type, enabled=False):
        psi = f.float().reshape(n, c, h * w)
        return torch.bmm(psi, psi.transpose(1, 2)) / (c * h * w)


def feature_reconstruction_loss(a: Tensor, b: Tensor) -> Tensor:
    """The paper's (1 / C H W) ||a - b||_2^2: the mean squared error per element (also over the batch)."""
    _same_shape(a, b)
    return F.mse_loss(a, b)


def style_loss(feats_out: Mapping[str, Tensor], grams_style: Mapping[str, Tensor], layers: Sequence[str]) -> Tensor:
    """Sum over ``layers`` of ||G(out) - G(style)||_F^2 (the paper's style loss), averaged over the batch.

    A style Gram of batch 1 is broadcast against every output of the batch.
    """
    if not layers:
        raise ValueError("style_loss needs at least one layer")
    total = None
    for layer in layers:
        diff = gram_matrix(feats_out[layer]) - grams_style[layer].to(torch.float32)
        term = diff.pow(2).sum(dim=(1, 2)).mean()
        total = term if total is None else total + term
    return total


def total_variation_loss(x: Tensor) -> Tensor:
    """Anisotropic TV: mean |vertical neighbour difference| + mean |horizontal neighbour difference|.

    Zero for a constant image; a direction with a single row or column contributes nothing.
    """
    if x.ndim != 4:
        raise ValueError(f"expected an N x C x H x W image, got shape {tuple(x.shape)}")
    tv = x.new_zeros(())
    if x.shape[2] > 1:
        tv = tv + (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean()
    if x.shape[3] > 1:
        tv = tv + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean()
    return tv


def pixel_loss(a: Tensor, b: Tensor, kind: Literal["l1", "mse", "psnr"] = "l1") -> Tensor:
    """Per-pixel baseline loss: mean absolute ("l1") or mean squared ("mse") error, or "psnr": the
    batch's mean of -PSNR per image (10 log10 of each image's MSE, as NAFNet trains). A blind
    restorer on L1 spends itself on the heavily degraded samples, whose errors are largest, and
    loses dB on the light ones; per-image PSNR weighs a dB alike at every level."""
    _same_shape(a, b)
    if kind == "l1":
        return F.l1_loss(a, b)
    if kind == "mse":
        return F.mse_loss(a, b)
    if kind == "psnr":
        mse = (a.float() - b.float()).pow(2).mean(dim=tuple(range(1, a.ndim)))
        return (10 / math.log(10)) * torch.log(mse + PSNR_EPS).mean()
    raise ValueError(f"unknown pixel loss {kind!r}: use 'l1', 'mse' or 'psnr'")


PSNR_EPS = 1e-8  # an exact image counts as 80 dB, not minus infinity


_SSIM_TAPS = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
_SSIM_TAPS = _SSIM_TAPS / _SSIM_TAPS.sum()


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of two N x C x H x W images in [0, 1], per channel, as training.metrics.ssim
    computes it on 8-bit images (11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, 'valid')."""
    _same_shape(a, b)
    c = a.shape[1]
    taps = _SSIM_TAPS.to(a.device, torch.float32)
    wx, wy = taps.view(1, 1, 1, 11).repeat(c, 1, 1, 1), taps.view(1, 1, 11, 1).repeat(c, 1, 1, 1)
    with torch.autocast(device_type=a.device.type, enabled=False):  # variances are differences of squares
        a, b = a.float(), b.float()

        def blur(x: Tensor) -> Tensor:
            return F.conv2d(F.conv2d(x, wx, groups=c), wy, groups=c)

        mu_a, mu_b = blur(a), blur(b)
        var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
        c1, c2 = 0.01**2, 0.03**2
        return (((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))).mean()


def colourfulness(x: Tensor) -> Tensor:
    """Hasler and Suesstrunk's colourfulness per image (N), on the [0, 1] scale (x255 for
    training.metrics.colourfulness): spread and mean of the opponent channels R-G and (R+G)/2-B."""
    r, g, b = x[:, 0].flatten(1).float(), x[:, 1].flatten(1).float(), x[:, 2].flatten(1).float()
    rg, yb = r - g, 0.5 * (r + g) - b
    spread = (rg.var(1, correction=0) + yb.var(1, correction=0) + 1e-8).sqrt()
    return spread + 0.3 * (rg.mean(1) ** 2 + yb.mean(1) ** 2 + 1e-8).sqrt()


def chroma_bin_loss(logits: Tensor, target: Tensor, rebalance: float = 0.0) -> Tensor:
    """Cross-entropy of chroma-bin logits (N x bins² x h x w: ``ColorNet`` with ``chroma_bins``)
    against the target's (Cb, Cr) averaged over each logit's cell of the image (N x 3 x H x W, H
    and W multiples of h and w) and soft-encoded onto the grid: a Gaussian one cell wide around
    it, so neighbouring bins share its mass. ``rebalance``: see ``LossConfig.chroma_bin_rebalance``;
    the weights come from this batch's own bin frequencies and average 1 over it."""
    n, k, h, w = logits.shape
    bins = math.isqrt(k)
    if bins * bins != k or target.shape[-2] % h or target.shape[-1] % w or target.shape[-2] // h != target.shape[-1] // w:
        raise ValueError(f"chroma logits {tuple(logits.shape)} do not tile the target {tuple(target.shape)}")
    with torch.no_grad():
        chroma = F.avg_pool2d(rgb_to_chroma(target.float()), target.shape[-1] // w)
        centres = chroma_bin_centres(bins).to(chroma.device)
        distance2 = ((chroma[:, :, None] - centres[None, :, :, None, None]) ** 2).sum(1)  # N x k x h x w
        soft = torch.softmax(-distance2 * (bins * bins / 2), dim=1)  # sigma: one cell (1 / bins)
    ce = -(soft * torch.log_softmax(logits.float(), dim=1)).sum(1)
    if rebalance > 0:
        freq = soft.mean((0, 2, 3))
        weight = 1 / (rebalance * freq + (1 - rebalance) / k)
        ce = ce * torch.einsum("nkhw,k->nhw", soft, weight / (freq * weight).sum())
    return ce.mean()


def as_one_image(x: Tensor) -> Tensor:
    """N x C x H x W -> 1 x C x (N H W) x 1: a batch's pixels as one image, for whole-batch statistics."""
    return x.transpose(0, 1).reshape(1, x.shape[1], -1, 1)


class PerceptualLoss(nn.Module):
    """The weighted training loss; ``forward(output, target) -> (total, parts)``.

    ``target`` is the clean image for image restoration and the content image for style transfer.
    ``parts`` holds each active part already multiplied by its weight (so they add up to "total"),
    as floats for logging. The style Grams are computed once here, from ``style_image``.
    """

    def __init__(self, cfg: LossConfig, feature_net: FeatureNet | None, style_image: Tensor | None = None,
                 grid_period: int = 0) -> None:
        """``grid_period``: the upsampler's scale, for ``grid_weight``."""
        super().__init__()
        self.cfg = cfg
        if cfg.grid_weight > 0 and grid_period < 2:
            raise ValueError(f"loss.grid_weight penalises an upsampler's sub-pixel grid: it needs a task that "
                             f"upscales by 2 or more, got a scale of {grid_period}")
        self.grid_period = grid_period
        if cfg.needs_features and feature_net is None:
            raise ValueError(
                f"feature_weight={cfg.feature_weight} / style_weight={cfg.style_weight} need a feature network, got None"
            )
        if cfg.style_weight > 0 and style_image is None:
            raise ValueError(f"style_weight={cfg.style_weight} needs a style image, got None")
        self.feature_net = feature_net if cfg.needs_features else None

        self.style_layers: tuple[str, ...] = ()
        if cfg.style_weight > 0:
            self.style_layers = feature_net.layers if cfg.style_layers is None else cfg.style_layers
        wanted = (*self.style_layers, *((cfg.feature_layer,) if cfg.feature_weight > 0 else ()))
        missing = [layer for layer in wanted if self.feature_net is not None and layer not in self.feature_net.layers]
        if missing:
            raise ValueError(
                f"the loss needs {', '.join(missing)} but the feature network returns only "
                f"{', '.join(feature_net.layers)}: load it with layers=LossConfig.needed_layers "
                f"(its weights have {', '.join(feature_net.available_layers)})"
            )

        self._gram_names: dict[str, str] = {}
        if self.style_layers:
            style = style_image if style_image.ndim == 4 else style_image.unsqueeze(0)
            if style.ndim != 4 or style.shape[:2] != (1, 3):
                raise ValueError(f"style_image must be 3 x H x W or 1 x 3 x H x W, got shape {tuple(style_image.shape)}")
            with torch.no_grad():
                feats = feature_net(style.to(next(feature_net.parameters()).device))
            for layer in self.style_layers:
                name = f"style_gram_{layer}"
                self.register_buffer(name, gram_matrix(feats[layer]).detach(), persistent=False)
                self._gram_names[layer] = name

    @property
    def style_grams(self) -> dict[str, Tensor]:
        return {layer: getattr(self, name) for layer, name in self._gram_names.items()}

    def forward(self, output: Tensor, target: Tensor, step: int | None = None,
                chroma_logits: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """``step``: the optimiser step, for ``pixel_only_steps`` (None: every term);
        ``chroma_logits``: the colornet's, for ``chroma_bin_weight``."""
        _same_shape(output, target)
        cfg = self.cfg
        if step is not None and step < cfg.pixel_only_steps:
            total = pixel_loss(output, target, cfg.pixel)
            value = float(total.detach())
            return total, {"pixel": value, "total": value}
        parts: dict[str, Tensor] = {}
        if self.feature_net is not None:
            seen, seen_target = (binomial_blur(output), binomial_blur(target)) if cfg.feature_blur else (output, target)
            feats_out = self.feature_net(seen)
            if cfg.feature_weight > 0:
                with torch.no_grad():
                    feat_target = self.feature_net(seen_target)[cfg.feature_layer]
                parts["feature"] = cfg.feature_weight * feature_reconstruction_loss(feats_out[cfg.feature_layer], feat_target)
            if cfg.style_weight > 0:
                parts["style"] = cfg.style_weight * style_loss(feats_out, self.style_grams, self.style_layers)
        if cfg.grid_weight > 0:
            parts["grid"] = cfg.grid_weight * subpixel_grid_loss(output - target, self.grid_period)
        if cfg.tv_weight > 0:
            parts["tv"] = cfg.tv_weight * total_variation_loss(output)
        if cfg.pixel_weight > 0:
            parts["pixel"] = cfg.pixel_weight * pixel_loss(output, target, cfg.pixel)
        if cfg.ssim_weight > 0:
            parts["ssim"] = cfg.ssim_weight * (1 - ssim(output, target))
        if cfg.colourfulness_weight > 0:
            parts["colour"] = cfg.colourfulness_weight * (colourfulness(output) - colourfulness(target)).abs().mean()
        if cfg.batch_colourfulness_weight > 0:
            parts["batch_colour"] = cfg.batch_colourfulness_weight * (
                colourfulness(as_one_image(output)) - colourfulness(as_one_image(target))).abs().sum()
        if cfg.chroma_bin_weight > 0:
            if chroma_logits is None:
                raise ValueError("loss.chroma_bin_weight needs a model that predicts chroma bins "
                                 "(model.arch colornet with chroma_bins > 0)")
            parts["chroma_bins"] = cfg.chroma_bin_weight * chroma_bin_loss(chroma_logits, target, cfg.chroma_bin_rebalance)
        total = torch.stack([p.float() for p in parts.values()]).sum()
        # One device sync for all the logged numbers instead of one per part.
        values = torch.stack([*(p.detach().float() for p in parts.values()), total.detach()]).tolist()
        return total, dict(zip([*parts, "total"], values, strict=True))


# The grid loss's window: small enough that a grid in one flat area counts, 4 repeats of a 4-pixel
# period per axis so that a photo's own detail mostly averages out.
GRID_WINDOW = 16


def subpixel_grid_loss(error: Tensor, period: int, window: int = GRID_WINDOW) -> Tensor:
    """The part of ``error`` (output - target) that repeats every ``period`` pixels, per ``window``
    square: in each window, the mean error at each of the period x period sub-pixel phases less
    their mean, squared and averaged. A sub-pixel upsampler's grid is phases that are brighter or
    darker than their neighbours throughout a flat area; its energy sits at the harmonics of the
    period (``training.metrics.periodic_energy``), which these phase means are."""
    if window % period:
        raise ValueError(f"the window ({window}) must be a multiple of the period ({period})")
    b, c, h, w = error.shape
    h, w = h // window * window, w // window * window
    if not h or not w:
        raise ValueError(f"a {error.shape[-1]}x{error.shape[-2]} image is smaller than the {window}-pixel window")
    reps = window // period
    phases = error[..., :h, :w].float().reshape(b, c, h // window, reps, period, w // window, reps, period).mean(dim=(3, 6))
    return (phases - phases.mean(dim=(3, 5), keepdim=True)).square().mean()


def binomial_blur(x: Tensor) -> Tensor:
    """``x`` filtered by [1 2 1] / 4 along each axis (reflected edges): zero response at the Nyquist
    frequency, 1/2 at a quarter of the sampling rate."""
    c = x.shape[1]
    k = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device) / 4
    kernel = (k[:, None] * k[None, :]).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel, groups=c)


def _same_shape(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
