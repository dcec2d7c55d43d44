"""The residual restoration network (arch: resnet): shapes at every scale and unshuffle factor,
hand-counted parameters, the untrained net returning its baseline exactly, chroma prediction that
keeps the gray input's luma, tiles that match the whole image, and model configs by arch."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from training.inference import Engine, downsampling, load_model_file
from training.options import ColorNetConfig, FeatureNetConfig, InferenceConfig, ResNetConfig, TransformNetConfig, parse_model_config
from training.models import ResNet, TransformNet, build_transform_net, count_parameters
from training.tasks import TASKS, merge_model_block
from training.tiling import receptive_radius

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def net(scale=1, **kw) -> ResNet:
    return build_transform_net(ResNetConfig(**{"channels": 8, "residual_blocks": 1, **kw}), scale)


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    for p in model.parameters():  # away from the zero-initialised tail, so every layer matters
        p.data.normal_(0, 0.1)
    return model.eval()


@pytest.mark.parametrize("scale,unshuffle,in_ch,predict,h,w", [
    (s, u, c, p, h, w) for (s, u), c, p, (h, w) in itertools.product(
        [(1, 1), (1, 2), (1, 4), (2, 1), (4, 1), (8, 1), (4, 2)], (1, 3), ("rgb", "chroma"), [(13, 10), (16, 16), (9, 31)])
    if not (p == "chroma" and s > 1)])
def test_output_shape_for_every_scale_unshuffle_and_size(scale, unshuffle, in_ch, predict, h, w):
    model = net(scale, unshuffle=unshuffle, in_channels=in_ch, predict=predict)
    y = model(torch.rand(2, in_ch, h, w))
    assert y.shape == (2, 3, h * scale, w * scale) and y.dtype == torch.float32 and torch.isfinite(y).all()


def test_body_runs_at_the_unshuffled_resolution():
    seen = {}
    model = net(1, unshuffle=4)
    model.body.register_forward_hook(lambda m, i, o: seen.__setitem__("hw", tuple(o.shape[-2:])))
    model(torch.rand(1, 3, 37, 50))  # reflect-padded to 40 x 52
    assert seen["hw"] == (10, 13)


def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def test_parameter_counts_by_hand():
    # sr_x4's default: head 3->64, 4 blocks of two 64->64 convs, body_out, tail 64 -> 3*16 (shuffle x4)
    sr = conv(3, 3, 64) + 8 * conv(3, 64, 64) + conv(3, 64, 64) + conv(3, 64, 3 * 16)
    assert sr == 1_792 + 8 * 36_928 + 36_928 + 27_696
    assert count_parameters(build_transform_net(ResNetConfig(), 4)) == sr == 361_840
    # denoise's default: the same body on a 2x unshuffled input (12 channels), tail 64 -> 3*4
    restore = conv(3, 12, 64) + 9 * conv(3, 64, 64) + conv(3, 64, 12)
    assert count_parameters(build_transform_net(ResNetConfig(unshuffle=2), 1)) == restore == 346_252
    # chroma: two output channels at the body's resolution, upsampled bilinearly
    chroma = conv(3, 16, 8) + 3 * conv(3, 8, 8) + conv(3, 8, 2)
    assert count_parameters(net(1, unshuffle=4, in_channels=1, predict="chroma")) == chroma


@pytest.mark.parametrize("scale,unshuffle", [(1, 1), (1, 2), (4, 1), (8, 1)])
def test_untrained_net_returns_its_baseline_exactly(scale, unshuffle):
    x = torch.rand(2, 3, 12, 20)
    y = net(scale, unshuffle=unshuffle)(x)
    expected = x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("in_ch", [1, 3])
def test_chroma_prediction_keeps_the_luma_of_its_gray_input(in_ch):
    model = randomised(net(1, unshuffle=2, in_channels=in_ch, predict="chroma"))
    gray = torch.rand(1, 1, 16, 24)
    rgb = model(gray.repeat(1, in_ch, 1, 1))  # colorize feeds one channel, or three equal ones
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    torch.testing.assert_close(luma, gray[:, 0], atol=1e-5, rtol=0)
    assert (rgb[:, 0] - rgb[:, 2]).abs().max() > 0.01  # and it does add colour


def test_gradients_reach_the_first_layer_after_one_step():
    model = net(4)
    x, target = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    (model(x) - target).abs().mean().backward()
    assert model.head.weight.grad.abs().sum() == 0  # under a zero tail: nothing yet
    assert model.tail.weight.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    (model(x) - target).abs().mean().backward()
    assert model.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("scale,unshuffle,predict,tile", [(1, 2, "rgb", 48), (1, 4, "chroma", 96), (4, 1, "rgb", 24)])
def test_tiles_match_the_whole_image(scale, unshuffle, predict, tile):
    model = randomised(net(scale, unshuffle=unshuffle, predict=predict, residual_blocks=2))
    image = np.random.default_rng(0).integers(0, 256, (101, 87, 3), dtype=np.uint8)
    whole = Engine(model, scale, 3, InferenceConfig(tile=None))(image)
    engine = Engine(model, scale, 3, InferenceConfig(tile=tile, batch=2))
    assert engine.align == unshuffle and engine.overlap >= receptive_radius(model) and engine.overlap % unshuffle == 0
    tiled = engine(image)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_receptive_radius_and_alignment_count_the_unshuffle():
    # unshuffle 2: a 2x2 cell (+1 px), then 7 convs of radius 1 at half resolution (+14 px)
    model = net(1, unshuffle=2, residual_blocks=2)
    assert receptive_radius(model) == 15 and downsampling(model) == 2
    assert downsampling(net(1, unshuffle=4)) == 4 and downsampling(net(4)) == 1


def test_model_configs_by_arch_and_old_files_without_one(tmp_path):
    assert isinstance(parse_model_config({"arch": "resnet", "unshuffle": 2}), ResNetConfig)
    assert isinstance(parse_model_config({"channels": 16}), TransformNetConfig)  # files written before `arch`
    with pytest.raises(ValidationError):
        parse_model_config({"arch": "resnet", "norm": "batch"})  # a johnson-only key
    with pytest.raises(ValidationError):
        parse_model_config({"arch": "unet"})
    old = build_transform_net(TransformNetConfig(sr_channels=8, residual_blocks=1, norm="batch"), 4)
    config = old.cfg.model_dump(mode="json")
    config.pop("arch")
    torch.save({"task": "sr_x4", "scale": 4, "model_config": config, "model": old.state_dict()}, tmp_path / "model.pt")
    loaded, _ = load_model_file(tmp_path / "model.pt")
    assert isinstance(loaded, TransformNet)


def test_a_block_naming_another_arch_starts_from_that_networks_defaults():
    defaults = TASKS["sr_x4"].model_defaults
    assert defaults["arch"] == "resnet"
    assert merge_model_block(defaults, {"channels": 32}) == {**defaults, "channels": 32}
    assert merge_model_block(defaults, {"arch": "johnson", "norm": "batch"}) == {"arch": "johnson", "norm": "batch"}
    paper = TASKS["sr_x4"].make_model_config({"arch": "johnson", "norm": "batch"})
    assert isinstance(paper, TransformNetConfig) and paper.residual_blocks == 5


# --- colornet ------------------------------------------------------------------------------------

from training.models import ColorNet, _add_chroma, init_encoder
from training.vgg import load_feature_net


def colornet(**kw) -> ColorNet:
    return build_transform_net(ColorNetConfig(**{"channels": 8, "residual_blocks": 1, **kw}), 1)


@pytest.mark.parametrize("in_ch,downsample,h,w,bins", [(3, 2, 37, 50, 0), (1, 2, 64, 64, 0), (3, 1, 20, 13, 0),
                                                       (3, 4, 33, 70, 0), (3, 2, 37, 50, 6)])
def test_colornet_shape_keeps_the_luma_and_starts_gray(in_ch, downsample, h, w, bins):
    model = colornet(in_channels=in_ch, downsample=downsample, chroma_bins=bins)
    gray = torch.rand(2, 1, h, w)
    y = model(gray.repeat(1, in_ch, 1, 1))
    assert y.shape == (2, 3, h, w)
    torch.testing.assert_close(y, gray.repeat(1, 3, 1, 1))  # zero tail: the gray input itself
    randomised(model)
    y = model(gray.repeat(1, in_ch, 1, 1))
    torch.testing.assert_close(0.299 * y[:, 0] + 0.587 * y[:, 1] + 0.114 * y[:, 2], gray[:, 0], atol=1e-5, rtol=0)
    assert (y[:, 0] - y[:, 2]).abs().max() > 0.01


def test_colornet_parameters_and_a_frozen_encoder():
    model = colornet()
    decoder = conv(3, 256 + 64, 8) + 3 * conv(3, 8, 8) + conv(3, 8, 2)
    encoder = 3 * 3 + 3 + conv(3, 3, 64) + conv(3, 64, 64) + conv(3, 64, 128) + conv(3, 128, 128) + conv(3, 128, 256)
    assert encoder == 555_340
    assert count_parameters(model) == decoder + encoder
    model.train()
    randomised(model)
    model(torch.rand(2, 3, 32, 32)).mean().backward()
    assert all(p.grad is None for p in model.encoder.parameters()) and model.head.weight.grad is not None


def test_colornet_encoder_starts_as_the_feature_network():
    feature_net = load_feature_net(FeatureNetConfig(kind="random", seed=3), ("relu3_1",))
    model = colornet()
    assert not torch.equal(model.encoder.body[2].weight, feature_net.body[2].weight)
    assert init_encoder(model, feature_net)
    for key, value in feature_net.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value)
    assert not init_encoder(net(1), feature_net)  # nothing to copy into a resnet
    with pytest.raises(ValueError, match="encoder"):
        init_encoder(colornet(encoder="torchvision_vgg16"), feature_net)


@pytest.mark.parametrize("options", [{}, {"global_context": True, "chroma_guide": 3, "chroma_bins": 5, "temperature": 0.5}])
def test_colornet_tiles_match_the_whole_image_and_align_to_its_grid(options):
    model = randomised(colornet(residual_blocks=2, **options))
    side = 300 if options else 150
    gray = np.random.default_rng(0).integers(0, 256, (side, side - 19), dtype=np.uint8)
    if options:  # darker to the left, flat at the top: every tile's own mean differs from the image's
        gray = (gray * np.linspace(0.1, 1, side - 19)[None, :]).astype(np.uint8)
        gray[: side // 3] = 128
    image = np.repeat(gray[..., None], 3, axis=2)
    whole = Engine(model, 1, 3, InferenceConfig(tile=None))(image)
    engine = Engine(model, 1, 3, InferenceConfig(tile=256 if options else 200, batch=2))
    assert engine.align == 8 and engine.overlap >= receptive_radius(model) > 40
    tiled = engine(image)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
    if options:  # the guided filter widens the radius by twice its own
        assert receptive_radius(model) == receptive_radius(colornet(residual_blocks=2)) + 6


def test_colornet_chroma_gamut_leaves_black_and_white_gray_and_colours_the_midtones():
    gray = torch.tensor([0.0, 1.0, 0.5, 0.25]).repeat_interleave(8 * 32).view(1, 1, 32, 32)  # 8 rows per level
    free, bounded = colornet(), colornet(chroma_gamut=True)
    bounded.load_state_dict(randomised(free).state_dict())
    y_free, y = free(gray.expand(-1, 3, -1, -1)), bounded.eval()(gray.expand(-1, 3, -1, -1))
    spread = (y.max(1).values - y.min(1).values)[0]  # per pixel: 0 where the output is gray
    assert spread[:16].abs().max() < 1e-6  # black and white rows stay exactly gray
    free_spread = (y_free.max(1).values - y_free.min(1).values)[0]
    assert free_spread[:16].min() > 0.01  # without the bound they took colour
    # mid-gray keeps its chroma whole; a quarter gray gets 4 * 0.25 * 0.75 = 0.75 of it
    torch.testing.assert_close(spread[16:24], free_spread[16:24], atol=1e-5, rtol=0)
    torch.testing.assert_close(spread[24:], 0.75 * free_spread[24:], atol=1e-5, rtol=0)


def test_colornet_global_context_parameters_and_a_scene_wide_effect():
    model = colornet(global_context=True)
    context = 256 * 8 + 8 + 8 * 8 + 8  # Linear(256, c) - ReLU - Linear(c, c)
    assert count_parameters(model) == count_parameters(colornet()) + context
    randomised(model)
    # A change far from a pixel reaches it through the image mean, and only through it.
    far = receptive_radius(colornet()) + 16
    gray = torch.rand(1, 3, far + 32, far + 32)
    other = gray.clone()
    other[..., far:, far:] = 1 - other[..., far:, far:]
    near = lambda m, x: m(x)[..., :8, :8]
    assert (near(model, gray) - near(model, other)).abs().max() > 1e-4
    local = colornet()
    local.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("context")})
    torch.testing.assert_close(near(local, gray), near(local, other))


def test_box_mean_and_the_guided_filter_take_the_guide_edges():
    from training.models import box_mean, guided_filter

    x = torch.rand(2, 2, 23, 31, dtype=torch.float64)
    reference = F.avg_pool2d(F.pad(x, (3, 3, 3, 3), mode="replicate"), 7, stride=1)
    torch.testing.assert_close(box_mean(x, 3), reference)
    # A guide with a sharp edge between columns 15 and 16, and chroma that crosses it softly (as
    # bilinear upsampling from a coarse grid does): the filtered chroma steps where the guide does.
    guide = torch.zeros(1, 1, 32, 32)
    guide[..., 16:] = 1.0
    chroma = (torch.sigmoid((torch.arange(32) - 15.5) / 4) - 0.5).expand(1, 1, 32, 32).clone()
    out = guided_filter(guide, chroma, 4, 1e-3)
    step = lambda c: float(c[0, 0, 16, 16] - c[0, 0, 16, 15])
    assert step(out) > 4 * step(chroma) > 0
    flat = torch.full_like(guide, 0.5)  # no edges: the filter is a smoothing box
    torch.testing.assert_close(guided_filter(flat, chroma, 4, 1e-3), box_mean(box_mean(chroma, 4), 4), atol=1e-5, rtol=0)


def test_chroma_bins_decode_to_their_annealed_mean_and_keep_the_logits_for_training():
    from training.models import chroma_bin_centres, rgb_to_chroma

    centres = chroma_bin_centres(4)
    assert centres.shape == (2, 16) and centres.min() == -0.375 and centres.max() == 0.375
    assert torch.equal(centres.sum(1), torch.zeros(2))  # symmetric: a uniform guess is gray
    rgb = torch.rand(2, 3, 8, 8)
    luma = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    torch.testing.assert_close(_add_chroma(luma, rgb_to_chroma(rgb)), rgb)  # the exact inverse

    model = colornet(chroma_bins=4, temperature=0.5)
    randomised(model)
    gray = torch.rand(1, 3, 32, 32).mean(1, keepdim=True).expand(-1, 3, -1, -1)
    with torch.no_grad():  # a logit map that is 2 for one cell everywhere and 0 elsewhere
        model.tail.weight.zero_()
        model.tail.bias.zero_()
        model.tail.bias[13] = 2.0  # cell (3, 1): Cb 0.375, Cr -0.125
    model.train()
    y = model(gray)
    assert model.chroma_logits.shape == (1, 16, 4, 4)
    chroma = rgb_to_chroma(y)
    # softmax(logits / 0.5): e^4 on that cell against 1 on each of the 15 others, whose centres
    # sum to minus its own
    p = math.exp(4) / (math.exp(4) + 15)
    torch.testing.assert_close(chroma[0, :, 0, 0], (p - (1 - p) / 15) * centres[:, 13], atol=1e-5, rtol=0)
    model.eval()
    model(gray)
    assert model.chroma_logits is None  # nothing kept outside training


def test_resnet_global_context_starts_as_the_identity_reaches_far_and_tiles_like_the_whole_image():
    plain, model = net(1, unshuffle=2), net(1, unshuffle=2, global_context=True)
    assert count_parameters(model) == count_parameters(plain) + (8 * 8 + 8) + (8 * 16 + 16)  # Linear(c, c), Linear(c, 2c)
    x = torch.rand(1, 3, 40, 40)
    assert torch.equal(model(x), x)  # zero-initialised: the untrained net returns its input
    randomised(model)
    far = receptive_radius(plain) + 16
    image = torch.rand(1, 3, far + 32, far + 32)
    other = image.clone()
    other[..., far:, far:] = 1 - other[..., far:, far:]
    near = lambda m, t: m(t)[..., :8, :8]  # noqa: E731
    assert (near(model, image) - near(model, other)).abs().max() > 1e-4  # through the image mean only
    local = net(1, unshuffle=2)
    local.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("context")})
    torch.testing.assert_close(near(local, image), near(local, other))
    rgb = np.random.default_rng(2).integers(0, 256, (150, 131, 3), dtype=np.uint8)
    rgb[:50] = 128  # flat at the top: a tile's own mean differs from the image's
    whole = Engine(model, 1, 3, InferenceConfig(tile=None))(rgb)
    tiled = Engine(model, 1, 3, InferenceConfig(tile=64, batch=2))(rgb)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


@pytest.mark.parametrize("scale", [1, 4])
def test_hr_head_starts_at_the_baseline_then_learns_and_tiles_like_the_whole_image(scale):
    model = net(scale, hr_channels=4)
    x = torch.rand(2, 3, 12, 20)
    expected = x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    torch.testing.assert_close(model(x), expected)  # the zero last conv at the output resolution
    assert model.last_conv is model.up[-1] and model.tail.weight.abs().sum() > 0  # the tail keeps its init
    # parameters by hand: tail 8 -> 4 * scale², then 4 -> 4 and 4 -> 3 at the output resolution
    body = conv(3, 3, 8) + 2 * conv(3, 8, 8) + conv(3, 8, 8)
    assert count_parameters(model) == body + conv(3, 8, 4 * scale * scale) + conv(3, 4, 4) + conv(3, 4, 3)
    # One step moves the last conv; the next reaches the head.
    target = torch.rand_like(expected)
    (model(x) - target).abs().mean().backward()
    assert model.last_conv.weight.grad.abs().sum() > 0 and model.head.weight.grad.abs().sum() == 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    (model(x) - target).abs().mean().backward()
    assert model.head.weight.grad.abs().sum() > 0
    # Tiled inference still gives the whole image's output (the HR convs widen the reach).
    model = randomised(net(scale, hr_channels=4))
    image = np.random.default_rng(1).integers(0, 256, (61, 47, 3), dtype=np.uint8)
    whole = Engine(model, scale, 3, InferenceConfig(tile=None))(image)
    tiled = Engine(model, scale, 3, InferenceConfig(tile=24, batch=2))(image)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1
