"""PSNR and SSIM on the BT.601 Y channel with a border crop: values derived by hand, and the
published bicubic tables reproduced on the real Set5 and Set14."""

import math

import numpy as np
import pytest

from training.metrics import psnr, psnr_y, rgb_to_y
from training import metrics as m
from tests.shared_data import DATASETS

pytestmark = pytest.mark.unit


def test_y_channel_range_is_16_to_235():
    white = np.full((1, 1, 3), 255, np.uint8)
    black = np.zeros((1, 1, 3), np.uint8)
    assert rgb_to_y(white)[0, 0] == pytest.approx(16 + 65.481 + 128.553 + 24.966)  # 235
    assert rgb_to_y(black)[0, 0] == 16.0
    red = np.array([[[255, 0, 0]]], np.uint8)
    assert rgb_to_y(red)[0, 0] == pytest.approx(16 + 65.481)


def test_psnr_of_a_known_error():
    a = np.zeros((4, 4))
    b = np.full((4, 4), 10.0)  # MSE 100
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(a, a) == math.inf


def test_border_crop_ignores_the_border():
    a = np.zeros((8, 8))
    b = a.copy()
    b[0, :] = 200  # only the border differs
    assert psnr(a, b, crop=1) == math.inf
    assert psnr(a, b, crop=0) < 30
    with pytest.raises(ValueError, match="too small"):
        psnr(a, b, crop=4)


def test_psnr_y_sees_only_luma_weighted_8bit_error():
    target = np.full((6, 6, 3), 100, np.uint8)
    out = target.copy()
    out[..., 2] += 10
    # Y(target) = 16 + 100 * 219 / 255 = 101.88 -> 102; blue +10 adds 10 * 24.966 / 255 = 0.98,
    # so Y(out) = 102.86 -> 103: a difference of exactly 1 on every pixel.
    assert psnr_y(out, target) == pytest.approx(10 * math.log10(255**2 / 1.0))
    out[..., 2] = 103  # +3 on blue: Y 102.17 -> 102, the same 8-bit Y as the target
    assert psnr_y(out, target) == math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_y(out[:5], target)


# Published bicubic baselines (VDSR table for x2-x4, LapSRN for x8): PSNR-Y in dB, SSIM-Y.
PUBLISHED = {("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682), ("Set5", 4): (28.42, 0.8104),
             ("Set5", 8): (24.40, 0.6580), ("Set14", 2): (30.24, 0.8688), ("Set14", 3): (27.55, 0.7742),
             ("Set14", 4): (26.00, 0.7027), ("Set14", 8): (23.10, 0.5660)}


@pytest.mark.parametrize(("name", "scale"), sorted(PUBLISHED))
def test_bicubic_baseline_reproduces_the_published_tables(name, scale):
    from PIL import Image

    from training.imresize import imresize_uint8
    from training.metrics import psnr_sr, ssim_y
    from training.pairs import mod_crop

    folder = DATASETS / name / "HR"
    psnrs, ssims = [], []
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as img:
            channels = 1 if img.mode == "L" else 3
            hr = mod_crop(np.asarray(img.convert("RGB")), scale)
        upscaled = imresize_uint8(imresize_uint8(hr, scale=1 / scale), scale=scale)
        psnrs.append(psnr_sr(upscaled, hr, crop=scale, source_channels=channels))
        ssims.append(ssim_y(upscaled, hr, crop=scale))
    assert len(psnrs) == {"Set5": 5, "Set14": 14}[name]
    want_psnr, want_ssim = PUBLISHED[(name, scale)]
    assert abs(np.mean(psnrs) - want_psnr) <= 0.02
    assert abs(np.mean(ssims) - want_ssim) <= 0.002


def test_ssim_of_identical_images_is_one_and_falls_with_noise():
    from training.metrics import ssim

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 40)).astype(np.float64)
    assert ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    noisier = np.clip(a + rng.normal(0, 60, a.shape), 0, 255)
    assert 0 < ssim(noisier, a) < ssim(noisy, a) < 1


