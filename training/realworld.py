"""Real-ESRGAN's second-order degradation (Wang et al. 2021): what a real low-resolution photo has
been through, drawn per sample, so that a super-resolution net trained on it removes noise,
compression blocks and ringing instead of sharpening them.

A clean target passes twice through blur (one of six kernel shapes or a sinc), a random resize
(area, bilinear or bicubic; up, down or kept), Gaussian or Poisson noise (colour or gray) and
JPEG; then it is resized to the low resolution with a sinc filter for ringing, before or after
the last JPEG. Every draw comes from the sample's seed (numpy's generator), so a seed gives the
same input byte for byte. The defaults are the published ones (Real-ESRGAN's
``train_realesrgan_x4plus.yml``); each is a setting of the task's ``degradation`` block.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from training.degradations import Degradation, check_sr_target, jpeg_roundtrip
from training.kernels import anisotropic_kernel, sinc_kernel

KERNELS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
Range = tuple[float, float]


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered(value: tuple) -> tuple:
    if value[0] > value[1]:
        raise ValueError(f"the range {list(value)} is reversed")
    return value


def _weights(value: dict[str, float], known: tuple[str, ...]) -> dict[str, float]:
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"unknown {', '.join(unknown)}; known: {', '.join(known)}")
    if any(p < 0 for p in value.values()) or sum(value.values()) <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    return value


class BlurSettings(Settings):
    """One blur: its probability, kernel sizes (the odd ones in ``sizes``), kernel shapes and their
    weights, and the shape parameters' ranges; ``sinc_prob`` of the time a sinc kernel instead."""

    prob: float = Field(1.0, ge=0, le=1)
    sizes: tuple[int, int] = (7, 21)
    kernels: dict[str, float] = {"iso": 0.45, "aniso": 0.25, "generalized_iso": 0.12, "generalized_aniso": 0.03,
                                 "plateau_iso": 0.12, "plateau_aniso": 0.03}
    sigma: Range = (0.2, 3.0)
    generalized_beta: Range = (0.5, 4.0)
    plateau_beta: Range = (1.0, 2.0)
    sinc_prob: float = Field(0.1, ge=0, le=1)

    _sizes_ordered = field_validator("sizes", "sigma", "generalized_beta", "plateau_beta")(_ordered)

    @field_validator("sizes")
    @classmethod
    def _odd(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] < 3 or value[0] % 2 == 0 or value[1] % 2 == 0:
            raise ValueError(f"kernel sizes must be odd and at least 3, got {list(value)}")
        return value

    @field_validator("kernels")
    @classmethod
    def _known_kernels(cls, value: dict[str, float]) -> dict[str, float]:
        return _weights(value, KERNELS)

    @field_validator("sigma")
    @classmethod
    def _positive(cls, value: Range) -> Range:
        if value[0] <= 0:
            raise ValueError("blur sigma must be positive")
        return value


class ResizeSettings(Settings):
    """A random resize: up, down or kept (weights), by a factor drawn from ``scale`` (up: from 1
    to its top; down: from its bottom to 1), with one of ``modes``."""

    probs: dict[Literal["up", "down", "keep"], float] = {"up": 0.2, "down": 0.7, "keep": 0.1}
    scale: Range = (0.15, 1.5)
    modes: tuple[Literal["area", "bilinear", "bicubic"], ...] = ("area", "bilinear", "bicubic")

    _scale_ordered = field_validator("scale")(_ordered)

    @field_validator("probs")
    @classmethod
    def _positive_sum(cls, value: dict[str, float]) -> dict[str, float]:
        return _weights(value, ("up", "down", "keep"))


class NoiseSettings(Settings):
    """Gaussian noise (``sigma`` on the 0..255 scale) with probability ``gaussian_prob``, else
    Poisson noise scaled by ``poisson_scale``; ``gray_prob`` of the time the same on every channel."""

    gaussian_prob: float = Field(0.5, ge=0, le=1)
    sigma: Range = (1.0, 30.0)
    poisson_scale: Range = (0.05, 3.0)
    gray_prob: float = Field(0.4, ge=0, le=1)

    _ranges_ordered = field_validator("sigma", "poisson_scale")(_ordered)


class Stage(Settings):
    """One order of degradation: blur, resize, noise, JPEG (quality drawn from ``jpeg``)."""

    blur: BlurSettings = BlurSettings()
    resize: ResizeSettings = ResizeSettings()
    noise: NoiseSettings = NoiseSettings()
    jpeg: tuple[int, int] = (30, 95)

    @field_validator("jpeg")
    @classmethod
    def _quality(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= value[0] <= value[1] <= 100:
            raise ValueError(f"JPEG qualities must be an ordered range within 1..100, got {list(value)}")
        return value


SECOND = Stage(blur=BlurSettings(prob=0.8, sigma=(0.2, 1.5)),
               resize=ResizeSettings(probs={"up": 0.3, "down": 0.4, "keep": 0.3}, scale=(0.3, 1.2)),
               noise=NoiseSettings(sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5)))


