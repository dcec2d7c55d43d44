"""What a task reads from files besides its own weights: the feature network (for its loss, and for
a colornet's encoder) and its style image. The train stage, the evaluate stage and the GPU check
build the same pieces here."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.images import load_style_image
from training.losses import PerceptualLoss
from training.models import init_encoder
from training.options import FeatureNetConfig
from training.vgg import load_feature_net


def task_loss(params, feature_net: FeatureNetConfig, root: Path = Path("."), device: torch.device | str = "cpu") -> PerceptualLoss:
    """The task block's ``PerceptualLoss`` on ``device``: its feature network when the loss needs
    one, its style image (a path relative to ``root``) when it has a style term."""
    net = load_feature_net(feature_net, params.loss.needed_layers).to(device) if params.loss.needs_features else None
    style = None
    if params.loss.style_weight > 0:
        style = load_style_image(Path(root) / params.options.style_image, params.options.style_size).to(device)
    return PerceptualLoss(params.loss, net, style, grid_period=params.degradation.input_scale).to(device)


def init_pretrained(model: nn.Module, feature_net: FeatureNetConfig) -> nn.Module:
    """A model that embeds the feature network (colornet's encoder) starts from its weights."""
    encoder = getattr(model, "encoder", None)
    if encoder is not None:
        init_encoder(model, load_feature_net(feature_net, (encoder.layers[-1],)))
    return model
