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

import cv2
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


# SSIM as in Wang et al.'s reference ssim_index.m, which the SR tables use: an 11x11 Gaussian
# window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, 'valid' filtering, the mean of the map.
# Unlike PSNR, SR SSIM is taken on Y for single-channel sources too: that is the one choice that
# reproduces all eight published bicubic SSIM figures within 0.002 (scoring Set14's gray bridge
# on its gray values fits the x2-x4 table to 0.0004 but misses Set14 x8 by 0.0026; the x8
# figures come from a later paper's evaluation code).
_SSIM_TAPS = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
_SSIM_TAPS /= _SSIM_TAPS.sum()


def _gaussian_valid(x: np.ndarray) -> np.ndarray:
    """Separable 11x11 Gaussian filter of a 2-D float64 array, keeping only fully covered pixels.
    OpenCV's separable filter in float64: the sums of shifted copies in numpy to 1e-13, 6x faster
    (SSIM was a sixth of a restoration task's evaluate stage)."""
    r = len(_SSIM_TAPS) // 2
    full = cv2.sepFilter2D(x, cv2.CV_64F, _SSIM_TAPS, _SSIM_TAPS, borderType=cv2.BORDER_CONSTANT)
    return full[r : x.shape[0] - r, r : x.shape[1] - r]


def ssim(a: np.ndarray, b: np.ndarray, crop: int = 0, peak: float = 255.0) -> float:
    """Mean SSIM of two single-channel images (HxW), or the mean over channels of HxWxC ones."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    a, b = _crop(a.astype(np.float64), crop), _crop(b.astype(np.float64), crop)
    if a.ndim == 3:
        return float(np.mean([ssim(a[..., c], b[..., c], 0, peak) for c in range(a.shape[2])]))
    if min(a.shape) < len(_SSIM_TAPS):
        raise ValueError(f"image {a.shape[1]}x{a.shape[0]} is smaller than the 11x11 SSIM window")
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = _gaussian_valid(a), _gaussian_valid(b)
    var_a = _gaussian_valid(a * a) - mu_a**2
    var_b = _gaussian_valid(b * b) - mu_b**2
    cov = _gaussian_valid(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


def ssim_y(output: np.ndarray, target: np.ndarray, crop: int = 0) -> float:
    """SSIM on the 8-bit BT.601 Y channel of two 8-bit RGB images, border-cropped."""
    return ssim(rgb_to_y_uint8(output), rgb_to_y_uint8(target), crop)


def colourfulness(image: np.ndarray) -> float:
    """Hasler and Suesstrunk's (2003) colourfulness of an 8-bit RGB image: 0 for gray images,
    about 33 for 'moderately', 59 for 'quite' and 82 for 'highly colourful' ones."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    r, g, b = (image[..., c].astype(np.float64) for c in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def periodic_energy(output: np.ndarray, target: np.ndarray, period: int, crop: int = 0) -> float:
    """How much more energy the output's luma has than the target's at the harmonics of ``period``
    pixels, in dB (0: as much; above 0: a grid pattern the target lacks). A sub-pixel or strided
    upsampler by ``period`` can print a periodic texture in flat areas (the perceptual SR sheets'
    grid); it shows as peaks at multiples of 1/period of the sampling rate in both axes, where a
    photo has little energy. Both images are cropped to a multiple of ``period`` and mean-removed."""
    energies = []
    for power in _luma_power_spectra(output, target, period, crop, min_size=period):
        h, w = power.shape
        harmonics = power[:: h // period, :: w // period]  # (k h/period, l w/period), k, l < period
        energies.append(harmonics.sum() - harmonics[0, 0])
    return float(10 * np.log10((energies[0] + 1e-6) / (energies[1] + 1e-6)))


def grid_peaks(output: np.ndarray, target: np.ndarray, period: int, crop: int = 0, radius: int = 6) -> float:
    """How much more the output's luma spectrum peaks at the harmonics of ``period`` than the
    target's does, in dB: at each harmonic, the energy of its 3 x 3 bins over the mean energy of
    the other bins within ``radius`` of it, times 9 (summed over the harmonics). A grid repeats
    over the whole image, so its energy sits in those few bins; detail and sharpness are broadband
    and lift the neighbourhood with the peak, where ``periodic_energy`` counts them as grid."""
    ring = np.ones((2 * radius + 1, 2 * radius + 1), bool)
    ring[radius - 1:radius + 2, radius - 1:radius + 2] = False
    prominence = []
    for power in _luma_power_spectra(output, target, period, crop, min_size=2 * radius + 1):
        h, w = power.shape
        peak = around = 0.0
        for k in range(period):
            for l in range(period):
                if k or l:
                    rows = np.arange(k * h // period - radius, k * h // period + radius + 1) % h
                    cols = np.arange(l * w // period - radius, l * w // period + radius + 1) % w
                    window = power[np.ix_(rows, cols)]
                    peak += window[~ring].sum()
                    around += window[ring].mean() * 9
        prominence.append(10 * np.log10((peak + 1e-6) / (around + 1e-6)))
    return float(prominence[0] - prominence[1])


def _luma_power_spectra(output: np.ndarray, target: np.ndarray, period: int, crop: int, min_size: int):
    """The power spectra of both images' mean-removed luma, cropped by ``crop`` and then to a
    multiple of ``period`` (so that its harmonics fall on bins)."""
    if period < 2:
        raise ValueError(f"period must be at least 2 pixels, got {period}")
    a, b = _crop(rgb_to_y(output), crop), _crop(rgb_to_y(target), crop)
    if a.shape != b.shape:
        raise ValueError(f"output {a.shape} and target {b.shape} differ in size")
    h, w = a.shape[0] // period * period, a.shape[1] // period * period
    if min(h, w) < max(min_size, 1):
        raise ValueError(f"image {a.shape[1]}x{a.shape[0]} is too small for period {period} and {min_size} bins")
    return [np.abs(np.fft.fft2(y[:h, :w] - y[:h, :w].mean())) ** 2 for y in (a, b)]
