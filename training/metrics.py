"""Image quality metrics on 8-bit images, by the super-resolution field's protocol.

PSNR on the Y channel of ITU-R BT.601 YCbCr (16..235, as MATLAB's ``rgb2ycbcr``), with ``crop``
pixels removed from every border (the scale, for SR), computed in double precision. Images
stored with a single channel are scored on their gray values without the YCbCr conversion, as the
reference MATLAB code does (``if size(im, 3) > 1, im = rgb2ycbcr(im); ...``): Set14's bridge is
such an image, and converting it anyway lifts the Set14 bicubic means by ~0.09 dB. Y is rounded
to 8 bits first, because MATLAB's ``rgb2ycbcr`` returns uint8 for uint8 input; without it Set5 x2
comes out 0.02 dB above the published bicubic figure.
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


def rgb_to_y_uint8(image: np.ndarray) -> np.ndarray:
    """Y rounded half away from zero to integers, as MATLAB's rgb2ycbcr gives for uint8 input."""
    return np.floor(rgb_to_y(image) + 0.5)


def psnr_y(output: np.ndarray, target: np.ndarray, crop: int = 0) -> float:
    """PSNR on the 8-bit BT.601 Y channel of two 8-bit RGB images, border-cropped."""
    return psnr(rgb_to_y_uint8(output), rgb_to_y_uint8(target), crop)


def psnr_sr(output: np.ndarray, target: np.ndarray, crop: int, source_channels: int = 3) -> float:
    """The SR benchmark protocol: Y for colour sources, the gray values for single-channel ones."""
    if source_channels == 1:
        return psnr(output[..., 0], target[..., 0], crop)
    return psnr_y(output, target, crop)
