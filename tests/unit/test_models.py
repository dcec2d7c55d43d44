"""The transformation networks: shapes, hand-counted parameters, the SR global skip, the output
range, gradient flow, batch independence of instance norm, and validation."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from training.models import TransformNet, build_transform_net, count_parameters
from training.options import TransformNetConfig

pytestmark = pytest.mark.unit

NORMS = ("batch", "instance")
UPSAMPLES = ("deconv", "resize_conv", "pixel_shuffle")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors: intra-op threads only add synchronisation cost (and stall on a busy machine).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small(**kw) -> TransformNetConfig:
    """Narrow nets keep the shape sweep fast; widths do not change any shape logic."""
    return TransformNetConfig(**{"channels": 4, "sr_channels": 8, "residual_blocks": 1, "global_skip": True, **kw})


# --- shapes -----------------------------------------------------------------------------------

# (scale, input height, input width): odd, non-square and multiple-of-4 sizes for scale 1.
SIZES = [(1, 37, 51), (1, 5, 8), (1, 16, 12), (4, 12, 9), (8, 5, 7)]


@pytest.mark.parametrize(
    "scale,h,w,norm,upsample,in_ch",
    [(s, h, w, n, u, c) for (s, h, w), n, u, c in itertools.product(SIZES, NORMS, UPSAMPLES, (1, 3))],
)
def test_output_shape(scale, h, w, norm, upsample, in_ch):
    net = build_transform_net(small(norm=norm, upsample=upsample, in_channels=in_ch), scale)
    x = torch.rand(2, in_ch, h, w)
    y = net(x)
    assert y.shape == (2, 3, h * scale, w * scale)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


def test_sr_body_runs_at_low_resolution_and_style_body_at_a_quarter():
    seen = {}
    for scale, (h, w) in ((4, (12, 9)), (1, (37, 51))):
        net = build_transform_net(small(), scale)
        net.body.register_forward_hook(lambda m, i, o, s=scale: seen.__setitem__(s, tuple(o.shape[-2:])))
        net(torch.rand(1, 3, h, w))
    assert seen[4] == (12, 9)
    assert seen[1] == (40 // 4, 52 // 4)  # 37x51 reflect-padded to 40x52


def test_upsampling_block_count_is_log2_scale():
    for scale, blocks in ((1, 2), (2, 1), (4, 2), (8, 3), (16, 4)):
        assert len(build_transform_net(small(), scale).up) == blocks


def test_zero_residual_blocks_is_allowed():
    net = build_transform_net(small(residual_blocks=0), 4)
    assert len(net.body) == 0
    assert net(torch.rand(1, 3, 6, 6)).shape == (1, 3, 24, 24)


# --- parameter counts, by hand ------------------------------------------------------------------


def conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout  # weights + bias


def norm(c: int) -> int:
    return 2 * c  # affine scale and shift (batch or instance norm alike)


def test_parameter_count_sr_x4():
    cfg = TransformNetConfig(sr_channels=64, residual_blocks=4, norm="batch", upsample="deconv")
    first = 9 * 9 * 3 * 64 + 64 + 2 * 64  # 9x9 conv 3->64, batch norm
    block = 2 * (3 * 3 * 64 * 64 + 64 + 2 * 64)  # two 3x3 convs 64->64, two norms
    up = 3 * 3 * 64 * 64 + 64 + 2 * 64  # ConvTranspose2d 64->64 k3, norm
    last = 9 * 9 * 64 * 3 + 3  # 9x9 conv 64->3, no norm
    assert (first, block, up, last) == (15744, 74112, 37056, 15555)
    expected = first + 4 * block + 2 * up + last
    assert expected == 401_859
    assert count_parameters(build_transform_net(cfg, 4)) == expected


def test_parameter_count_sr_x8_adds_one_upsampling_block():
    cfg = TransformNetConfig(sr_channels=64, residual_blocks=4, norm="batch", upsample="deconv")
    expected = 401_859 + (3 * 3 * 64 * 64 + 64 + 2 * 64)
    assert expected == 438_915
    assert count_parameters(build_transform_net(cfg, 8)) == expected


def test_parameter_count_style_net():
    cfg = TransformNetConfig(channels=32, residual_blocks=5, norm="instance", upsample="resize_conv")
    head = (9 * 9 * 3 * 32 + 32 + 2 * 32) + (3 * 3 * 32 * 64 + 64 + 2 * 64) + (3 * 3 * 64 * 128 + 128 + 2 * 128)
    block = 2 * (3 * 3 * 128 * 128 + 128 + 2 * 128)
    up = (3 * 3 * 128 * 64 + 64 + 2 * 64) + (3 * 3 * 64 * 32 + 32 + 2 * 32)  # nearest x2 has no weights
    last = 9 * 9 * 32 * 3 + 3
    assert (head, block, up, last) == (100608, 295680, 92448, 7779)
    expected = head + 5 * block + up + last
    assert expected == 1_679_235  # the same as pytorch/examples' TransformerNet
    assert count_parameters(build_transform_net(cfg, 1)) == expected


def test_parameter_count_pixel_shuffle_and_gray_input():
    cfg = TransformNetConfig(residual_blocks=4, upsample="pixel_shuffle", in_channels=1)
    expected = (
        conv(9, 1, 64) + norm(64)  # gray in
        + 4 * 2 * (conv(3, 64, 64) + norm(64))
        + 2 * (conv(3, 64, 4 * 64) + norm(64))  # conv to 4C, shuffle to C
        + conv(9, 64, 3)
    )
    assert count_parameters(build_transform_net(cfg, 4)) == expected


def test_batch_norm_running_stats_are_not_parameters():
    net = build_transform_net(TransformNetConfig(norm="batch"), 4)
    buffers = sum(b.numel() for b in net.buffers())
    assert buffers > 0
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())


# --- output -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale,in_ch,upsample", [(4, 3, "deconv"), (8, 1, "pixel_shuffle"), (2, 3, "resize_conv")])
def test_untrained_sr_net_with_skip_is_exactly_bicubic(scale, in_ch, upsample):
    net = build_transform_net(small(in_channels=in_ch, upsample=upsample), scale)
    x = torch.rand(2, in_ch, 7, 9)
    rgb = x.expand(-1, 3, -1, -1)
    expected = F.interpolate(rgb, scale_factor=scale, mode="bicubic", align_corners=False)
    out = net(x)
    assert torch.allclose(out, expected, atol=1e-6)
    # Bicubic overshoots at edges: the skip output is not clamped to [0, 1].
    assert out.min() < 0 or out.max() > 1


@pytest.mark.parametrize("in_ch", [3, 1])
def test_untrained_same_size_net_with_skip_is_exactly_its_input(in_ch):
    net = build_transform_net(small(global_skip=True, in_channels=in_ch), 1)
    x = torch.rand(2, in_ch, 13, 11)  # odd sizes: padded to a multiple of 4 inside, cropped back
    torch.testing.assert_close(net(x), x.expand(-1, 3, -1, -1), rtol=0, atol=1e-6)
    plain = build_transform_net(small(global_skip=False), 1)
    assert plain.out.conv.weight.abs().sum() > 0  # only a skip zero-initialises the output conv
    assert 0 <= plain(x[:, :1].expand(-1, 3, -1, -1)).min() and plain(x.expand(-1, 3, -1, -1)).max() <= 1


@pytest.mark.parametrize("scale,in_ch", [(1, 3), (1, 1), (4, 3), (8, 1)])
def test_output_without_skip_lies_in_unit_range(scale, in_ch):
    net = build_transform_net(small(global_skip=False, in_channels=in_ch), scale)
    # Make the pre-tanh output large so an unscaled tanh would leave [0, 1].
    with torch.no_grad():
        net.out.conv.weight.mul_(50.0)
    y = net(torch.rand(2, in_ch, 9, 10) * 4 - 2)
    assert y.min() >= 0 and y.max() <= 1
    assert y.min() < 0.05 and y.max() > 0.95  # the whole range is reachable


# --- gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scale,norm,upsample", [(1, "instance", "resize_conv"), (4, "batch", "deconv"), (8, "instance", "pixel_shuffle")]
)
def test_gradients_reach_the_first_layer(scale, norm, upsample):
    net = build_transform_net(small(norm=norm, upsample=upsample, global_skip=False), scale)
    x = torch.rand(2, 3, 8, 11)
    net(x).square().mean().backward()
    g = net.first_conv.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_skip_net_learns_the_output_conv_first_then_everything():
    net = build_transform_net(small(), 4)
    x, target = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    F.mse_loss(net(x), target).backward()
    assert net.out.conv.weight.grad.abs().sum() > 0
    assert net.first_conv.weight.grad.abs().sum() == 0  # below a zero conv: no gradient yet
    opt.step()
    opt.zero_grad()

    F.mse_loss(net(x), target).backward()
    assert net.first_conv.weight.grad.abs().sum() > 0


# --- batch independence -------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 4])
@pytest.mark.parametrize("train", [False, True])
def test_instance_norm_output_does_not_depend_on_the_rest_of_the_batch(scale, train):
    net = build_transform_net(small(norm="instance", global_skip=False), scale).train(train)
    a, b = torch.rand(1, 3, 9, 10), torch.rand(1, 3, 9, 10) * 3
    both = net(torch.cat([a, b]))
    assert torch.allclose(both[:1], net(a), atol=1e-6)
    assert torch.allclose(both[1:], net(b), atol=1e-6)


def test_batch_norm_mixes_the_batch_in_training_but_not_in_eval():
    net = build_transform_net(small(norm="batch", global_skip=False), 4)
    a, b = torch.rand(1, 3, 9, 10), torch.rand(1, 3, 9, 10) * 3
    with torch.no_grad():
        net.train()
        assert not torch.allclose(net(torch.cat([a, b]))[:1], net(a), atol=1e-4)
        net.eval()
        assert torch.allclose(net(torch.cat([a, b]))[:1], net(a), atol=1e-6)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [3, 0, -4, 32, 4.0, True])
def test_invalid_scale_is_refused(scale):
    with pytest.raises(ValueError, match=r"scale must be a power of two in 1, 2, 4, 8, 16; got"):
        build_transform_net(TransformNetConfig(), scale)
    with pytest.raises(ValueError, match="scale must be"):
        TransformNet(TransformNetConfig(), scale)


def test_config_rejects_unknown_keys_and_bad_values_and_is_frozen():
    with pytest.raises(ValidationError, match="extra"):
        TransformNetConfig(chanels=16)
    for bad in ({"norm": "layer"}, {"upsample": "bilinear"}, {"residual_blocks": 33}, {"residual_blocks": -1},
                {"in_channels": 2}, {"out_channels": 1}, {"channels": 0}):
        with pytest.raises(ValidationError):
            TransformNetConfig(**bad)
    cfg = TransformNetConfig()
    with pytest.raises(ValidationError):
        cfg.norm = "batch"
    assert cfg == TransformNetConfig.model_validate(cfg.model_dump())


def test_defaults_are_the_papers_widths():
    cfg = TransformNetConfig()
    assert (cfg.channels, cfg.sr_channels, cfg.residual_blocks) == (32, 64, 5)
    assert (cfg.norm, cfg.upsample, cfg.global_skip, cfg.in_channels, cfg.out_channels) == (
        "instance", "resize_conv", False, 3, 3)


def test_wrong_input_channels_or_tiny_input_is_refused():
    net = build_transform_net(small(in_channels=1), 4)
    with pytest.raises(ValueError, match="N x 1 x H x W"):
        net(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="too small"):
        net(torch.rand(1, 1, 4, 8))
    with pytest.raises(ValueError, match="too small"):
        build_transform_net(small(), 1)(torch.rand(1, 3, 16, 4))
