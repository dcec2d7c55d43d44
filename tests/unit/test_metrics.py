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


def test_psnr_y_sees_only_luma_weighted_error():
    target = np.full((6, 6, 3), 100, np.uint8)
    out = target.copy()
    out[..., 2] += 10  # blue +10 -> Y +10 * 24.966 / 255
    dy = 10 * 24.966 / 255
    assert psnr_y(out, target) == pytest.approx(10 * math.log10(255**2 / dy**2))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr_y(out[:5], target)
