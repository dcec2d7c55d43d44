"""The feature network: the real normalised VGG-19 file, synthetic torchvision files, and every error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.vgg import FeatureNet, FeatureNetError, _layout, load_feature_net
from training.options import FeatureNetConfig
from tests.shared_data import DATASETS, WEIGHTS

pytestmark = pytest.mark.unit

REAL = WEIGHTS / "vgg_normalised_conv3_1.pth"  # read only
NORMALISED_LAYERS = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1")
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG19_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]


@pytest.fixture(scope="module")
def real_net() -> FeatureNet:
    return load_feature_net(FeatureNetConfig(weights=str(REAL)), NORMALISED_LAYERS)


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """96x96 centre crops of Set5 and five T91 images, RGB in [0, 1]."""
    paths = sorted((DATASETS / "Set5" / "HR").glob("*.png"))
    paths += sorted((DATASETS / "T91" / "HR").glob("*.png"))[:5]
    assert len(paths) == 10
    crops = []
    for path in paths:
        a = np.array(Image.open(path).convert("RGB"))
        top, left = (a.shape[0] - 96) // 2, (a.shape[1] - 96) // 2
        crops.append(torch.from_numpy(a[top : top + 96, left : left + 96]).permute(2, 0, 1))
    return torch.stack(crops).float() / 255


def median_channel_means(net: FeatureNet, x: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        feats = net(x)
    return {name: float(f.mean(dim=(0, 2, 3)).median()) for name, f in feats.items()}


def save_torchvision_prefix(path: Path, convs: list[tuple[int, int, int]], *, prefix: str = "features.", extra=None) -> Path:
    """A fake torchvision VGG state dict: random tensors with the right names and shapes."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for index, cin, cout in convs:
        state[f"{prefix}{index}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * (2 / (9 * cin)) ** 0.5
        state[f"{prefix}{index}.bias"] = torch.zeros(cout)
    state.update(extra or {})
    torch.save(state, path)
    return path


# (features index, in channels, out channels) of torchvision's convs: VGG-16 and VGG-19 agree up to conv3_3.
TO_CONV3_3 = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256)]
VGG16_TO_CONV4_1 = [*TO_CONV3_3, (17, 256, 512)]
VGG19_TO_CONV3_4 = [*TO_CONV3_3, (16, 256, 256)]
TO_CONV2_2 = TO_CONV3_3[:4]


# --- layouts ------------------------------------------------------------------------------------


def test_layouts_use_the_original_module_indices():
    assert [c[0] for c in _layout("torchvision_vgg16").convs] == VGG16_CONVS
    assert [c[0] for c in _layout("torchvision_vgg19").convs] == VGG19_CONVS
    assert [c[0] for c in _layout("vgg19_normalised").convs][:5] == [2, 5, 9, 12, 16]  # the README's keys
    assert list(_layout("torchvision_vgg16").relus)[-3:] == ["relu5_1", "relu5_2", "relu5_3"]
    assert list(_layout("torchvision_vgg19").relus)[-1] == "relu5_4"


# --- the real normalised VGG-19 file ------------------------------------------------------------


def test_real_file_auto_detects_normalised_vgg19(real_net):
    assert real_net.kind == "vgg19_normalised"
    assert real_net.padding == "reflect"
    assert real_net.available_layers == NORMALISED_LAYERS
    assert real_net.layers == NORMALISED_LAYERS
    # Layer 0 is the file's Caffe preprocessing, loaded as a real layer: RGB->BGR x255, minus the mean.
    assert torch.equal(real_net.body[0].weight.flatten(1), torch.tensor([[0.0, 0, 255], [0, 255, 0], [255, 0, 0]]))
    assert torch.allclose(real_net.body[0].bias, torch.tensor([-103.939, -116.779, -123.68]))


def test_real_weights_are_normalised_and_random_ones_are_not(real_net, photos):
    # Gatys' normalisation makes each channel's mean activation about 1 (README: medians 0.97..1.15).
    medians = median_channel_means(real_net, photos)
    assert set(medians) == set(NORMALISED_LAYERS)
    assert all(0.6 < m < 1.6 for m in medians.values()), medians
    # The check can fail: untrained (He-initialised) weights are far off.
    rand = median_channel_means(load_feature_net(FeatureNetConfig(kind="random"), NORMALISED_LAYERS), photos)
    assert not any(0.6 < m < 1.6 for m in rand.values()), rand


