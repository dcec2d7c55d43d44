"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), VGG variant, from files the user already has; nothing is downloaded.

Two files: a torchvision VGG-16 state dict (the backbone) and the LPIPS linear-layer file
``vgg.pth`` of the reference implementation (keys ``lin{0..4}.model.1.weight``, shapes
1xCx1x1 for C = 64, 128, 256, 512, 512). LPIPS scales its input to [-1, 1] and then by fixed
shift/scale constants, which is exactly ImageNet mean/std normalisation of [0, 1] input, what
our torchvision loader already does. Per layer: unit-normalise each pixel's feature vector,
square the difference, weight channels by the linear layer, average over space; sum the layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.inference import pair_to_tensor
from training.vgg import FeatureNetError, load_feature_net
from training.options import FeatureNetConfig, LpipsConfig

LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
CHANNELS = (64, 128, 256, 512, 512)


def _read_lin(path: Path) -> list[torch.Tensor]:
    if not path.is_file():
        raise FeatureNetError(f"LPIPS linear weights {path}: file not found (nothing is downloaded; "
                              "use vgg.pth of the reference LPIPS implementation, version 0.1)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights, problems = [], []
    for i, c in enumerate(CHANNELS):
        key = f"lin{i}.model.1.weight"
        tensor = state.get(key) if isinstance(state, dict) else None
        if tensor is None or tuple(tensor.shape) != (1, c, 1, 1):
            problems.append(f"{key}: expected shape (1, {c}, 1, 1), got {None if tensor is None else tuple(tensor.shape)}")
        else:
            weights.append(tensor.flatten().float())
    if problems:
        raise FeatureNetError(f"{path} is not an LPIPS VGG linear-layer file: " + "; ".join(problems))
    return weights


class Lpips:
    """``lpips(output, target)`` for two uint8 HxWx3 images: 0 for identical ones, larger is worse."""

    def __init__(self, cfg: LpipsConfig):
        self.net = load_feature_net(FeatureNetConfig(weights=cfg.vgg16, kind="torchvision_vgg16"), LAYERS)
        self.lin = _read_lin(Path(cfg.lin))

    @torch.inference_mode()
    def __call__(self, output: np.ndarray, target: np.ndarray) -> float:
        pair = pair_to_tensor(output, target)
        feats = self.net(pair)
        total = 0.0
        for name, weight in zip(LAYERS, self.lin):
            f = feats[name]
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total += float(((f[0] - f[1]) ** 2 * weight[:, None, None]).sum(dim=0).mean())
        return total
