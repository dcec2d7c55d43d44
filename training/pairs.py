"""Paired samples: a clean target and the degraded input made from it.

Geometry (crop, flip, rot90) is applied to the clean image first, then the degradation makes
the input from the augmented target, so input and target always see the same geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import albumentations as A
import numpy as np

from training.degradations import Degradation


@dataclass(frozen=True)
class Pair:
    input: np.ndarray
    target: np.ndarray
    meta: dict[str, Any]


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop from the top-left to a multiple of ``scale`` (the SR benchmark convention)."""
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def sample_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from parts (hash() is salted per process, so not usable)."""
    return int(np.random.SeedSequence([_to_int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _to_int(part: int | str) -> int:
    if isinstance(part, int):
        return part
    return int.from_bytes(part.encode("utf-8")[:32].ljust(32, b"\0"), "little") ^ len(part)


def train_pair(image: np.ndarray, degradation: Degradation, patch_size: int, seed: int) -> Pair:
    """A random ``patch_size`` square of ``image`` with a random flip and rot90, and its input."""
    h, w = image.shape[:2]
    if h < patch_size or w < patch_size:
        raise ValueError(f"image {w}x{h} is smaller than the patch {patch_size}")
    geometry = A.Compose(
        [A.RandomCrop(patch_size, patch_size), A.HorizontalFlip(p=0.5), A.RandomRotate90(p=1.0)],
        seed=seed,
        save_applied_params=True,
    )
    out = geometry(image=image)
    target = np.ascontiguousarray(out["image"])
    applied = {name: params for name, params in out["applied_transforms"]}
    meta = {
        "crop_box": list(applied["RandomCrop"]["crop_coords"]),  # x0, y0, x1, y1 in the source image
        "hflip": "HorizontalFlip" in applied,
        "rot90": int(applied["RandomRotate90"]["factor"]),
        "seed": seed,
        "degradation": degradation.describe(),
    }
    return Pair(degradation(target, seed), target, meta)


def val_pair(image: np.ndarray, degradation: Degradation, seed: int) -> Pair:
    """The whole image, mod-cropped to the task's scale, and its input."""
    target = np.ascontiguousarray(mod_crop(image, degradation.input_scale))
    h, w = target.shape[:2]
    meta = {"crop_box": [0, 0, w, h], "hflip": False, "rot90": 0, "seed": seed, "degradation": degradation.describe()}
    return Pair(degradation(target, seed), target, meta)
