"""The training step, schedule and checkpoint round trip, on a tiny network (no Ray)."""

import copy

import pytest
import torch

from training.loop import WeightAverage, checkpoint_state, lr_factor, make_optimizer, restore_state, to_model_input, train_step
from training.options import LossConfig, OptimConfig, TransformNetConfig
from training.losses import PerceptualLoss
from training.models import build_transform_net

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_sr():
    torch.manual_seed(0)
    return build_transform_net(TransformNetConfig(sr_channels=8, residual_blocks=1, norm="instance"), scale=2)


def batch():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(4, 3, 16, 16, generator=g)
    return torch.nn.functional.avg_pool2d(target, 2), target


def test_warmup_then_cosine_to_one_percent():
    cfg = OptimConfig(steps=110, warmup_steps=10, lr_schedule="cosine")
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(110, cfg) == pytest.approx(0.01)
    assert lr_factor(50, OptimConfig(steps=100, lr_schedule="constant")) == 1.0


def test_steps_lower_the_loss_on_a_fixed_batch():
    model = tiny_sr()
    loss_fn = PerceptualLoss(LossConfig(pixel_weight=1.0, feature_weight=0.0), None)
    optimizer, scheduler = make_optimizer(model, OptimConfig(steps=40, lr=3e-3, lr_schedule="constant"))
    x, y = batch()
    first = train_step(model, loss_fn, optimizer, scheduler, x, y, grad_clip=1.0)
    for _ in range(39):
        last = train_step(model, loss_fn, optimizer, scheduler, x, y, grad_clip=1.0)
    assert last.losses["total"] < 0.7 * first.losses["total"]
    assert first.lr == pytest.approx(3e-3) and first.grad_norm > 0


def test_restored_checkpoint_continues_exactly():
    x, y = batch()
    loss_fn = PerceptualLoss(LossConfig(pixel_weight=1.0, feature_weight=0.0), None)
    cfg = OptimConfig(steps=10, lr=1e-3, warmup_steps=2)

    model = tiny_sr()
    optimizer, scheduler = make_optimizer(model, cfg)
    for _ in range(3):
        train_step(model, loss_fn, optimizer, scheduler, x, y, grad_clip=1.0)
    state = copy.deepcopy(checkpoint_state(model, optimizer, scheduler, 3, {"task": "t"}))
    for _ in range(2):
        train_step(model, loss_fn, optimizer, scheduler, x, y, grad_clip=1.0)

    resumed = tiny_sr()
    opt2, sched2 = make_optimizer(resumed, cfg)
    assert restore_state(state, resumed, opt2, sched2) == 3
    for _ in range(2):
        train_step(resumed, loss_fn, opt2, sched2, x, y, grad_clip=1.0)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_weight_average_follows_the_recurrence_and_skips_frozen_weights():
    model = tiny_sr()
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    average = WeightAverage(model, decay=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    trained = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in trained.items():
            if p.requires_grad:
                p.add_(1.0)
    average.update()  # first update: decay min(0.5, 2 / 11) = 2/11 of the old average kept
    state = average.averaged_state(model)
    name = next(n for n, p in trained.items() if p.requires_grad)
    assert torch.allclose(state[name], start[name] + 9 / 11)
    frozen_name = next(n for n, p in trained.items() if not p.requires_grad)
    assert frozen_name not in average.averages and torch.equal(state[frozen_name], start[frozen_name])
    gap = 2 / 11
    for t in range(2, 22):  # the decay ramps (1 + t) / (10 + t) up to 0.5, then keeps it
        average.update()
        gap *= min(0.5, (1 + t) / (10 + t))
    assert gap < 1e-5
    assert torch.allclose(average.averaged_state(model)[name], start[name] + 1.0 - gap, atol=1e-6)


def test_checkpoint_with_average_saves_the_average_and_resumes_from_the_last_weights():
    x, y = batch()
    loss_fn = PerceptualLoss(LossConfig(pixel_weight=1.0, feature_weight=0.0), None)
    cfg = OptimConfig(steps=10, lr=1e-3, ema_decay=0.9)

    def run(model, optimizer, scheduler, average, steps):
        for _ in range(steps):
            train_step(model, loss_fn, optimizer, scheduler, x, y, grad_clip=1.0)
            average.update()

    model = tiny_sr()
    optimizer, scheduler = make_optimizer(model, cfg)
    average = WeightAverage(model, cfg.ema_decay)
    run(model, optimizer, scheduler, average, 3)
    state = copy.deepcopy(checkpoint_state(model, optimizer, scheduler, 3, {}, average))
    name = next(iter(average.averages))
    assert not torch.equal(state["model"][name], state["last_model"][name])  # the average, not the last step
    run(model, optimizer, scheduler, average, 2)

    resumed = tiny_sr()
    opt2, sched2 = make_optimizer(resumed, cfg)
    average2 = WeightAverage(resumed, cfg.ema_decay)
    assert restore_state(state, resumed, opt2, sched2, average2) == 3
    run(resumed, opt2, sched2, average2, 2)
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    for k in average.averages:
        assert torch.equal(average.averages[k], average2.averages[k])


def test_an_averaged_run_resumed_from_a_plain_checkpoint_starts_its_average_there():
    x, y = batch()
    loss_fn = PerceptualLoss(LossConfig(pixel_weight=1.0, feature_weight=0.0), None)
    model = tiny_sr()
    optimizer, scheduler = make_optimizer(model, OptimConfig(steps=10))
    for _ in range(3):
        train_step(model, loss_fn, optimizer, scheduler, x, y, grad_clip=1.0)
    state = copy.deepcopy(checkpoint_state(model, optimizer, scheduler, 3, {}))

    resumed = tiny_sr()
    opt2, sched2 = make_optimizer(resumed, OptimConfig(steps=10, ema_decay=0.9))
    average = WeightAverage(resumed, 0.9)  # made from the fresh weights, before the restore
    assert restore_state(state, resumed, opt2, sched2, average) == 3
    for name, value in average.averaged_state(resumed).items():
        assert torch.equal(value, state["model"][name])


def test_model_input_conversion():
    images = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)  # N=1, H=1, W=1, C=3
    x = to_model_input(images, 3, torch.device("cpu"), channels_last=False)
    assert x.shape == (1, 3, 1, 1) and x.flatten().tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    gray = to_model_input(images, 1, torch.device("cpu"), channels_last=False)
    assert gray.shape == (1, 1, 1, 1)
