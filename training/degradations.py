"""Degradations: how a task makes its input from a clean target image.

Each degradation is a small typed settings object (validated from ``params.yaml``) that is also
the pure function ``degradation(target_uint8_hwc, seed) -> input_uint8``. The same seed gives the
same input, so shards are reproducible byte for byte.

Super-resolution uses our MATLAB-compatible ``imresize`` because every published SR table is
computed with it; noise, blur, JPEG and gray use albumentations (applied to the input only).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import albumentations as A
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from training.imresize import imresize_uint8


class Degradation(BaseModel):
    """Base class: settings plus ``__call__(target, seed) -> input``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[str] = "degradation"
    _pipeline: A.Compose | None = PrivateAttr(default=None)

    @property
    def input_scale(self) -> int:
        """How much smaller the input is than the target (1 for same-size tasks)."""
        return 1

    @property
    def input_channels(self) -> int:
        """Channels of the input the network sees (colorization may feed one gray channel)."""
        return 3

    def describe(self) -> dict[str, Any]:
        """What went into the input, for each sample's meta.json."""
        return {"kind": self.kind, **self.model_dump()}

    def __call__(self, target: np.ndarray, seed: int) -> np.ndarray:
        _check_uint8_rgb(target)
        if self._pipeline is None:
            self._pipeline = A.Compose(self.transforms())
        self._pipeline.set_random_seed(seed)
        return self._pipeline(image=target)["image"]

    def transforms(self) -> list[A.BasicTransform]:
        raise NotImplementedError


class BicubicDownscale(Degradation):
    """SR input: MATLAB bicubic downscale by ``scale``, rounded to 8 bits (the benchmark protocol).

    ``blur_sigma`` adds the paper's variant: a Gaussian blur before the downscale.
    """

    kind: ClassVar[str] = "bicubic_downscale"
    scale: int = Field(4, ge=1, le=16)
    blur_sigma: float | None = Field(None, gt=0)

    @property
    def input_scale(self) -> int:
        return self.scale

    def __call__(self, target: np.ndarray, seed: int) -> np.ndarray:
        _check_uint8_rgb(target)
        h, w = target.shape[:2]
        if h % self.scale or w % self.scale:
            raise ValueError(f"target {w}x{h} is not a multiple of the scale {self.scale}: mod-crop it first")
        if self.blur_sigma is not None:
            blur = A.GaussianBlur(blur_limit=0, sigma_limit=(self.blur_sigma, self.blur_sigma), p=1.0)
            target = blur(image=target)["image"]
        return imresize_uint8(target, output_shape=(h // self.scale, w // self.scale))


class GaussianNoise(Degradation):
    """Additive white Gaussian noise, ``sigma`` on the 0..255 scale (25 is the usual benchmark).

    With ``sigma_max`` each sample draws its sigma uniformly from [sigma, sigma_max] (blind denoising).
    The noisy input is clipped and rounded to 8 bits, as a real noisy photo would be.
    """

    kind: ClassVar[str] = "gaussian_noise"
    sigma: float = Field(25.0, gt=0, le=255)
    sigma_max: float | None = Field(None, gt=0, le=255)

    @model_validator(mode="after")
    def _range(self) -> GaussianNoise:
        if self.sigma_max is not None and self.sigma_max < self.sigma:
            raise ValueError(f"sigma_max ({self.sigma_max}) must be >= sigma ({self.sigma})")
        return self

    def transforms(self) -> list[A.BasicTransform]:
        hi = self.sigma if self.sigma_max is None else self.sigma_max
        return [A.GaussNoise(std_range=(self.sigma / 255.0, hi / 255.0), mean_range=(0.0, 0.0), per_channel=True, p=1.0)]


class GaussianBlur(Degradation):
    """Gaussian blur with kernel standard deviation ``sigma`` (pixels); kernel size follows sigma."""

    kind: ClassVar[str] = "gaussian_blur"
    sigma: float = Field(2.0, gt=0, le=20)

    def transforms(self) -> list[A.BasicTransform]:
        return [A.GaussianBlur(blur_limit=0, sigma_limit=(self.sigma, self.sigma), p=1.0)]


class JpegCompression(Degradation):
    """JPEG round trip at ``quality`` (10 is the usual artefact-removal benchmark)."""

    kind: ClassVar[str] = "jpeg"
    quality: int = Field(10, ge=1, le=100)

    def transforms(self) -> list[A.BasicTransform]:
        return [A.ImageCompression(quality_range=(self.quality, self.quality), compression_type="jpeg", p=1.0)]


class Grayscale(Degradation):
    """Gray input for colorization: ITU-R BT.601 luma, as one channel or three equal channels."""

    kind: ClassVar[str] = "grayscale"
    channels: Literal[1, 3] = 3

    @property
    def input_channels(self) -> int:
        return self.channels

    def transforms(self) -> list[A.BasicTransform]:
        return [A.ToGray(num_output_channels=self.channels, method="weighted_average", p=1.0)]


class Identity(Degradation):
    """The input is the clean image itself (fast style transfer: content in, stylised out)."""

    kind: ClassVar[str] = "identity"

    def __call__(self, target: np.ndarray, seed: int) -> np.ndarray:
        _check_uint8_rgb(target)
        return target.copy()


def _check_uint8_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
