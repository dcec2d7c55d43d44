"""Conditioned degradations: the level channel says the level that was applied, a JPEG file's
quality is read back from its tables, and a network takes the fourth channel."""

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from training import degradations as deg
from training.conditioning import LevelSpec, NoLevel, conditioned_input, jpeg_quality, rgb_of, with_level
from training.inference import Engine, to_tensor
from training.models import ResNet, TransformNet
from training.options import ResNetConfig, TransformNetConfig

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:48, 0:64].astype(np.float64)
    base = np.stack([128 + 90 * np.sin(x / 5), 2 * y + x, 255 - 3 * x], axis=2)
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).round().astype(np.uint8)


def _jpeg_bytes(rgb: np.ndarray, quality: int, writer: str) -> bytes:
    if writer == "pillow":
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
        return buf.getvalue()
    ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("writer", ["pillow", "opencv"])
@pytest.mark.parametrize("quality", [3, 10, 31, 50, 77, 90, 95, 100])
def test_a_jpeg_files_quality_is_read_from_its_tables(image, quality, writer):
    assert jpeg_quality(_jpeg_bytes(image, quality, writer)) == quality


def test_a_file_that_is_not_a_jpeg_has_no_quality(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    assert jpeg_quality(buf.getvalue()) is None
    assert jpeg_quality(b"not an image") is None


@pytest.mark.parametrize("cls, key, rng", [(deg.GaussianNoise, "sigma", [0, 50]),
                                           (deg.JpegCompression, "quality", [10, 95]),
                                           (deg.GaussianBlur, "sigma", [0.5, 3.0])])
def test_the_level_channel_holds_the_level_applied(cls, key, rng, image):
    conditioned = cls(**{key: rng, "condition": True})
    plain = cls(**{key: rng})
    assert conditioned.input_channels == 4 and plain.input_channels == 3
    codes = set()
    for seed in range(12):
        x = conditioned(image, seed)
        assert x.shape == image.shape[:2] + (4,) and x.dtype == np.uint8
        code = int(x[0, 0, 3])
        assert (x[..., 3] == code).all()
        assert conditioned.level_scale == 255 / rng[1]  # the top of the range is code 255
        level = conditioned.level_of_code(code)
        assert rng[0] <= level <= rng[1] and abs(level - conditioned.draw_level(seed)) <= 0.5 / conditioned.level_scale
        # the picture is the fixed-level degradation at exactly the level drawn, which the channel says
        np.testing.assert_array_equal(x[..., :3], plain.at(conditioned.draw_level(seed))(image, seed))
        np.testing.assert_array_equal(x, conditioned(image, seed))  # same seed, same bytes
        codes.add(code)
    assert len(codes) >= 8  # drawn per sample


def test_jpeg_conditioning_keeps_the_unconditioned_shards_pictures(image):
    # the quality drawn is the one the plain blind degradation draws: the pictures do not change
    for seed in range(6):
        np.testing.assert_array_equal(deg.JpegCompression(quality=[10, 95], condition=True)(image, seed)[..., :3],
                                      deg.JpegCompression(quality=[10, 95])(image, seed))


def test_a_conditioned_evaluation_level_is_applied_exactly(image):
    # sigma 25 is code 127.5 of a [0, 50] range: the channel says 127 or 128, the noise is sigma 25 itself
    noisy = deg.GaussianNoise(sigma=[0, 50], condition=True).at(25)(image, 4)
    assert (noisy[..., 3] == noisy[0, 0, 3]).all() and noisy[0, 0, 3] in (127, 128)
    np.testing.assert_array_equal(noisy[..., :3], deg.GaussianNoise(sigma=25)(image, 4))


def test_a_conditioned_fixed_level_says_that_level(image):
    # at a fixed level taken from the range, the code is the one the range gives that level
    x = deg.JpegCompression(quality=[10, 95], condition=True).at(90)(image, 0)
    assert (x[..., 3] == round(90 * 255 / 95)).all()
    assert jpeg_quality(_jpeg_bytes(x[..., :3], 90, "opencv")) == 90


def test_clean_samples_say_level_zero(image):
    d = deg.GaussianNoise(sigma=[5, 50], clean_prob=0.5, condition=True)
    outs = [d(image, s) for s in range(40)]
    clean = [x for x in outs if x[0, 0, 3] == 0]
    assert 8 <= len(clean) <= 32
    for x in clean:
        np.testing.assert_array_equal(x[..., :3], image)
    assert all(5 <= d.level_of_code(x[0, 0, 3]) <= 50 for x in outs if x[0, 0, 3] != 0)


def test_a_level_above_the_range_gets_the_top_code():
    blur = deg.GaussianBlur(sigma=[0.5, 20], condition=True)  # 12.75 codes a pixel
    assert blur.level_code(20) == 255 and blur.level_code(1.0) == 13
    # above the trained range: the top code, the nearest level the model knows
    assert blur.level_code(21) == 255 and LevelSpec("gaussian_noise", "sigma", 5.1, 0, 50).code(300) == 255
    with pytest.raises(ValueError, match="negative"):
        blur.level_code(-1)
    # a model trained to sigma 25 is evaluated at 50 with the code of 25, on noise of sigma 50
    noisy = deg.GaussianNoise(sigma=[0, 25], condition=True).at(50)
    assert noisy.level_code(50) == 255 and noisy.sigma == 50


def test_the_spec_a_model_file_records(image):
    assert deg.GaussianNoise(sigma=[0, 50]).level_spec() is None
    spec = deg.JpegCompression(quality=[10, 95], condition=True).level_spec()
    assert spec == LevelSpec("jpeg", "quality", 255 / 95, 10, 95) and spec.from_jpeg
    assert LevelSpec.from_dict(spec.to_dict()) == spec
    assert not deg.GaussianNoise(sigma=[0, 50], condition=True).level_spec().from_jpeg


def test_conditioned_input_takes_the_given_level_or_the_files(image):
    spec = LevelSpec("jpeg", "quality", 2.0, 10, 95)
    data = _jpeg_bytes(image, 37, "pillow")
    x, level, source = conditioned_input(image, spec, None, data)
    assert x.shape[2] == 4 and (x[..., 3] == 74).all() and level == 37 and "quantisation" in source
    x, level, _ = conditioned_input(image, spec, 60, data)  # the user's level wins
    assert (x[..., 3] == 120).all()
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    with pytest.raises(NoLevel, match="give it as the level"):
        conditioned_input(image, spec, None, png.getvalue())
    with pytest.raises(NoLevel, match="sigma"):
        conditioned_input(image, LevelSpec("gaussian_noise", "sigma", 1.0, 0, 50), None, data)


def test_rgb_of_and_with_level(image):
    x = with_level(image, 17)
    np.testing.assert_array_equal(rgb_of(x), image)
    assert rgb_of(image) is image
    with pytest.raises(ValueError):
        with_level(x, 3)


@pytest.mark.parametrize("net", ["resnet", "johnson"])
def test_a_four_channel_network_keeps_the_picture_as_its_baseline(net, image):
    torch.manual_seed(0)
    model = (ResNet(ResNetConfig(in_channels=4, channels=8, residual_blocks=1), 1) if net == "resnet"
             else TransformNet(TransformNetConfig(in_channels=4, residual_blocks=1, global_skip=True), 1))
    x = to_tensor(with_level(image, 50), 4)
    assert x.shape == (1, 4, 48, 64)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 48, 64)
    if net == "resnet":  # zero-initialised tail: the untrained net returns the picture itself
        torch.testing.assert_close(y, x[:, :3])


def test_the_level_changes_a_trained_networks_output(image):
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(in_channels=4, channels=8, residual_blocks=1), 1)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    engine = Engine(model, 1, 4)
    low, high = engine(with_level(image, 10)), engine(with_level(image, 90))
    assert np.abs(low.astype(int) - high.astype(int)).max() > 0
    with pytest.raises(ValueError, match="conditioned"):
        engine(image)  # three channels: no level