class SecondOrder(Degradation):
    """Real-ESRGAN's degradation to a ``scale`` times smaller input (``first``, ``second``: the two
    orders; ``final_sinc_prob``: how often the last resize rings)."""

    kind: ClassVar[str] = "second_order"
    scale: int = Field(4, ge=1, le=16)
    first: Stage = Stage()
    second: Stage = SECOND
    final_sinc_prob: float = Field(0.8, ge=0, le=1)

    @property
    def input_scale(self) -> int:
        return self.scale

    def __call__(self, target: np.ndarray, seed: int) -> np.ndarray:
        h, w = check_sr_target(target, self.scale)
        rng = np.random.default_rng(seed)
        low = (h // self.scale, w // self.scale)
        img = target.astype(np.float32) / 255.0
        img = blur(img, self.first.blur, rng)
        img = noise(resize(img, self.first.resize, (h, w), rng), self.first.noise, rng)
        img = jpeg(img, self.first.jpeg, rng)
        img = blur(img, self.second.blur, rng)
        img = noise(resize(img, self.second.resize, low, rng), self.second.noise, rng)
        if rng.random() < 0.5:  # the last resize and sinc before the last JPEG, or after it
            img = jpeg(self._to_low(img, low, rng), self.second.jpeg, rng)
        else:
            img = self._to_low(jpeg(img, self.second.jpeg, rng), low, rng)
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    def _to_low(self, img: np.ndarray, low: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        img = cv2.resize(img, (low[1], low[0]), interpolation=RESIZE_MODES[str(rng.choice(list(RESIZE_MODES)))])
        if rng.random() < self.final_sinc_prob:
            size = int(rng.choice(odd_sizes(self.first.blur.sizes)))
            img = filter2d(img, sinc_kernel(size, rng.uniform(math.pi / 3, math.pi)))
        return img


def odd_sizes(sizes: tuple[int, int]) -> list[int]:
    return list(range(sizes[0], sizes[1] + 1, 2))


def draw_kernel(settings: BlurSettings, rng: np.random.Generator) -> np.ndarray:
    """One kernel as Real-ESRGAN draws it: a size, then a sinc or one of the weighted shapes."""
    size = int(rng.choice(odd_sizes(settings.sizes)))
    if rng.random() < settings.sinc_prob:
        # A wide cut-off only for small kernels: a low one truncated to 7 px would not ring.
        return sinc_kernel(size, rng.uniform(math.pi / 3 if size < 13 else math.pi / 5, math.pi))
    names, weights = zip(*settings.kernels.items())
    name = names[rng.choice(len(names), p=np.asarray(weights) / sum(weights))]
    shape = name.split("_")[0] if "_" in name else "gaussian"
    sigma_x = rng.uniform(*settings.sigma)
    if name.endswith("aniso"):
        sigma_y, theta = rng.uniform(*settings.sigma), rng.uniform(-math.pi, math.pi)
    else:
        sigma_y, theta = sigma_x, 0.0
    beta = 1.0
    if shape != "gaussian":  # half the time below 1 (heavier tails), half above
        low, high = settings.generalized_beta if shape == "generalized" else settings.plateau_beta
        beta = rng.uniform(low, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, high)
    return anisotropic_kernel(size, sigma_x, sigma_y, theta, shape, beta)


def filter2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``img`` filtered by ``kernel`` with reflected borders (the kernels are point-symmetric, so
    OpenCV's correlation is the convolution)."""
    out = cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    return out if out.ndim == 3 else out[..., None]


def blur(img: np.ndarray, settings: BlurSettings, rng: np.random.Generator) -> np.ndarray:
    return filter2d(img, draw_kernel(settings, rng)) if rng.random() < settings.prob else img


def resize(img: np.ndarray, settings: ResizeSettings, base: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Resized to ``base`` (height, width) times a drawn factor, by a drawn mode."""
    names, weights = zip(*settings.probs.items())
    way = names[rng.choice(len(names), p=np.asarray(weights) / sum(weights))]
    low, high = settings.scale
    factor = rng.uniform(1.0, max(high, 1.0)) if way == "up" else rng.uniform(min(low, 1.0), 1.0) if way == "down" else 1.0
    mode = RESIZE_MODES[str(rng.choice(list(settings.modes)))]
    size = (max(1, int(base[1] * factor)), max(1, int(base[0] * factor)))
    return cv2.resize(img, size, interpolation=mode) if size != (img.shape[1], img.shape[0]) else img


def noise(img: np.ndarray, settings: NoiseSettings, rng: np.random.Generator) -> np.ndarray:
    gray = rng.random() < settings.gray_prob
    if rng.random() < settings.gaussian_prob:
        shape = (*img.shape[:2], 1) if gray else img.shape
        return img + rng.normal(0.0, rng.uniform(*settings.sigma) / 255.0, shape).astype(np.float32)
    # Poisson: photon counts of the image at as many levels as it has distinct 8-bit values
    # (rounded up to a power of two), as Real-ESRGAN draws them, scaled.
    scale = rng.uniform(*settings.poisson_scale)
    base = np.clip(np.rint(img * 255.0), 0, 255) / 255.0
    if gray:
        base = base @ np.array([0.299, 0.587, 0.114])[:, None]
    levels = 2.0 ** math.ceil(math.log2(max(len(np.unique(np.rint(base * 255.0))), 2)))
    shot = rng.poisson(base * levels) / levels - base
    return img + (scale * shot).astype(np.float32)


def jpeg(img: np.ndarray, qualities: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A JPEG round trip at a quality drawn from ``qualities`` (8-bit, as a saved photo is)."""
    quality = int(rng.integers(qualities[0], qualities[1] + 1))
    rgb = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return jpeg_roundtrip(rgb, quality).astype(np.float32) / 255.0
