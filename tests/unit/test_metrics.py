"""PSNR on the BT.601 Y channel with a border crop: values derived by hand."""

import math

import numpy as np
import pytest

from training.metrics import psnr, psnr_y, rgb_to_y

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


# Published bicubic baselines (SRCNN / VDSR tables): PSNR-Y in dB.
PUBLISHED = {("Set5", 4): 28.42, ("Set5", 8): 24.40, ("Set14", 2): 30.24, ("Set14", 3): 27.55,
             ("Set14", 4): 26.00, ("Set14", 8): 23.10, ("Set5", 2): 33.66, ("Set5", 3): 30.39}


@pytest.mark.parametrize(("name", "scale"), sorted(PUBLISHED))
def test_bicubic_baseline_reproduces_the_published_tables(name, scale):
    from pathlib import Path

    from PIL import Image

    from training.imresize import imresize_uint8
    from training.metrics import psnr_sr
    from training.pairs import mod_crop

    folder = Path(__file__).resolve().parents[3] / "shared" / "datasets" / name / "HR"
    scores = []
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as img:
            channels = 1 if img.mode == "L" else 3
            hr = mod_crop(np.asarray(img.convert("RGB")), scale)
        upscaled = imresize_uint8(imresize_uint8(hr, scale=1 / scale), scale=scale)
        scores.append(psnr_sr(upscaled, hr, crop=scale, source_channels=channels))
    assert len(scores) == {"Set5": 5, "Set14": 14}[name]
    assert abs(np.mean(scores) - PUBLISHED[(name, scale)]) <= 0.02