def test_frozen_eval_and_differentiable_wrt_input(real_net):
    assert all(not p.requires_grad for p in real_net.parameters())
    real_net.train()
    assert not real_net.training and not any(m.training for m in real_net.modules())
    x = torch.rand(2, 3, 32, 48, requires_grad=True)
    feats = real_net(x)
    feats["relu3_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in real_net.parameters())


def test_output_shapes_and_depth(real_net):
    feats = real_net(torch.rand(1, 3, 32, 48))
    assert list(feats) == list(NORMALISED_LAYERS)
    assert feats["relu1_2"].shape == (1, 64, 32, 48)
    assert feats["relu2_2"].shape == (1, 128, 16, 24)
    assert feats["relu3_1"].shape == (1, 256, 8, 12)
    # Asking for relu2_2 alone builds the net only that deep and returns only it.
    shallow = load_feature_net(FeatureNetConfig(weights=str(REAL)), ["relu2_2"])
    assert shallow.layers == ("relu2_2",) and len(shallow.body) == 14
    out = shallow(torch.rand(1, 3, 32, 48))
    assert list(out) == ["relu2_2"] and out["relu2_2"].shape == (1, 128, 16, 24)


def test_shallow_and_full_net_agree(real_net):
    x = torch.rand(1, 3, 24, 24)
    shallow = load_feature_net(FeatureNetConfig(weights=str(REAL)), ["relu2_2", "relu1_1"])
    assert shallow.layers == ("relu1_1", "relu2_2")  # network order
    with torch.no_grad():
        a, b = shallow(x), real_net(x)
    assert torch.equal(a["relu2_2"], b["relu2_2"])


def test_zero_padding_only_changes_borders(real_net):
    zeros = load_feature_net(FeatureNetConfig(weights=str(REAL), padding="zeros"), ["relu1_1"])
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        a, b = zeros(x)["relu1_1"], real_net(x)["relu1_1"]
    assert torch.allclose(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1], atol=1e-4)
    assert not torch.allclose(a, b)


def test_layers_none_means_every_layer_of_the_file():
    net = load_feature_net(FeatureNetConfig(weights=str(REAL)))
    assert net.layers == NORMALISED_LAYERS


def test_random_kind_reads_no_file_and_is_seeded():
    a = load_feature_net(FeatureNetConfig(kind="random", weights="does/not/exist.pth", seed=1), ["relu2_2"])
    b = load_feature_net(FeatureNetConfig(kind="random", weights="does/not/exist.pth", seed=1), ["relu2_2"])
    c = load_feature_net(FeatureNetConfig(kind="random", seed=2), ["relu2_2"])
    assert a.kind == "random" and a.available_layers == NORMALISED_LAYERS
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(a(x)["relu2_2"], b(x)["relu2_2"])
    assert not torch.equal(a(x)["relu2_2"], c(x)["relu2_2"])


# --- synthetic torchvision files ----------------------------------------------------------------


