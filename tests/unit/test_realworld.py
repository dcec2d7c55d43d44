"""Real-ESRGAN's second-order degradation and its kernels: shapes, sums, statistics, seeds."""

import math

import numpy as np
import pytest
from pydantic import ValidationError

from training import kernels, realworld
from training.imresize import imresize_uint8
from training.realworld import BlurSettings, NoiseSettings, SecondOrder

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128].astype(np.float64)
    base = np.stack([128 + 90 * np.sin(x / 9.0), 1.5 * y + 0.5 * x, 200 - x], axis=2) + rng.normal(0, 4, (96, 128, 3))
    return np.clip(base, 0, 255).round().astype(np.uint8)


@pytest.mark.parametrize("shape, beta", [("gaussian", 1.0), ("generalized", 0.6), ("generalized", 3.0), ("plateau", 1.5)])
def test_kernels_sum_to_one_and_are_point_symmetric(shape, beta):
    k = kernels.anisotropic_kernel(15, 2.5, 0.8, theta=0.7, shape=shape, beta=beta)
    assert k.shape == (15, 15) and k.dtype == np.float32
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(k, k[::-1, ::-1], atol=1e-7)  # so OpenCV's correlation is the convolution
    assert k[7, 7] == k.max()


def test_isotropic_gaussian_is_the_outer_product_of_1d_gaussians():
    k = kernels.anisotropic_kernel(11, 1.7, 1.7)
    g = np.exp(-0.5 * (np.arange(11) - 5) ** 2 / 1.7**2)
    assert np.allclose(k, np.outer(g, g) / np.outer(g, g).sum(), atol=1e-7)


def test_anisotropic_kernel_is_long_along_its_angle():
    flat = kernels.anisotropic_kernel(21, 4.0, 0.5, theta=0.0)  # long along x (columns)
    assert flat[10, 10 + 6] > 100 * flat[10 + 6, 10]
    turned = kernels.anisotropic_kernel(21, 4.0, 0.5, theta=math.pi / 2)
    assert np.allclose(turned, flat.T, atol=1e-7)


def test_sinc_kernel_rings():
    k = kernels.sinc_kernel(21, math.pi / 3)
    assert k.sum() == pytest.approx(1.0, abs=1e-5) and k.min() < 0  # negative lobes: overshoot at edges
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1])


def test_bad_kernel_arguments_are_refused():
    with pytest.raises(ValueError, match="odd"):
        kernels.anisotropic_kernel(8, 1.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        kernels.anisotropic_kernel(7, 1.0, 1.0, shape="box")
    with pytest.raises(ValueError, match="cut-off"):
        kernels.sinc_kernel(7, 4.0)


def test_drawn_kernels_follow_their_settings():
    sizes, sincs = set(), 0
    for seed in range(300):
        k = realworld.draw_kernel(BlurSettings(), np.random.default_rng(seed))
        assert k.sum() == pytest.approx(1.0, abs=1e-4)
        sizes.add(k.shape[0])
        sincs += bool(k.min() < -1e-6)
    assert sizes == set(range(7, 22, 2))
    assert 10 <= sincs <= 60  # sinc_prob 0.1 of 300 draws
    only_iso = BlurSettings(kernels={"iso": 1.0}, sinc_prob=0.0, sizes=(9, 9))
    k = realworld.draw_kernel(only_iso, np.random.default_rng(1))
    assert k.shape == (9, 9) and np.allclose(k, k.T)


def test_gaussian_noise_has_its_sigma_and_gray_noise_is_shared():
    flat = np.full((200, 200, 3), 0.5, np.float32)
    colour = realworld.noise(flat, NoiseSettings(gaussian_prob=1.0, sigma=(20.0, 20.0), gray_prob=0.0), np.random.default_rng(0))
    assert (colour - 0.5).std() * 255 == pytest.approx(20.0, rel=0.03)
    assert not np.allclose(colour[..., 0], colour[..., 1])
    gray = realworld.noise(flat, NoiseSettings(gaussian_prob=1.0, sigma=(20.0, 20.0), gray_prob=1.0), np.random.default_rng(0))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_poisson_noise_grows_with_brightness():
    ramp = np.repeat(np.linspace(0.05, 0.95, 256, dtype=np.float32)[None, :, None], 256, axis=0).repeat(3, axis=2)
    out = realworld.noise(ramp, NoiseSettings(gaussian_prob=0.0, poisson_scale=(1.0, 1.0), gray_prob=0.0), np.random.default_rng(0))
    dark, bright = (out - ramp)[:, :40].std(), (out - ramp)[:, -40:].std()
    assert bright > 2.5 * dark  # shot noise: std grows with the square root of the signal


def test_jpeg_stage_reads_back_a_quality_in_its_range(photo):
    from tests.unit.test_degradations import jpeg_roundtrip

    img = photo.astype(np.float32) / 255.0
    for seed in range(5):
        out = np.rint(realworld.jpeg(img, (40, 45), np.random.default_rng(seed)) * 255).astype(np.uint8)
        assert any(np.array_equal(out, jpeg_roundtrip(photo, q)) for q in range(40, 46))


def test_second_order_input_is_small_seeded_and_degraded(photo):
    d = SecondOrder()
    outs = [d(photo, seed=s) for s in range(6)]
    assert all(o.shape == (24, 32, 3) and o.dtype == np.uint8 for o in outs)
    assert np.array_equal(d(photo, seed=3), outs[3])
    assert len({o.tobytes() for o in outs}) == 6
    # Every draw is further from the clean bicubic input than a plain re-rounding would be.
    clean = imresize_uint8(photo, output_shape=(24, 32)).astype(float)
    assert all(np.abs(o.astype(float) - clean).mean() > 1.0 for o in outs)


def test_second_order_can_be_turned_into_plain_bicubic_like_downscaling(photo):
    # With every random step switched off only the final resize (a random mode) is left.
    calm = realworld.Stage(blur=BlurSettings(prob=0.0), resize=realworld.ResizeSettings(probs={"keep": 1.0}),
                           noise=NoiseSettings(gaussian_prob=1.0, sigma=(0.0, 0.0)), jpeg=(100, 100))
    d = SecondOrder(first=calm, second=calm, final_sinc_prob=0.0)
    out = d(photo, seed=0).astype(float)
    clean = imresize_uint8(photo, output_shape=(24, 32)).astype(float)
    assert np.abs(out - clean).mean() < 6.0


def test_second_order_refuses_unaligned_targets_and_bad_settings(photo):
    with pytest.raises(ValueError, match="multiple of the scale"):
        SecondOrder()(photo[:95], seed=0)
    with pytest.raises(ValidationError, match="reversed"):
        SecondOrder(first={"blur": {"sigma": [3.0, 0.2]}})
    with pytest.raises(ValidationError, match="unknown box"):
        SecondOrder(second={"blur": {"kernels": {"box": 1.0}}})
    with pytest.raises(ValidationError, match="JPEG qualities"):
        SecondOrder(first={"jpeg": [95, 30]})