@pytest.mark.parametrize("shape", [(11, 11), (37, 64), (64, 23)])
def test_ssim_window_is_the_valid_11x11_gaussian_sum(shape):
    # the filter behind SSIM (OpenCV) against its definition: the taps times the covered pixels
    x = np.random.default_rng(sum(shape)).random(shape) * 255
    taps = m._SSIM_TAPS
    want = np.array([[np.sum(np.outer(taps, taps) * x[i : i + 11, j : j + 11]) for j in range(shape[1] - 10)]
                     for i in range(shape[0] - 10)])
    got = m._gaussian_valid(x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-9


def test_ssim_of_flat_images_follows_the_luminance_term():
    from training.metrics import ssim

    # Constant images: variances and covariance are 0, so SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    a, b = np.full((16, 16), 100.0), np.full((16, 16), 120.0)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1))
    with pytest.raises(ValueError, match="11x11"):
        ssim(a[:10], b[:10])


def test_colourfulness_is_zero_for_gray_and_known_for_a_two_colour_image():
    from training.metrics import colourfulness

    gray = np.full((8, 8, 3), 90, np.uint8)
    assert colourfulness(gray) == 0.0
    img = np.zeros((2, 2, 3), np.uint8)
    img[0] = (255, 0, 0)  # half red, half black: rg = 255/0, yb = 127.5/0
    rg_std, yb_std, rg_mean, yb_mean = 127.5, 63.75, 127.5, 63.75
    expected = math.hypot(rg_std, yb_std) + 0.3 * math.hypot(rg_mean, yb_mean)
    assert colourfulness(img) == pytest.approx(expected)


def test_periodic_energy_finds_a_grid_at_the_upsamplers_period():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128]
    photo = np.clip(128 + 60 * np.sin(x / 9) + 40 * np.cos(y / 13) + rng.normal(0, 3, (96, 128)), 0, 255)
    target = np.repeat(photo[..., None], 3, axis=2).astype(np.uint8)
    assert m.periodic_energy(target, target, 4) == 0.0
    grid = target.astype(float)
    grid[::4, ::4] += 10  # a faint dot every 4 pixels: the perceptual SR sheets' texture
    assert m.periodic_energy(np.clip(grid, 0, 255).astype(np.uint8), target, 4, crop=4) > 6
    # a texture of another period, or a plain blur, adds no energy at the harmonics of 4
    blurred = (target.astype(float) + np.roll(target, 1, axis=1) + np.roll(target, 1, axis=0)) / 3
    assert m.periodic_energy(blurred.round().astype(np.uint8), target, 4) < 0.5
    with pytest.raises(ValueError, match="period"):
        m.periodic_energy(target, target, 1)


def test_grid_peaks_counts_a_grid_and_not_sharpness():
    """A faint dot every 4 pixels stands out of its neighbourhood; sharpening a photo raises
    periodic_energy (the harmonics' energy) but not the peaks, nor does a blur make one."""
    from PIL import Image
    import cv2

    photo = np.asarray(Image.open(DATASETS / "Set14" / "HR" / "comic.png").convert("RGB"))
    assert m.grid_peaks(photo, photo, 4) == 0.0
    grid = photo.astype(float)
    grid[::4, ::4] += 10
    assert m.grid_peaks(np.clip(grid, 0, 255).astype(np.uint8), photo, 4, crop=4) > 3
    soft = cv2.GaussianBlur(photo.astype(float), (0, 0), 1.0)
    sharp = np.clip(photo + (photo - soft), 0, 255).astype(np.uint8)  # unsharp mask
    assert m.periodic_energy(sharp, photo, 4) > 2
    assert abs(m.grid_peaks(sharp, photo, 4)) < 1
    with pytest.raises(ValueError, match="period"):
        m.grid_peaks(photo, photo, 1)
    with pytest.raises(ValueError, match="too small"):
        m.grid_peaks(photo[:8, :8], photo[:8, :8], 4)
