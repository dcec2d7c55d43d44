"""Each degradation: shape, dtype, seeded reproducibility, and the effect it claims to have."""

import numpy as np
import pytest

from training import degradations as deg
from training.imresize import imresize_uint8
from training.pairs import mod_crop, sample_seed, train_pair, val_pair
from training.tasks import TASKS

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    # A smooth colour image with some texture: gradients plus a sine pattern.
    y, x = np.mgrid[0:64, 0:80].astype(np.float64)
    r = 128 + 100 * np.sin(x / 7.0)
    g = 2.0 * y + x
    b = 255 - 2.5 * x
    return np.clip(np.stack([r, g, b], axis=2), 0, 255).round().astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_bicubic_downscale_is_imresize_rounded(image):
    lr = deg.BicubicDownscale(scale=4)(image, seed=0)
    assert lr.shape == (16, 20, 3) and lr.dtype == np.uint8
    assert np.array_equal(lr, imresize_uint8(image, output_shape=(16, 20)))


def test_bicubic_downscale_refuses_unaligned_target(image):
    with pytest.raises(ValueError, match="multiple of the scale"):
        deg.BicubicDownscale(scale=8)(image[:60], seed=0)


def test_paper_variant_blurs_before_downscale(image):
    plain = deg.BicubicDownscale(scale=4)(image, seed=0)
    blurred = deg.BicubicDownscale(scale=4, blur_sigma=1.0)(image, seed=0)
    assert blurred.shape == plain.shape
    assert not np.array_equal(plain, blurred)
    # Blur removes high frequencies: the blurred LR image has less total variation.
    tv = lambda a: np.abs(np.diff(a.astype(float), axis=1)).sum()  # noqa: E731
    assert tv(blurred) < tv(plain)


def test_gaussian_noise_has_the_asked_sigma():
    flat = np.full((256, 256, 3), 128, np.uint8)  # mid-gray: clipping never bites at sigma 25
    noisy = deg.GaussianNoise(sigma=25.0)(flat, seed=1)
    residual = noisy.astype(float) - 128
    assert abs(residual.std() - 25.0) < 0.5
    assert abs(residual.mean()) < 0.5


def test_blind_noise_range_draws_between_bounds():
    flat = np.full((128, 128, 3), 128, np.uint8)
    stds = {(deg.GaussianNoise(sigma=[5.0, 50.0])(flat, seed=s).astype(float) - 128).std() for s in range(8)}
    assert all(4.0 < s < 51.0 for s in stds)
    assert max(stds) - min(stds) > 5.0  # different seeds draw different sigmas


