"""LPIPS from local files: the formula on synthetic weights, and clear errors for wrong files."""

import numpy as np
import pytest
import torch

from training.lpips import CHANNELS, LAYERS, Lpips
from training.options import LpipsConfig
from training.vgg import FeatureNetError, _layout

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random full VGG-16 ``features`` state dict and a random non-negative lin file."""
    folder = tmp_path_factory.mktemp("lpips")
    gen = torch.Generator().manual_seed(0)
    state = {}
    for index, _, cin, cout in _layout("torchvision_vgg16").convs:
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * (2 / (9 * cin)) ** 0.5
        state[f"features.{index}.bias"] = torch.zeros(cout)
    torch.save(state, folder / "vgg16.pth")
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) for i, c in enumerate(CHANNELS)}
    torch.save(lin, folder / "lin.pth")
    return LpipsConfig(vgg16=str(folder / "vgg16.pth"), lin=str(folder / "lin.pth")), lin


def test_identical_images_score_zero_and_noise_raises_the_score(files):
    cfg, _ = files
    lpips = Lpips(cfg)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    light = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(image + rng.normal(0, 40, image.shape), 0, 255).astype(np.uint8)
    assert lpips(image, image) == 0.0
    assert 0 < lpips(light, image) < lpips(heavy, image)


def test_the_score_is_the_weighted_sum_of_normalised_feature_differences(files):
    cfg, lin = files
    lpips = Lpips(cfg)
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(2))
    feats = lpips.net(torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float() / 255)
    expected = 0.0
    for i, name in enumerate(LAYERS):  # the reference implementation's loop, written out
        f = feats[name].double()
        f = f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + 1e-10)
        expected += float(torch.nn.functional.conv2d((f[:1] - f[1:]) ** 2, lin[f"lin{i}.model.1.weight"].double()).mean())
    assert lpips(a, b) == pytest.approx(expected, rel=1e-5)


def test_wrong_or_missing_lin_file_is_a_clear_error(files, tmp_path):
    cfg, lin = files
    bad = dict(lin)
    bad["lin2.model.1.weight"] = torch.rand(1, 128, 1, 1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(FeatureNetError, match=r"lin2.model.1.weight: expected shape \(1, 256, 1, 1\)"):
        Lpips(cfg.model_copy(update={"lin": str(tmp_path / "bad.pth")}))
    with pytest.raises(FeatureNetError, match="file not found"):
        Lpips(cfg.model_copy(update={"lin": str(tmp_path / "missing.pth")}))


def test_configured_lpips_is_reported_and_may_gate(files, make_config):
    cfg, _ = files
    lpips = {"vgg16": cfg.vgg16, "lin": cfg.lin}
    config = make_config({"evaluate": {"lpips": lpips}, "promote": {"sr_x4": {"metric": "lpips", "margin": 0.0}}})
    assert config.reported_metrics("sr_x4")[-1] == "lpips" and config.gate("sr_x4").metric == "lpips"
    assert "lpips" not in make_config().reported_metrics("sr_x4")
