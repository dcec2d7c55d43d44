"""Fast style transfer trains as the paper's: the task's own net and loss, a few steps on real
content patches with the real VGG file; the output leaves its input and the style loss falls."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.loop import make_optimizer, train_step
from training.options import FeatureNetConfig, OptimConfig
from training.losses import PerceptualLoss
from training.tasks import TASKS
from training.vgg import load_feature_net
from tests.shared_data import DATASETS, WEIGHTS

pytestmark = pytest.mark.unit


def rgb(path: Path, size: int) -> torch.Tensor:
    with Image.open(path) as img:
        img = img.convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255.0)


def test_a_style_net_moves_away_from_its_input_and_lowers_the_style_loss():
    torch.manual_seed(0)
    entry = TASKS["style"]
    model_cfg, loss_cfg = entry.make_model_config({"channels": 8, "residual_blocks": 2}), entry.make_loss_config()
    net = load_feature_net(FeatureNetConfig(weights=str(WEIGHTS / "vgg_normalised_conv3_1.pth")), loss_cfg.needed_layers)
    loss_fn = PerceptualLoss(loss_cfg, net, rgb(DATASETS / "styles" / "candy.jpg", 96))
    content = torch.stack([rgb(DATASETS / "T91" / "HR" / f"t{i}.png", 48) for i in (1, 2, 3, 5)])
    held_out = rgb(DATASETS / "Set5" / "HR" / "bird.png", 48)[None]

    from training.models import build_transform_net

    model = build_transform_net(model_cfg, 1)
    optimizer, scheduler = make_optimizer(model, OptimConfig(steps=60, lr=1e-2, lr_schedule="constant"))

    def style_part(x: torch.Tensor) -> float:
        model.eval()
        with torch.no_grad():
            _, parts = loss_fn(model(x), x)
        model.train()
        return parts["style"]

    before = style_part(held_out)
    for _ in range(60):
        train_step(model, loss_fn, optimizer, scheduler, content, content, 1.0, None)
    after = style_part(held_out)
    model.eval()
    with torch.no_grad():
        moved = (model(held_out) - held_out).abs().mean().item()
    assert after < 0.5 * before, (before, after)
    assert moved > 0.05  # a stylised image, not the content image returned


def test_the_vgg16_profile_gives_the_papers_style_layers(tmp_path, monkeypatch):
    """PERCEPT_PROFILE=vgg16: torchvision's VGG-16 file is acquired and checked, and the style loss
    takes Gram matrices at relu1_2, relu2_2, relu3_3, relu4_3 (a random file of its layout here)."""
    from pipelines.common.params import load_config
    from tests.unit.test_vgg import VGG16_TO_CONV4_1, save_torchvision_prefix

    monkeypatch.setenv("PERCEPT_PROFILE", "vgg16")
    cfg = load_config()
    assert [w.name for w in cfg.acquire.weights] == ["vgg16-397923af.pth"]
    assert cfg.feature_net.weights == "data/weights/vgg16-397923af.pth"
    paper = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    convs = [*VGG16_TO_CONV4_1, (19, 512, 512), (21, 512, 512)]  # up to conv4_3
    fake = save_torchvision_prefix(tmp_path / "vgg16.pth", convs)
    for task in ("style_wave", "style_candy"):
        loss_cfg = cfg.task(task).loss
        net = load_feature_net(cfg.feature_net.model_copy(update={"weights": str(fake)}), loss_cfg.needed_layers)
        loss_fn = PerceptualLoss(loss_cfg, net, torch.rand(3, 64, 64))
        assert net.kind == "torchvision_vgg16" and loss_fn.style_layers == paper
        x = torch.rand(1, 3, 48, 48)
        _, parts = loss_fn(x.flip(-1), x)
        assert parts["style"] > 0 and parts["feature"] > 0
