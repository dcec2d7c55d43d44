"""Image quality metrics on 8-bit images, by the super-resolution field's protocol.

PSNR on the Y channel of ITU-R BT.601 YCbCr (16..235, as MATLAB's ``rgb2ycbcr``), with ``crop``
pixels removed from every border (the scale, for SR), computed in double precision.
"""

from __future__ import annotations

import numpy as np

# MATLAB rgb2ycbcr, for RGB in [0, 1]: Y = 16 + 65.481 R + 128.553 G + 24.966 B (on 0..255).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxW float64 luma on the 16..235 scale."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    return 16.0 + image.astype(np.float64) @ _Y_WEIGHTS


def _crop(image: np.ndarray, crop: int) -> np.ndarray:
    if crop < 0:
        raise ValueError("crop must be >= 0")
    if crop == 0:
        return image
    if min(image.shape[:2]) <= 2 * crop:
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} is too small for a {crop}-pixel border crop")
    return image[crop:-crop, crop:-crop]


def psnr(a: np.ndarray, b: np.ndarray, crop: int = 0, peak: float = 255.0) -> float:
    """PSNR in dB between two images of equal shape (inf when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    diff = _crop(a.astype(np.float64), crop) - _crop(b.astype(np.float64), crop)
    mse = float(np.mean(diff * diff))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(peak * peak / mse)


def psnr_y(output: np.ndarray, target: np.ndarray, crop: int = 0) -> float:
    """PSNR on the BT.601 Y channel of two 8-bit RGB images, border-cropped."""
    return psnr(rgb_to_y(output), rgb_to_y(target), crop)