def test_torchvision_vgg16_prefix(tmp_path):
    path = save_torchvision_prefix(tmp_path / "vgg16.pth", VGG16_TO_CONV4_1, extra={"classifier.0.weight": torch.zeros(4, 2)})
    net = load_feature_net(FeatureNetConfig(weights=str(path)), ["relu1_2", "relu2_2", "relu3_3", "relu4_1"])
    assert net.kind == "torchvision_vgg16" and net.padding == "zeros"
    assert net.available_layers[-2:] == ("relu3_3", "relu4_1")
    feats = net(torch.rand(2, 3, 32, 32))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "relu1_2": (2, 64, 32, 32),
        "relu2_2": (2, 128, 16, 16),
        "relu3_3": (2, 256, 8, 8),
        "relu4_1": (2, 512, 4, 4),
    }
    assert torch.equal(net.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert "mean" not in net.state_dict()  # a constant, not a weight


def test_torchvision_vgg19_prefix_and_imagenet_normalisation(tmp_path):
    path = save_torchvision_prefix(tmp_path / "vgg19.pth", VGG19_TO_CONV3_4)
    net = load_feature_net(FeatureNetConfig(weights=str(path)), ["relu1_1", "relu3_4"])
    assert net.kind == "torchvision_vgg19"
    assert net.available_layers[-1] == "relu3_4"
    x = torch.rand(1, 3, 16, 16)
    feats = net(x)
    assert feats["relu3_4"].shape == (1, 256, 4, 4)
    # relu1_1 is conv1_1 (zero padded) on the ImageNet-normalised input.
    state = torch.load(path, weights_only=True)
    normed = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expect = torch.relu(torch.nn.functional.conv2d(normed, state["features.0.weight"], state["features.0.bias"], padding=1))
    assert torch.allclose(feats["relu1_1"], expect, atol=1e-5)


def test_short_torchvision_prefix_is_vgg16_or_vgg19_alike(tmp_path):
    # Up to conv3_3 the two are the same network, so auto may call it VGG-16; asking for 19 works too.
    path = save_torchvision_prefix(tmp_path / "short.pth", TO_CONV2_2, prefix="")  # saved from vgg.features
    auto = load_feature_net(FeatureNetConfig(weights=str(path)), ["relu2_2"])
    as19 = load_feature_net(FeatureNetConfig(weights=str(path), kind="torchvision_vgg19"), ["relu2_2"])
    assert auto.kind == "torchvision_vgg16" and as19.kind == "torchvision_vgg19"
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(auto(x)["relu2_2"], as19(x)["relu2_2"])


def test_prefix_file_too_short_for_the_layer(tmp_path):
    path = save_torchvision_prefix(tmp_path / "short.pth", TO_CONV2_2)
    with pytest.raises(FeatureNetError, match="cannot provide relu3_1: its weights stop at relu2_2"):
        load_feature_net(FeatureNetConfig(weights=str(path)), ["relu3_1"])


def test_state_dict_wrapper_is_accepted(tmp_path):
    raw = save_torchvision_prefix(tmp_path / "raw.pth", TO_CONV2_2)
    torch.save({"state_dict": torch.load(raw, weights_only=True), "epoch": 3}, tmp_path / "wrapped.pth")
    net = load_feature_net(FeatureNetConfig(weights=str(tmp_path / "wrapped.pth")), ["relu2_1"])
    assert net.layers == ("relu2_1",)


# --- errors -------------------------------------------------------------------------------------


def test_missing_file_names_the_param_and_acquire(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FeatureNetError, match="feature_net.weights") as err:
        load_feature_net(FeatureNetConfig(weights=str(missing)), ["relu2_2"])
    assert str(missing) in str(err.value) and "percept acquire" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_text_file_is_not_a_state_dict(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(FeatureNetError, match="cannot read .* as a state dict saved by torch.save"):
        load_feature_net(FeatureNetConfig(weights=str(path)), ["relu2_2"])


def test_a_tensor_is_not_a_state_dict(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "t.pth")
    with pytest.raises(FeatureNetError, match="not a state dict"):
        load_feature_net(FeatureNetConfig(weights=str(tmp_path / "t.pth")), ["relu2_2"])


def test_wrong_shape_names_key_and_both_shapes(tmp_path):
    path = save_torchvision_prefix(tmp_path / "bad.pth", TO_CONV2_2, extra={"features.5.weight": torch.zeros(128, 64, 5, 5)})
    with pytest.raises(FeatureNetError, match=r"features\.5\.weight has shape \(128, 64, 5, 5\), expected \(128, 64, 3, 3\)"):
        load_feature_net(FeatureNetConfig(weights=str(path)), ["relu2_2"])


def test_missing_key_in_the_middle(tmp_path):
    path = save_torchvision_prefix(tmp_path / "gap.pth", [c for c in TO_CONV2_2 if c[0] != 2])
    expected = r"no key features\.2\.weight \(expected shape \(64, 64, 3, 3\)\), needed for relu2_2"
    with pytest.raises(FeatureNetError, match=expected):
        load_feature_net(FeatureNetConfig(weights=str(path)), ["relu2_2"])
    # The layers before the gap are still fine.
    assert load_feature_net(FeatureNetConfig(weights=str(path)), ["relu1_1"]).layers == ("relu1_1",)


def test_missing_key_in_the_normalised_file(tmp_path):
    state = torch.load(REAL, map_location="cpu", weights_only=True)
    del state["9.bias"]
    torch.save(state, tmp_path / "holed.pth")
    with pytest.raises(FeatureNetError, match=r"no key 9\.bias \(expected shape \(128,\)\), needed for relu3_1"):
        load_feature_net(FeatureNetConfig(weights=str(tmp_path / "holed.pth")), ["relu3_1"])


def test_layer_beyond_the_file_says_what_it_has():
    with pytest.raises(FeatureNetError, match="cannot provide relu4_3.*relu1_1, relu1_2, relu2_1, relu2_2, relu3_1"):
        load_feature_net(FeatureNetConfig(weights=str(REAL), kind="auto"), ["relu2_2", "relu4_3"])


def test_unknown_layer_name():
    with pytest.raises(FeatureNetError, match="unknown feature layer 'conv2_2'"):
        load_feature_net(FeatureNetConfig(weights=str(REAL)), ["conv2_2"])
    with pytest.raises(FeatureNetError, match="unknown feature layer 'relu5_4'"):
        load_feature_net(FeatureNetConfig(kind="random"), ["relu5_4"])


def test_auto_on_an_unrelated_state_dict(tmp_path):
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "linear.pth")
    expected = r"cannot tell which VGG.*0\.weight \(3, 3, 1, 1\).*features\.0\.weight \(64, 3, 3, 3\)"
    expected += r".*found 2 tensors: weight \(2, 4\)"
    with pytest.raises(FeatureNetError, match=expected):
        load_feature_net(FeatureNetConfig(weights=str(tmp_path / "linear.pth")), ["relu2_2"])


def test_explicit_kind_that_does_not_match_the_file():
    expected = r"\(torchvision_vgg16\): 0\.weight has shape \(3, 3, 1, 1\), expected \(64, 3, 3, 3\)"
    with pytest.raises(FeatureNetError, match=expected):
        load_feature_net(FeatureNetConfig(weights=str(REAL), kind="torchvision_vgg16"), ["relu2_2"])


def test_config_is_strict():
    with pytest.raises(ValueError):
        FeatureNetConfig(kind="vgg11")
    with pytest.raises(ValueError):
        FeatureNetConfig(weigths="x.pth")
