"""Running a transformation network on whole 8-bit images, tiled when they are large.

Tiles overlap by ``overlap`` input pixels on every side; each tile's output keeps only its
centre, so the seams fall where every output pixel still saw ``overlap`` pixels of context
(more than the network's receptive field needs for the default nets). Memory is bounded by the
tile size, not the image size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.models import TransformNet, TransformNetConfig, build_transform_net


def model_from_state(state: dict[str, Any]) -> TransformNet:
    """The eval-mode network saved in a checkpoint or ``models/<task>/model.pt``."""
    model = build_transform_net(TransformNetConfig(**state["model_config"]), state["scale"])
    model.load_state_dict(state["model"])
    return model.eval()


def load_model_file(path: str | Path) -> tuple[TransformNet, dict[str, Any]]:
    """(network, its metadata: task, scale, model_config, step) from a ``model.pt`` file."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = {"task", "scale", "model_config", "model"} - set(state)
    if missing:
        raise ValueError(f"{path}: not a percept model file (missing {', '.join(sorted(missing))})")
    return model_from_state(state), {k: v for k, v in state.items() if k != "model"}


def to_tensor(image: np.ndarray, channels: int) -> torch.Tensor:
    """HxWx3 uint8 -> 1xCxHxW float in [0, 1], keeping the first ``channels`` channels (gray
    inputs carry the same value in all three)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    image = np.ascontiguousarray(image) if image.flags.writeable else image.copy()  # torch warns on read-only
    return torch.from_numpy(image).permute(2, 0, 1)[None, :channels].float().div(255.0)


def pair_to_tensor(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    """Two HxWx3 uint8 images -> a 2x3xHxW float batch in [0, 1] (for the paired metrics)."""
    return torch.from_numpy(np.stack([a, b])).permute(0, 3, 1, 2).float().div(255.0)


def to_image(output: torch.Tensor) -> np.ndarray:
    """1x3xHxW float in [0, 1] -> HxWx3 uint8, rounded. A diverged network (NaN or inf output)
    raises instead of turning into an image that would be scored like any other."""
    if not torch.isfinite(output).all():
        raise ValueError("the network produced non-finite values (NaN or inf)")
    return output[0].clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: stride tile - 2*overlap, the last tile flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - 2 * overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


@torch.inference_mode()
def apply_model(model: torch.nn.Module, image: np.ndarray, scale: int, in_channels: int = 3,
                tile: int | None = None, overlap: int = 16, device: torch.device | str = "cpu") -> np.ndarray:
    """The model's uint8 output for one uint8 RGB image; ``tile`` input pixels per tile side
    (None: the whole image at once). The output is ``scale`` times the input's size."""
    if tile is not None and tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must be larger than twice the overlap ({overlap})")
    x = to_tensor(image, in_channels).to(device)
    h, w = image.shape[:2]
    if tile is None or (h <= tile and w <= tile):
        return to_image(model(x))
    out = torch.empty(1, 3, h * scale, w * scale, device=device)
    for y0 in _starts(h, tile, overlap):
        for x0 in _starts(w, tile, overlap):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            piece = model(x[:, :, y0:y1, x0:x1])
            # Keep the centre: drop `overlap` pixels on sides that border another tile.
            ky0 = 0 if y0 == 0 else overlap
            kx0 = 0 if x0 == 0 else overlap
            ky1 = y1 - y0 if y1 == h else y1 - y0 - overlap
            kx1 = x1 - x0 if x1 == w else x1 - x0 - overlap
            out[:, :, (y0 + ky0) * scale : (y0 + ky1) * scale, (x0 + kx0) * scale : (x0 + kx1) * scale] = \
                piece[:, :, ky0 * scale : ky1 * scale, kx0 * scale : kx1 * scale]
    return to_image(out)
