"""The adversarial term: the U-Net discriminator's shapes and spectral norm, the relativistic loss,
a discriminator that learns on a fixed batch, and its state resumed with the network's."""

import pytest
import torch

from training.adversarial import Adversary, UNetDiscriminatorSN, relativistic_loss
from training.options import GanConfig, LossConfig, OptimConfig, ResNetConfig
from training.loop import checkpoint_state, make_optimizer, restore_state, train_step
from training.losses import PerceptualLoss
from training.models import ResNet

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("h, w", [(32, 48), (37, 29)])
def test_the_discriminator_gives_one_logit_per_pixel(h, w):
    torch.manual_seed(0)
    disc = UNetDiscriminatorSN(3, 8)
    assert disc(torch.rand(2, 3, h, w)).shape == (2, 1, h, w)


def test_spectral_norm_bounds_each_normalised_conv():
    torch.manual_seed(0)
    disc = UNetDiscriminatorSN(3, 8).train()
    x = torch.rand(1, 3, 32, 32)
    for _ in range(30):  # the power iteration converges over forward passes
        disc(x)
    disc.eval()
    with torch.no_grad():
        for conv in [*disc.down, *disc.up, *disc.extra]:
            sigma = float(torch.linalg.matrix_norm(conv.weight.reshape(conv.weight.shape[0], -1), ord=2))
            assert sigma == pytest.approx(1.0, abs=0.05)


def test_relativistic_loss_is_low_when_reals_look_more_real():
    real, fake = torch.full((4, 1, 8, 8), 3.0), torch.full((4, 1, 8, 8), -3.0)
    d_good = float(relativistic_loss(real, fake, for_generator=False))
    assert d_good < 0.01 < float(relativistic_loss(fake, real, for_generator=False))
    # the generator wants the opposite ranking
    assert float(relativistic_loss(real, fake, for_generator=True)) > 5
    equal = float(relativistic_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), for_generator=False))
    assert equal == pytest.approx(0.693147, abs=1e-5)


def test_a_few_discriminator_steps_lower_its_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    real = torch.rand(4, 3, 32, 32)
    fake = torch.nn.functional.avg_pool2d(real, 3, 1, 1)  # blurred: what an L1-trained SR net gives
    adversary = Adversary(GanConfig(weight=0.1, features=8, lr=1e-3))
    losses = [adversary.step(fake, real) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0]
    assert losses[0] == pytest.approx(0.693, abs=0.05)  # an untrained judge cannot tell them apart


def test_the_gan_term_joins_the_loss_after_the_pixel_only_steps_and_the_state_resumes():
    torch.manual_seed(0)
    model = ResNet(ResNetConfig(channels=8, residual_blocks=1), 1)
    loss_fn = PerceptualLoss(LossConfig(pixel_weight=1.0, feature_weight=0.0, pixel_only_steps=2,
                                        gan=GanConfig(weight=0.1, features=8)), None)
    optim = OptimConfig(steps=6, lr=1e-3)
    optimizer, scheduler = make_optimizer(model, optim)
    adversary = Adversary(loss_fn.cfg.gan)
    x, y = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    first = train_step(model, loss_fn, optimizer, scheduler, x, y, 1.0, step=0, adversary=adversary)
    assert "gan" not in first.losses and "disc" not in first.losses  # a PSNR-led start
    before = {k: v.clone() for k, v in adversary.net.state_dict().items()}
    later = train_step(model, loss_fn, optimizer, scheduler, x, y, 1.0, step=2, adversary=adversary)
    assert later.losses["gan"] > 0 and later.losses["disc"] > 0
    assert later.losses["total"] == pytest.approx(later.losses["pixel"] + later.losses["gan"], rel=1e-5)
    assert any(not torch.equal(before[k], v) for k, v in adversary.net.state_dict().items())

    state = checkpoint_state(model, optimizer, scheduler, 3, {}, None, adversary)
    fresh = Adversary(loss_fn.cfg.gan, net=UNetDiscriminatorSN(3, 8))
    model2 = ResNet(ResNetConfig(channels=8, residual_blocks=1), 1)
    optimizer2, scheduler2 = make_optimizer(model2, optim)
    assert restore_state(state, model2, optimizer2, scheduler2, None, fresh) == 3
    for k, v in adversary.net.state_dict().items():
        assert torch.equal(fresh.net.state_dict()[k], v)
    assert fresh.optimizer.state_dict()["state"].keys() == adversary.optimizer.state_dict()["state"].keys()
    # both resumed the same way: their next steps agree
    a = adversary.step(model(x).detach(), y)
    b = fresh.step(model2(x).detach(), y)
    assert a == pytest.approx(b, rel=1e-5)
