"""The paper's losses on hand-made tensors (values worked out by hand), and the combined PerceptualLoss."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from training.losses import as_one_image, binomial_blur, chroma_bin_loss, colourfulness, ssim, PerceptualLoss, feature_reconstruction_loss, gram_matrix, pixel_loss, style_loss, subpixel_grid_loss, total_variation_loss
from training.options import FeatureNetConfig, LossConfig
from training.vgg import FeatureNet, load_feature_net
from tests.shared_data import DATASETS, WEIGHTS

pytestmark = pytest.mark.unit

REAL = WEIGHTS / "vgg_normalised_conv3_1.pth"  # read only
ALL = ("relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1")


@pytest.fixture(scope="module")
def random_net() -> FeatureNet:
    return load_feature_net(FeatureNetConfig(kind="random"), ALL)


def load_rgb(path: Path, size: int) -> torch.Tensor:
    a = np.array(Image.open(path).convert("RGB"))
    top, left = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
    return torch.from_numpy(a[top : top + size, left : left + size]).permute(2, 0, 1).float().div(255)


# --- the pure functions -------------------------------------------------------------------------


def test_gram_matrix_by_hand():
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # N=1, C=2, H=1, W=2
    # rows (1,2) and (3,4): 1+4=5, 3+8=11, 9+16=25; divided by C*H*W = 4
    assert torch.allclose(gram_matrix(f), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4)


def test_gram_matrix_is_float32_under_half_input():
    f = torch.full((1, 2, 64, 64), 16.0, dtype=torch.float16)  # raw sums reach 16*16*4096 > fp16 max
    g = gram_matrix(f)
    assert g.dtype == torch.float32 and torch.allclose(g, torch.full((1, 2, 2), 128.0))  # 256*4096/(2*4096)


def test_feature_reconstruction_loss_by_hand():
    a = torch.zeros(1, 2, 2, 2)
    assert feature_reconstruction_loss(a, a.clone()) == 0
    b = a.clone()
    b[0, 0, 0, 0], b[0, 1, 1, 0] = 2.0, -1.0
    assert feature_reconstruction_loss(a, b).item() == pytest.approx((4 + 1) / 8)  # ||a-b||^2 / (C*H*W)
    with pytest.raises(ValueError, match="shapes differ"):
        feature_reconstruction_loss(a, torch.zeros(1, 2, 2, 3))


def test_total_variation_by_hand():
    assert total_variation_loss(torch.full((2, 3, 5, 7), 0.3)) == 0
    step = torch.tensor([[[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]]])  # 1x1x2x4
    # vertical: 4 differences, all 0; horizontal: 6 differences, two of them 1 -> 1/3
    assert total_variation_loss(step).item() == pytest.approx(1 / 3)
    checker = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    assert total_variation_loss(checker).item() == pytest.approx(2.0)  # every neighbour differs by 1, both ways
    assert total_variation_loss(torch.tensor([[[[0.0, 1.0, 3.0]]]])).item() == pytest.approx(1.5)  # one row: (1+2)/2


def test_style_loss_by_hand():
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    same = {"relu1_1": gram_matrix(f)}
    assert style_loss({"relu1_1": f}, same, ["relu1_1"]) == 0
    zero_style = {"relu1_1": torch.zeros(1, 2, 2)}
    # ||G||_F^2 = (25 + 121 + 121 + 625) / 16 = 55.75
    assert style_loss({"relu1_1": f}, zero_style, ["relu1_1"]).item() == pytest.approx(55.75)
    # A batch of two against a batch-1 style Gram: the second output is zero, so the mean halves.
    batch = torch.cat([f, torch.zeros_like(f)])
    assert style_loss({"relu1_1": batch}, zero_style, ["relu1_1"]).item() == pytest.approx(55.75 / 2)
    # Layers add up.
    two = {"relu1_1": f, "relu2_2": 2 * f}
    grams = {"relu1_1": torch.zeros(1, 2, 2), "relu2_2": torch.zeros(1, 2, 2)}
    assert style_loss(two, grams, ["relu1_1", "relu2_2"]).item() == pytest.approx(55.75 * (1 + 16))


def test_pixel_losses_by_hand():
    a = torch.zeros(1, 1, 2, 2)
    b = torch.tensor([[[[1.0, -3.0], [0.0, 2.0]]]])
    assert pixel_loss(a, b, "l1").item() == pytest.approx((1 + 3 + 0 + 2) / 4)
    assert pixel_loss(a, b, "mse").item() == pytest.approx((1 + 9 + 0 + 4) / 4)
    # psnr: the mean over images of 10 log10(MSE): each image's -PSNR on the [0, 1] scale
    two_a, two_b = torch.cat([a, a]), torch.cat([b, a.clone()])  # the second image exact
    expected = (10 * math.log10((1 + 9 + 0 + 4) / 4 + 1e-8) + 10 * math.log10(1e-8)) / 2
    assert pixel_loss(two_a, two_b, "psnr").item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="unknown pixel loss"):
        pixel_loss(a, b, "huber")


# --- LossConfig ---------------------------------------------------------------------------------


def test_config_validation():
    with pytest.raises(ValidationError, match="all loss weights are 0"):
        LossConfig(feature_weight=0.0)
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        LossConfig(tv_weight=-1e-6)
    with pytest.raises(ValidationError):
        LossConfig(feature_layer="conv2_2")
    with pytest.raises(ValidationError):
        LossConfig(style_weight=1.0, style_layers=())
    with pytest.raises(ValidationError):
        LossConfig(pixel="huber")
    with pytest.raises(ValidationError):
        LossConfig(feature_wieght=1.0)
    with pytest.raises(ValidationError):
        LossConfig(feature_weight=float("inf"))


def test_config_says_what_it_needs():
    assert LossConfig().needs_features and LossConfig().needed_layers == ("relu2_2",)
    pixel_only = LossConfig(feature_weight=0.0, pixel_weight=1.0)
    assert not pixel_only.needs_features and pixel_only.needed_layers == ()
    style = LossConfig(style_weight=5.0, style_layers=("relu1_2", "relu2_2"))
    assert style.needed_layers == ("relu1_2", "relu2_2")
    assert LossConfig(style_weight=5.0).needed_layers is None  # every layer the network has


# --- PerceptualLoss -----------------------------------------------------------------------------


def test_gradients_reach_the_transformation_net_not_the_feature_net(random_net):
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    cfg = LossConfig(feature_weight=1.0, style_weight=1.0, tv_weight=0.1, pixel_weight=0.5)
    loss_fn = PerceptualLoss(cfg, random_net, style_image=torch.rand(3, 24, 24))
    x, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    total, parts = loss_fn(model(x), target)
    assert total.ndim == 0 and total.requires_grad
    assert set(parts) == {"feature", "style", "tv", "pixel", "total"}
    assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"), rel=1e-5)
    total.backward()
    assert model.weight.grad is not None and model.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in random_net.parameters())


def test_target_features_take_no_gradient(random_net):
    loss_fn = PerceptualLoss(LossConfig(), random_net)
    output, target = torch.rand(1, 3, 16, 16, requires_grad=True), torch.rand(1, 3, 16, 16, requires_grad=True)
    total, parts = loss_fn(output, target)
    total.backward()
    assert output.grad is not None and target.grad is None
    assert set(parts) == {"feature", "total"}


def test_feature_part_is_the_feature_loss_at_the_layer(random_net):
    loss_fn = PerceptualLoss(LossConfig(feature_layer="relu1_2"), random_net)
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    total, parts = loss_fn(a, b)
    with torch.no_grad():
        expect = feature_reconstruction_loss(random_net(a)["relu1_2"], random_net(b)["relu1_2"])
    assert total.item() == pytest.approx(expect.item(), rel=1e-5)
    assert loss_fn(a, a.clone())[1]["feature"] == 0


def test_weights_combine_linearly(random_net):
    a, b = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    _, one = PerceptualLoss(LossConfig(feature_weight=1.0, tv_weight=0.5), random_net)(a, b)
    _, two = PerceptualLoss(LossConfig(feature_weight=2.0, tv_weight=0.5), random_net)(a, b)
    assert two["feature"] == pytest.approx(2 * one["feature"], rel=1e-6)
    assert two["tv"] == pytest.approx(one["tv"])
    assert two["total"] == pytest.approx(one["total"] + one["feature"], rel=1e-6)
    assert one["tv"] == pytest.approx(0.5 * total_variation_loss(a).item(), rel=1e-6)


def test_style_grams_are_precomputed_for_every_network_layer(random_net):
    style = torch.rand(3, 20, 28)
    loss_fn = PerceptualLoss(LossConfig(feature_weight=0.0, style_weight=1.0), random_net, style_image=style)
    assert loss_fn.style_layers == ALL
    grams = loss_fn.style_grams
    assert grams["relu3_1"].shape == (1, 256, 256)
    with torch.no_grad():
        assert torch.allclose(grams["relu2_2"], gram_matrix(random_net(style[None])["relu2_2"]))
    # Style loss of the style image itself is zero (up to float rounding), whatever the batch size.
    _, itself = loss_fn(style[None].expand(2, -1, -1, -1), torch.rand(2, 3, 20, 28))
    _, other = loss_fn(torch.rand(2, 3, 20, 28), torch.rand(2, 3, 20, 28))
    assert itself["style"] < 1e-7 * other["style"]


def test_missing_pieces_are_clear_errors(random_net):
    with pytest.raises(ValueError, match="need a feature network"):
        PerceptualLoss(LossConfig(), None)
    with pytest.raises(ValueError, match="needs a style image"):
        PerceptualLoss(LossConfig(style_weight=1.0), random_net)
    shallow = load_feature_net(FeatureNetConfig(kind="random"), ["relu1_2"])
    with pytest.raises(ValueError, match="needs relu2_2 but the feature network returns only relu1_2"):
        PerceptualLoss(LossConfig(), shallow)
    # Pixel and TV alone need no network at all.
    total, parts = PerceptualLoss(LossConfig(feature_weight=0.0, pixel_weight=1.0, pixel="mse"), None)(
        torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    )
    assert parts == {"pixel": 1.0, "total": 1.0}


def test_train_mode_keeps_the_feature_net_in_eval(random_net):
    loss_fn = PerceptualLoss(LossConfig(), random_net)
    loss_fn.train()
    assert loss_fn.training and not random_net.training


def test_perceptual_loss_on_the_real_weights():
    """Real VGG features: 0 for the target itself, and more blur costs more."""
    net = load_feature_net(FeatureNetConfig(weights=str(REAL)), LossConfig(style_weight=1e3).needed_layers)
    style = load_rgb(DATASETS / "styles" / "the-wave.jpg", 64)
    loss_fn = PerceptualLoss(LossConfig(feature_weight=1.0, style_weight=1e3), net, style_image=style)
    target = load_rgb(DATASETS / "Set5" / "HR" / "butterfly.png", 64)[None]
    blur = lambda x, k: torch.nn.functional.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)  # noqa: E731
    assert loss_fn(target, target)[1]["feature"] == 0
    light, heavy = loss_fn(blur(target, 3), target)[1], loss_fn(blur(target, 7), target)[1]
    assert 0 < light["feature"] < heavy["feature"]
    # The style image itself matches its own Grams; the content image does not.
    assert loss_fn(style[None], target)[1]["style"] == pytest.approx(0.0, abs=1e-6)
    assert loss_fn(target, target)[1]["style"] > 0
    # A transformation net learns from it: one step of gradient descent lowers the loss.
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = blur(target, 5)
    first, _ = PerceptualLoss(LossConfig(), net)(model(x), target)
    first.backward()
    optimiser.step()
    second, _ = PerceptualLoss(LossConfig(), net)(model(x), target)
    assert second.item() < first.item()
    assert all(p.grad is None for p in net.parameters())


def test_feature_blur_hides_one_pixel_stripes_from_the_feature_loss_not_from_the_pixel_loss():
    """VGG's max-pooling reads +-e stripes as texture, so a plain feature loss rewards painting them
    (the perceptual SR grid); through the [1 2 1] blur the stripes are exactly invisible."""
    stripes = 0.03 * (-1.0) ** torch.arange(32)
    for pattern in (stripes.expand(32, 32), stripes[:, None].expand(32, 32)):  # columns, then rows
        assert binomial_blur(pattern.expand(1, 3, 32, 32)).abs().max() < 1e-7
    flat = torch.full((1, 3, 8, 8), 0.4)
    torch.testing.assert_close(binomial_blur(flat), flat)
    net = load_feature_net(FeatureNetConfig(weights=str(REAL)), ("relu2_2",))
    target = load_rgb(DATASETS / "Set5" / "HR" / "butterfly.png", 32)[None]
    striped = target + 0.03 * (-1.0) ** torch.arange(32)
    plain = PerceptualLoss(LossConfig(feature_weight=1.0, pixel_weight=1.0), net)(striped, target)[1]
    blurred = PerceptualLoss(LossConfig(feature_weight=1.0, pixel_weight=1.0, feature_blur=True), net)(striped, target)[1]
    assert plain["feature"] > 0.01 and blurred["feature"] < 1e-6 * plain["feature"]
    assert blurred["pixel"] == pytest.approx(plain["pixel"]) == pytest.approx(0.03, rel=1e-4)


def test_the_grid_loss_is_the_errors_part_at_the_upsamplers_period():
    """Worked by hand: an error of a at one of the 16 phases of a 4-pixel period has phase means
    a and 0 (15 times), mean a / 16, so (15a/16)^2 + 15 (a/16)^2 over 16 phases = 15 a^2 / 256.
    A photo's detail, a constant or another period's pattern barely count."""
    a = 0.1
    grid = torch.zeros(2, 3, 48, 64)
    grid[..., ::4, ::4] = a
    assert subpixel_grid_loss(grid, 4).item() == pytest.approx(15 * a * a / 256)
    assert subpixel_grid_loss(torch.full((1, 3, 32, 32), 0.3), 4).item() == pytest.approx(0, abs=1e-12)
    photo = load_rgb(DATASETS / "Set5" / "HR" / "butterfly.png", 96)[None]
    detail = photo - torch.nn.functional.avg_pool2d(photo, 3, 1, 1, count_include_pad=False)  # its high frequencies
    # detail that does not repeat: each phase mean averages 16 pixels, so about 1/16 of its energy
    # is left (the window's floor); a grid on top adds its own 15 a^2 / 256 to that
    floor = subpixel_grid_loss(detail, 4).item()
    assert floor < detail.square().mean().item() / 10
    with_grid = subpixel_grid_loss(detail + grid[:1, :, :32, :32].repeat(1, 1, 3, 3), 4).item()
    assert with_grid - floor == pytest.approx(15 * a * a / 256, rel=0.3)
    with pytest.raises(ValueError, match="multiple of the period"):
        subpixel_grid_loss(grid, 3)
    with pytest.raises(ValueError, match="upscales by 2 or more"):
        PerceptualLoss(LossConfig(pixel_weight=1.0, feature_weight=0.0, grid_weight=1.0), None, grid_period=1)
    parts = PerceptualLoss(LossConfig(pixel_weight=1.0, feature_weight=0.0, grid_weight=2.0), None, grid_period=4)(
        torch.zeros(2, 3, 48, 64) + grid, torch.zeros(2, 3, 48, 64))[1]
    assert parts["grid"] == pytest.approx(2 * 15 * a * a / 256)


def _to_unit(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0


def test_ssim_and_colourfulness_terms_are_the_evaluation_metrics():
    from training import metrics

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert abs(float(ssim(_to_unit(a), _to_unit(b))) - metrics.ssim(a, b)) < 1e-5
    assert float(ssim(_to_unit(a), _to_unit(a))) == pytest.approx(1.0, abs=1e-6)
    assert 255 * float(colourfulness(_to_unit(a))[0]) == pytest.approx(metrics.colourfulness(a), rel=1e-4)
    gray = np.repeat(a[..., :1], 3, axis=2)
    assert float(colourfulness(_to_unit(gray))[0]) < 1e-3


def test_ssim_and_colourfulness_parts_pull_the_way_they_should():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 24, 24)
    loss = PerceptualLoss(LossConfig(feature_weight=0, pixel_weight=0, ssim_weight=2.0, colourfulness_weight=0.5), None)
    total, parts = loss(target, target)
    assert set(parts) == {"ssim", "colour", "total"} and float(total) == pytest.approx(0.0, abs=1e-5)
    gray = target.mean(1, keepdim=True).repeat(1, 3, 1, 1).requires_grad_(True)
    total, parts = loss(gray, target)
    assert parts["ssim"] > 0 and parts["colour"] > 0
    total.backward()
    assert gray.grad.abs().sum() > 0
    with pytest.raises(ValidationError, match="all loss weights are 0"):
        LossConfig(feature_weight=0, ssim_weight=0, colourfulness_weight=0)


def test_batch_colourfulness_sees_the_spread_between_patches_that_the_per_patch_term_misses():
    from training import metrics

    # Two flat patches, one red and one blue: each alone has no spread, the pair has plenty.
    red, blue = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    red[:, 0], blue[:, 2] = 0.8, 0.8
    target = torch.cat([red, blue])
    whole = np.concatenate([np.full((8, 8, 3), (204, 0, 0), np.uint8), np.full((8, 8, 3), (0, 0, 204), np.uint8)])
    assert 255 * float(colourfulness(as_one_image(target))[0]) == pytest.approx(metrics.colourfulness(whole), rel=1e-4)
    # Both patches one purple: each patch's colourfulness drops, the batch's drops far more.
    purple = target.mean(0, keepdim=True).expand(2, -1, -1, -1).clone().requires_grad_(True)
    per_patch = LossConfig(feature_weight=0, colourfulness_weight=1.0)
    batch = LossConfig(feature_weight=0, batch_colourfulness_weight=1.0)
    _, patch_parts = PerceptualLoss(per_patch, None)(purple, target)
    total, batch_parts = PerceptualLoss(batch, None)(purple, target)
    assert set(batch_parts) == {"batch_colour", "total"}
    assert float(batch_parts["batch_colour"]) > 1.5 * float(patch_parts["colour"]) > 0
    total.backward()
    assert purple.grad.abs().sum() > 0
    assert float(PerceptualLoss(batch, None)(target, target)[0]) == pytest.approx(0.0, abs=1e-6)


def test_pixel_only_steps_train_on_l1_alone_then_on_every_term(random_net):
    cfg = LossConfig(feature_weight=1.0, pixel_weight=0.1, pixel_only_steps=3)
    loss = PerceptualLoss(cfg, random_net)
    out, target = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    early_total, early = loss(out, target, step=2)
    assert set(early) == {"pixel", "total"} and float(early_total) == pytest.approx(float((out - target).abs().mean()))
    _, late = loss(out, target, step=3)
    assert set(late) == {"feature", "pixel", "total"}
    assert late == loss(out, target)[1]  # no step: every term


def _flat(rgb: tuple[float, float, float], n: int = 1, side: int = 16) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(n, -1, side, side).clone()


def test_chroma_bin_loss_is_least_at_the_targets_bins_and_trains_logits_to_its_colour():
    from training.models import chroma_bin_centres, rgb_to_chroma

    target = _flat((0.8, 0.3, 0.2))  # an orange: Cb -0.22, Cr 0.28
    uniform = torch.zeros(1, 64, 2, 2)
    assert float(chroma_bin_loss(uniform, target)) == pytest.approx(math.log(64), rel=1e-5)
    with pytest.raises(ValueError, match="do not tile"):
        chroma_bin_loss(torch.zeros(1, 64, 3, 2), target)
    # gradient descent on the logits alone decodes to the target's chroma, within a cell
    logits = torch.zeros(1, 64, 2, 2, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.1)
    for _ in range(200):
        optimiser.zero_grad()
        loss = chroma_bin_loss(logits, target)
        loss.backward()
        optimiser.step()
    assert float(loss.detach()) < 0.9 * math.log(64)
    decoded = torch.einsum("nkhw,ck->nchw", torch.softmax(logits.detach(), 1), chroma_bin_centres(8))
    want = rgb_to_chroma(target)[:, :, :2, :2]
    assert (decoded - want).abs().max() < 1 / 8
    # a logit map sharper at the target's own bin beats a uniform one
    sharp = torch.zeros(1, 64, 2, 2)
    nearest = ((chroma_bin_centres(8) - want[0, :, 0, 0, None]) ** 2).sum(0).argmin()
    sharp[:, nearest] = 3.0
    assert float(chroma_bin_loss(sharp, target)) < float(chroma_bin_loss(uniform, target))


def test_chroma_bin_rebalancing_weighs_rare_colours_up_and_averages_one():
    target = torch.cat([_flat((0.5, 0.5, 0.5), 9), _flat((0.9, 0.1, 0.1), 1)])  # nine gray images, one red
    uniform = torch.zeros(10, 64, 2, 2)  # the same CE (log 64) everywhere: weights that average 1 keep it
    assert float(chroma_bin_loss(uniform, target, 0.5)) == pytest.approx(math.log(64), rel=1e-5)
    good = torch.zeros(10, 64, 2, 2)

    def cost(image: int, r: float) -> float:  # what pushing one image's guess to a far cell costs
        worse = good.clone()
        worse[image, 0] = 5.0  # cell 0: Cb and Cr both -0.44, far from gray and from red
        return float(chroma_bin_loss(worse, target, r) - chroma_bin_loss(good, target, r))

    assert cost(9, 0.5) > 1.5 * cost(9, 0.0) > 0  # the rare red counts more with rebalancing
    assert 0 < cost(0, 0.5) < cost(0, 0.0)  # one of the nine gray images counts less


def test_chroma_bin_weight_needs_the_logits_and_trains_a_colornet(random_net):
    from training.loop import make_optimizer, train_step
    from training.options import OptimConfig
    from training.models import build_transform_net
    from training.options import ColorNetConfig

    cfg = LossConfig(feature_weight=0, chroma_bin_weight=1.0, chroma_bin_rebalance=0.5)
    loss = PerceptualLoss(cfg, None)
    target = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="chroma_bins > 0"):
        loss(target, target)
    torch.manual_seed(0)
    model = build_transform_net(ColorNetConfig(channels=8, residual_blocks=1, chroma_bins=6), 1)
    optimizer, scheduler = make_optimizer(model, OptimConfig(lr=1e-2, steps=20, warmup_steps=0))
    gray = target.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    first = train_step(model, loss, optimizer, scheduler, gray, target, None).losses
    for _ in range(19):
        last = train_step(model, loss, optimizer, scheduler, gray, target, None).losses
    assert set(first) == {"chroma_bins", "total"}
    assert first["total"] == pytest.approx(math.log(36), rel=1e-4)  # zero tail: uniform over 6 x 6 bins
    assert last["total"] < 0.9 * first["total"]


def test_chroma_bin_training_repeats_bit_for_bit():
    """Two trainings of the default colorize recipe (bins, rebalancing) from one seed end with the
    same weights: nothing in the loss draws or reduces out of order, so the run's figures repeat."""
    from training.loop import make_optimizer, train_step
    from training.options import OptimConfig
    from training.models import build_transform_net
    from training.options import ColorNetConfig
    from training.tasks import TASKS

    loss = PerceptualLoss(LossConfig(**{**TASKS["colorize"].loss_defaults, "feature_weight": 0.0}), None)
    assert loss.cfg.chroma_bin_weight > 0 and loss.cfg.chroma_bin_rebalance > 0

    def trained() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_transform_net(ColorNetConfig(channels=8, residual_blocks=1, chroma_bins=6), 1)
        optimizer, scheduler = make_optimizer(model, OptimConfig(lr=1e-2, steps=6, warmup_steps=0))
        target = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        gray = target.mean(1, keepdim=True).expand(-1, 3, -1, -1)
        for _ in range(6):
            train_step(model, loss, optimizer, scheduler, gray, target, None)
        return {k: v.clone() for k, v in model.state_dict().items()}

    first, second = trained(), trained()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(0)
    untrained = build_transform_net(ColorNetConfig(channels=8, residual_blocks=1, chroma_bins=6), 1).state_dict()
    assert not all(torch.equal(first[k], untrained[k]) for k in first)  # it did train
