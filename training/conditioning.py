"""The level channel of a conditioned network: how an input says how degraded it is.

A task whose degradation sets ``condition: true`` trains a network that takes a fourth input
channel holding the degradation's level at every pixel (FFDNet's noise level map, FBCNN's quality
factor), so that one model restores every level without having to guess which one it has. The
model file records the level's key, its code scale and the trained range (``LevelSpec``); at
inference the level comes from the user, or, for JPEG repair, from the file itself: a JPEG
carries its quantisation tables, and libjpeg's quality scaling maps them back to the quality.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image


class NoLevel(ValueError):
    """A conditioned model was given an image without its level."""


@dataclass(frozen=True)
class LevelSpec:
    """What a conditioned model file says about its level channel."""

    kind: str  # the degradation's kind: "jpeg", "gaussian_noise", "gaussian_blur"
    key: str  # the level's name in the degradation: "quality", "sigma"
    scale: float  # code = round(level x scale)
    low: float  # the range the model was trained on
    high: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LevelSpec:
        return cls(**data)

    def code(self, level: float) -> int:
        return level_code(level, self.scale, self.key)

    @property
    def from_jpeg(self) -> bool:
        """The level can be read from a JPEG file's quantisation tables."""
        return self.kind == "jpeg"


def level_code(level: float, scale: float, key: str = "level") -> int:
    """A level as the 8-bit value of the level channel: round(level x scale). A level above the
    trained range (an evaluation at sigma 50 of a model trained to 25) is given the top code,
    the nearest the model knows; a negative level is an error."""
    if float(level) < 0:
        raise ValueError(f"{key} {float(level):g} is negative")
    return min(255, round(float(level) * scale))


def with_level(image: np.ndarray, code: int) -> np.ndarray:
    """An HxWx3 uint8 image and its level code as the HxWx4 input of a conditioned network."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    plane = np.full(image.shape[:2] + (1,), code, dtype=np.uint8)
    return np.concatenate([image, plane], axis=2)


def rgb_of(image: np.ndarray) -> np.ndarray:
    """The picture of an input, without a conditioned input's level channel."""
    return image[..., :3] if image.ndim == 3 and image.shape[2] == 4 else image


@lru_cache(maxsize=1)
def _ijg_luma_tables() -> np.ndarray:
    """100 x 64: the luma quantisation table libjpeg writes at each quality 1..100."""
    tables = []
    for quality in range(1, 101):
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="JPEG", quality=quality)
        with Image.open(buf) as img:
            tables.append(img.quantization[0])
    return np.asarray(tables, dtype=np.int64)


def jpeg_quality(data: bytes) -> int | None:
    """The libjpeg quality (1..100) whose luma table is nearest the file's, or None for a file that
    is not a JPEG. Exact for files libjpeg, Pillow, OpenCV or ImageMagick wrote at a quality;
    a camera's own tables give the nearest quality."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG" or not getattr(img, "quantization", None):
                return None
            luma = np.asarray(img.quantization[0], dtype=np.int64)
    except Exception:  # noqa: BLE001 - not an image Pillow reads: not a JPEG either
        return None
    if luma.shape != (64,):
        return None
    return int(np.abs(_ijg_luma_tables() - luma).sum(axis=1).argmin()) + 1


def conditioned_input(image: np.ndarray, spec: LevelSpec, level: float | None = None,
                      data: bytes | None = None) -> tuple[np.ndarray, float, str]:
    """(the HxWx4 input, the level, where it came from) for a conditioned model: ``level`` if
    given, else (JPEG repair) the quality of the encoded file ``data``. No level: ``NoLevel``,
    saying how to give one."""
    source = "given"
    if level is None and spec.from_jpeg and data is not None:
        level, source = jpeg_quality(data), "read from the file's quantisation tables"
    if level is None:
        how = "a JPEG file carries it; for other files " if spec.from_jpeg else ""
        raise NoLevel(f"this model is conditioned on the {spec.key} of its input ({spec.low:g} to {spec.high:g} "
                         f"in training): {how}give it as the level (percept apply --level)")
    return with_level(image, spec.code(level)), float(level), source
