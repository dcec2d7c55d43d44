"""The task registry: the tasks the product promises, and how a new one is added."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from training import degradations as deg
from training.realworld import SecondOrder
from training.tasks import TASKS, Task, get_task, register

pytestmark = pytest.mark.unit


def test_the_promised_tasks_are_registered_with_their_degradations():
    expected = {
        "sr_x4": (deg.BicubicDownscale, 4),
        "sr_x8": (deg.BicubicDownscale, 8),
        "denoise": (deg.GaussianNoise, 1),
        "deblur": (deg.GaussianBlur, 1),
        "jpeg": (deg.JpegCompression, 1),
        "colorize": (deg.Grayscale, 1),
        "sr_real": (SecondOrder, 4),
        "style": (deg.Identity, 1),
    }
    assert set(expected) <= set(TASKS)
    for name, (cls, scale) in expected.items():
        d = TASKS[name].make_degradation()
        assert isinstance(d, cls), name
        assert d.input_scale == scale, name
    # Restoration is blind by default: one model for the range of levels people meet.
    assert TASKS["denoise"].make_degradation().levels == (0.0, 50.0)
    assert TASKS["jpeg"].make_degradation().levels == (10.0, 95.0)
    assert TASKS["deblur"].make_degradation().levels == (0.5, 3.0)
    assert TASKS["jpeg"].eval_levels == (10, 30, 60, 90) and TASKS["denoise"].eval_levels == (10, 25, 50)


def test_params_override_registry_defaults():
    d = TASKS["sr_x4"].make_degradation({"blur_sigma": 1.0})
    assert d.scale == 4 and d.blur_sigma == 1.0


def test_get_task_lists_alternatives():
    assert get_task("sr_x4").name == "sr_x4"
    with pytest.raises(KeyError, match="registered tasks: .*sr_x4"):
        get_task("sr_x3")


def test_registering_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register(Task("sr_x4", "again", deg.BicubicDownscale))


def test_a_new_task_is_one_entry(monkeypatch):
    # A new task needs only its registry entry; config validation and pairs pick it up.
    from pipelines.common import params as config_mod
    from training.pairs import train_pair

    monkeypatch.setitem(TASKS, "sr_x2", Task("sr_x2", "2x SR", deg.BicubicDownscale, {"scale": 2}))
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    raw["tasks"]["sr_x2"] = {"patch_size": 32, "patches_per_image": 1}
    params = config_mod.parse_config(raw).task("sr_x2")
    assert params.degradation.input_scale == 2
    pair = train_pair(np.zeros((40, 40, 3), np.uint8), params.degradation, params.patch_size, seed=0)
    assert pair.input.shape == (16, 16, 3)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_degrades_builds_and_takes_one_training_step(name):
    import torch

    from training.loop import make_optimizer, to_model_input, train_step
    from training.losses import PerceptualLoss
    from training.models import build_transform_net
    from training.pairs import train_pair
    from training.vgg import load_feature_net
    from training.options import FeatureNetConfig

    entry = TASKS[name]
    degradation, loss_cfg = entry.make_degradation(), entry.make_loss_config()
    image = np.random.default_rng(0).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    pairs = [train_pair(image, degradation, 64, seed=s) for s in range(2)]
    scale = degradation.input_scale
    assert pairs[0].input.shape[:2] == (64 // scale, 64 // scale) and pairs[0].target.shape == (64, 64, 3)

    torch.manual_seed(0)
    model = build_transform_net(entry.make_model_config({"in_channels": degradation.input_channels}), scale)
    inputs = to_model_input(torch.from_numpy(np.stack([p.input for p in pairs])), degradation.input_channels, torch.device("cpu"), False)
    targets = to_model_input(torch.from_numpy(np.stack([p.target for p in pairs])), 3, torch.device("cpu"), False)
    assert model(inputs).shape == targets.shape

    feature_net = load_feature_net(FeatureNetConfig(kind="random"), loss_cfg.needed_layers) if loss_cfg.needs_features else None
    style = torch.rand(1, 3, 32, 32) if loss_cfg.style_weight > 0 else None
    loss_fn = PerceptualLoss(loss_cfg, feature_net, style, grid_period=scale)
    optimizer, scheduler = make_optimizer(model, entry.make_optim_config())
    before = [p.detach().clone() for p in model.parameters()]
    result = train_step(model, loss_fn, optimizer, scheduler, inputs, targets, 1.0, None)
    assert np.isfinite(result.losses["total"]) and result.losses["total"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_a_few_dozen_steps_on_a_fixed_batch_lower_every_tasks_loss(name):
    """Each registry entry's own network, loss and optimiser (at its learning rate) learn: the loss
    on one fixed batch falls within 40 steps. Nets are narrowed to keep it fast; shapes are theirs."""
    import torch

    from training.loop import make_optimizer, to_model_input, train_step
    from training.losses import PerceptualLoss
    from training.models import build_transform_net, init_encoder
    from training.pairs import train_pair
    from training.vgg import load_feature_net
    from training.options import FeatureNetConfig

    entry = TASKS[name]
    degradation, loss_cfg = entry.make_degradation(), entry.make_loss_config()
    rng = np.random.default_rng(0)
    # a smooth colourful image (random walks), so colour, edges and style have something to act on
    image = np.clip(np.cumsum(rng.integers(-9, 10, (96, 96, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    pairs = [train_pair(image, degradation, 64, seed=s) for s in range(4)]
    scale = degradation.input_scale
    torch.manual_seed(0)
    narrow = {"johnson": {"channels": 8, "residual_blocks": 1}}.get(entry.model_defaults.get("arch", "johnson"),
                                                                   {"channels": 16, "residual_blocks": 1})
    model = build_transform_net(entry.make_model_config({**narrow, "in_channels": degradation.input_channels}), scale)
    feature_net = load_feature_net(FeatureNetConfig(kind="random"), None)
    init_encoder(model, feature_net)
    device = torch.device("cpu")
    inputs = to_model_input(torch.from_numpy(np.stack([p.input for p in pairs])), degradation.input_channels, device, False)
    targets = to_model_input(torch.from_numpy(np.stack([p.target for p in pairs])), 3, device, False)
    style = torch.rand(1, 3, 48, 48) if loss_cfg.style_weight > 0 else None
    loss_fn = PerceptualLoss(loss_cfg, feature_net if loss_cfg.needs_features else None, style, grid_period=scale)
    optimizer, scheduler = make_optimizer(model, entry.make_optim_config({"steps": 40, "warmup_steps": 0}))
    losses = [train_step(model, loss_fn, optimizer, scheduler, inputs, targets, 1.0, None).losses["total"] for _ in range(40)]
    assert np.isfinite(losses).all()
    # Restoration nets start at their baseline (a zero-initialised tail), so a few per cent is what
    # 40 steps on 4 patches buy; a net that did not learn stays at its first loss.
    assert min(losses[-5:]) < 0.98 * losses[0], f"{name}: {losses[0]:.4g} -> {losses[-5:]}"
