"""The adversarial term of perceptual SR: a discriminator that judges every pixel real or made,
and the relativistic average GAN loss (ESRGAN, Wang et al. 2018) that trains it and the network.

The discriminator is Real-ESRGAN's U-Net with spectral norm (Wang et al. 2021, also
traiNNer-redux's default): a per-pixel verdict gives the generator a gradient at every texture,
not one number per patch, and spectral norm keeps the discriminator from overpowering a
generator that trains for minutes. The relativistic loss asks whether a real patch looks more
real than the made ones on average, and the other way round, so both images of the pair carry
the generator's gradient. Pure torch: ``training.loop.train_step`` calls ``Adversary``, and its
state travels in the training checkpoint with the generator's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm
from training.options import GanConfig


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's discriminator: three stride-2 convs down, three bilinear x2 up with skips,
    two more convs, one logit per pixel; spectral norm on every conv but the first and last.
    Inputs whose sides are not multiples of 8 are reflect-padded."""

    def __init__(self, in_channels: int = 3, features: int = 32) -> None:
        super().__init__()
        f, sn = features, spectral_norm
        self.conv0 = nn.Conv2d(in_channels, f, 3, 1, 1)
        self.down = nn.ModuleList([sn(nn.Conv2d(f, 2 * f, 4, 2, 1, bias=False)),
                                   sn(nn.Conv2d(2 * f, 4 * f, 4, 2, 1, bias=False)),
                                   sn(nn.Conv2d(4 * f, 8 * f, 4, 2, 1, bias=False))])
        self.up = nn.ModuleList([sn(nn.Conv2d(8 * f, 4 * f, 3, 1, 1, bias=False)),
                                 sn(nn.Conv2d(4 * f, 2 * f, 3, 1, 1, bias=False)),
                                 sn(nn.Conv2d(2 * f, f, 3, 1, 1, bias=False))])
        self.extra = nn.ModuleList([sn(nn.Conv2d(f, f, 3, 1, 1, bias=False)), sn(nn.Conv2d(f, f, 3, 1, 1, bias=False))])
        self.out = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % 8, -w % 8
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        skips = [F.leaky_relu(self.conv0(x), 0.2)]
        for conv in self.down:
            skips.append(F.leaky_relu(conv(skips[-1]), 0.2))
        y = skips.pop()
        for conv in self.up:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = F.leaky_relu(conv(y), 0.2) + skips.pop()
        for conv in self.extra:
            y = F.leaky_relu(conv(y), 0.2)
        return self.out(y)[..., :h, :w]


def relativistic_loss(real_logits: Tensor, fake_logits: Tensor, for_generator: bool) -> Tensor:
    """ESRGAN's relativistic average loss: real should look more real than the fakes on average
    (and the fakes less real than the reals) for the discriminator; the reverse for the generator."""
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    real_label, fake_label = (0.0, 1.0) if for_generator else (1.0, 0.0)
    bce = F.binary_cross_entropy_with_logits
    return 0.5 * (bce(real_rel, torch.full_like(real_rel, real_label)) + bce(fake_rel, torch.full_like(fake_rel, fake_label)))


class Adversary:
    """The discriminator with its optimiser: ``generator_loss`` for the network's step (the
    discriminator held fixed), ``step`` to train the discriminator on that step's output."""

    def __init__(self, cfg: GanConfig, device: torch.device | str = "cpu", net: nn.Module | None = None) -> None:
        self.cfg = cfg
        self.net = net if net is not None else UNetDiscriminatorSN(3, cfg.features).to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, betas=(0.9, 0.99))

    def generator_loss(self, fake: Tensor, real: Tensor) -> Tensor:
        """The weighted adversarial term of the network's loss (gradients reach ``fake`` only)."""
        self.net.requires_grad_(False)
        try:
            real_logits = self.net(real).detach()
            return self.cfg.weight * relativistic_loss(real_logits, self.net(fake), for_generator=True)
        finally:
            self.net.requires_grad_(True)

    def step(self, fake: Tensor, real: Tensor, autocast_dtype: torch.dtype | None = None) -> float:
        """One discriminator update on a detached batch of made and real images; its loss."""
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(real.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            loss = relativistic_loss(self.net(real).float(), self.net(fake.detach()).float(), for_generator=False)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        net = self.net.module if hasattr(self.net, "module") else self.net
        return {"net": net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        net = self.net.module if hasattr(self.net, "module") else self.net
        net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