def test_a_zero_sigma_leaves_the_image_alone(image):
    assert np.array_equal(deg.GaussianNoise(sigma=0.0)(image, seed=3), image)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """What a photo saved by Pillow at ``quality`` decodes to: the JPEG a user has."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def test_jpeg_quality_range_is_read_back_from_the_output(image):
    # Each output is exactly one quality's round trip; the qualities drawn stay in the range.
    d = deg.JpegCompression(quality=[30, 40])
    candidates = {q: jpeg_roundtrip(image, q) for q in range(20, 51)}
    drawn = []
    for seed in range(12):
        out = d(image, seed=seed)
        matches = [q for q, ref in candidates.items() if np.array_equal(out, ref)]
        assert matches and all(30 <= q <= 40 for q in matches), (seed, matches)
        drawn.append(matches[0])
    assert len(set(drawn)) >= 3


def test_blur_sigma_range_draws_per_sample():
    texture = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    d = deg.GaussianBlur(sigma=[0.5, 3.0])
    tv = [np.abs(np.diff(d(texture, seed=s).astype(float), axis=1)).sum() for s in range(8)]
    assert max(tv) > 2 * min(tv)  # light and heavy blurs
    fixed = [deg.GaussianBlur(sigma=3.0)(texture, seed=s) for s in range(2)]
    assert np.array_equal(*fixed)


@pytest.mark.parametrize("cls, key, blind, level", [(deg.GaussianNoise, "sigma", [0, 50], 10.0),
                                                    (deg.GaussianBlur, "sigma", [0.5, 3.0], 1.0),
                                                    (deg.JpegCompression, "quality", [10, 95], 90)])
def test_a_blind_degradation_evaluates_at_one_level(cls, key, blind, level, image):
    d = cls(**{key: blind})
    assert d.blind and d.levels == (float(blind[0]), float(blind[1])) and d.level_key == key
    one = d.at(level)
    assert not one.blind and one.levels == (level, level)
    assert np.array_equal(one(image, seed=5), cls(**{key: level})(image, seed=5))
    described = cls(**{key: level}).describe()
    assert described["kind"] == cls.kind and described[key] == level and not isinstance(described[key], list)  # a number


def test_clean_prob_leaves_that_share_of_samples_untouched(image):
    d = deg.JpegCompression(quality=[10, 95], clean_prob=0.3)
    outs = [d(image, seed=s) for s in range(200)]
    clean = sum(np.array_equal(o, image) for o in outs)
    assert 40 <= clean <= 80  # about 0.3 of 200
    # the degraded ones are what the same seed gives without clean_prob; at one level, none is clean
    plain = deg.JpegCompression(quality=[10, 95])
    assert all(np.array_equal(o, plain(image, seed=s)) for s, o in enumerate(outs) if not np.array_equal(o, image))
    assert not any(np.array_equal(d.at(90)(image, seed=s), image) for s in range(20))


def test_reversed_or_out_of_bounds_ranges_are_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="reversed"):
        deg.GaussianNoise(sigma=[50, 10])
    with pytest.raises(ValidationError, match="less than or equal to 100"):
        deg.JpegCompression(quality=[10, 101])
    with pytest.raises(ValidationError):
        deg.GaussianBlur(sigma=[0.0, 2.0])  # a blur needs a positive sigma


def test_gaussian_blur_smooths(image):
    blurred = deg.GaussianBlur(sigma=2.0)(image, seed=0)
    assert blurred.shape == image.shape
    assert np.abs(np.diff(blurred.astype(float), axis=1)).sum() < np.abs(np.diff(image.astype(float), axis=1)).sum()


def test_jpeg_quality_10_is_lossy_and_quality_100_nearly_lossless(image):
    q10 = deg.JpegCompression(quality=10)(image, seed=0)
    q100 = deg.JpegCompression(quality=100)(image, seed=0)
    assert psnr(q100, image) > 40 > psnr(q10, image) > 20
    # The JPEG signature: steps at the 8x8 block boundaries are larger than inside blocks.
    steps = np.abs(np.diff(q10.astype(float), axis=1)).mean(axis=(0, 2))
    at_boundary = steps[7::8].mean()
    inside = np.delete(steps, np.s_[7::8]).mean()
    assert at_boundary > 1.3 * inside


def test_grayscale_is_bt601_luma(image):
    gray3 = deg.Grayscale(channels=3)(image, seed=0)
    assert gray3.shape == image.shape
    assert np.array_equal(gray3[..., 0], gray3[..., 1]) and np.array_equal(gray3[..., 1], gray3[..., 2])
    luma = image.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(gray3[..., 0].astype(float) - luma).max() <= 1.0
    gray1 = deg.Grayscale(channels=1)(image, seed=0)
    assert gray1.shape == image.shape[:2]


def test_identity_copies(image):
    out = deg.Identity()(image, seed=0)
    assert np.array_equal(out, image) and out is not image


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_is_seeded_and_reproducible(name, image):
    d = TASKS[name].make_degradation()
    a = train_pair(image, d, 32, seed=7)
    b = train_pair(image, d, 32, seed=7)
    assert np.array_equal(a.input, b.input) and np.array_equal(a.target, b.target) and a.meta == b.meta
    assert a.target.shape == (32, 32, 3)
    assert a.input.shape[:2] == (32 // d.input_scale, 32 // d.input_scale)


def test_different_seeds_give_different_noise(image):
    d = deg.GaussianNoise(sigma=25.0)
    assert not np.array_equal(d(image, seed=1), d(image, seed=2))


def test_degradations_reject_non_rgb_uint8():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        deg.GaussianBlur()(np.zeros((8, 8), np.uint8), seed=0)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        deg.BicubicDownscale(scale=2)(np.zeros((8, 8, 3), np.float32), seed=0)


def test_train_pair_geometry_is_shared_by_input_and_target(image):
    # For SR the input must equal the downscale of the (already cropped/flipped/rotated) target.
    d = deg.BicubicDownscale(scale=4)
    pair = train_pair(image, d, 32, seed=3)
    assert np.array_equal(pair.input, imresize_uint8(pair.target, output_shape=(8, 8)))
    x0, y0, x1, y1 = pair.meta["crop_box"]
    crop = image[y0:y1, x0:x1]
    if pair.meta["hflip"]:
        crop = crop[:, ::-1]
    # albumentations rotates counter-clockwise by factor * 90 degrees, like np.rot90.
    assert np.array_equal(np.rot90(crop, pair.meta["rot90"]), pair.target)


def test_val_pair_mod_crops_top_left(image):
    odd = image[:63, :77]
    pair = val_pair(odd, deg.BicubicDownscale(scale=4), seed=0)
    assert pair.target.shape == (60, 76, 3)
    assert np.array_equal(pair.target, odd[:60, :76])
    assert pair.input.shape == (15, 19, 3)
    assert mod_crop(odd, 1).shape == odd.shape


def test_train_pair_rejects_small_images(image):
    with pytest.raises(ValueError, match="smaller than the patch"):
        train_pair(image, deg.Identity(), 96, seed=0)


def test_sample_seed_is_stable_and_sensitive():
    assert sample_seed(1, "sr_x4", "train", "img", 0) == sample_seed(1, "sr_x4", "train", "img", 0)
    seeds = {sample_seed(1, "sr_x4", "train", "img", k) for k in range(100)}
    assert len(seeds) == 100
    assert sample_seed(2, "a") != sample_seed(1, "a") and sample_seed(1, "ab") != sample_seed(1, "ba")
    assert 0 <= sample_seed(1, "x") < 2**63

