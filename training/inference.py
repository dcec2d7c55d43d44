"""The one inference path: 8-bit images in, 8-bit images out, for ``percept apply``,
``percept evaluate`` and the registered MLflow pyfunc.

``Engine`` runs a loaded network under ``torch.inference_mode``: same-size images (or tiles)
batched into one forward, images larger than ``tile`` in overlapping tiles whose output matches
the whole-image output (``training.tiling``: aligned tiles, an overlap of at least the receptive
radius, whole-image instance-norm statistics), so memory is bounded by the tile and the seams do
not show. Options: channels-last, ``torch.compile`` (with a warm-up), bf16 autocast on CUDA.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from training.conditioning import LevelSpec
from training.models import ResNet, TransformNet, build_transform_net
from training.options import AUTO_TILE_OUTPUT, InferenceConfig, parse_model_config
from training.tiling import receptive_radius, tiled_forward, whole_image_layers


def model_from_state(state: dict[str, Any]) -> TransformNet | ResNet:
    """The eval-mode network saved in a checkpoint or ``models/<task>/model.pt``."""
    model = build_transform_net(parse_model_config(state["model_config"]), state["scale"])
    model.load_state_dict(state["model"])
    return model.eval()


MODEL_KEYS = ("task", "scale", "model_config", "model")


class ModelFileError(ValueError):
    """A ``model.pt`` that cannot be loaded as a percept model: one line naming the file and what is
    wrong with it (``path`` and ``why`` are kept for callers that reword it)."""

    def __init__(self, path: str | Path, why: str, what: str = "not a percept model file") -> None:
        self.path, self.why, self.what = Path(path), why, what
        shown = f"{path} (a link to {os.path.realpath(path)})" if os.path.islink(path) else str(path)
        super().__init__(f"{shown}: {what} ({why})")


def _one_line(exc: BaseException, limit: int = 240) -> str:
    """An exception's message on one line, without torch's boilerplate, at most ``limit`` characters."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # torch's weights-only refusal: the reason sits in the middle
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    text = re.sub(r"\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)
    text = " ".join(text.split()) or type(exc).__name__
    text = text.split(". ", 1)[0]  # torch goes on with advice ("This is an internal miniz error. If you...")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    return "a tensor" if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"


def _read_state(path: Path) -> dict[str, Any]:
    """``torch.load`` (weights only: pickled code never runs) with every failure as a ModelFileError."""
    try:
        if path.is_dir():
            raise ModelFileError(path, "a folder, not a file")
        if not path.is_file():
            if not path.exists():
                raise ModelFileError(path, "no such file", "cannot be read")
            raise ModelFileError(path, "not a regular file")
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ModelFileError(path, exc.strerror or _one_line(exc), "cannot be read") from None
    if not head:
        raise ModelFileError(path, "empty file")
    is_zip, is_pickle = head.startswith(b"PK\x03\x04"), head[:1] == b"\x80"  # torch's two formats
    if not (is_zip or is_pickle):
        raise ModelFileError(path, "not a PyTorch file: neither a zip archive nor a pickle")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise on top of the error
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises EOFError, UnpicklingError, RuntimeError, KeyError, OSError... for bad files
        if "Unsupported global" in str(exc):  # weights only: a class or function it would have to import and run
            why = (f"{'a PyTorch file' if is_zip else 'a pickle'} holding Python objects that only running its code "
                   f"could rebuild, which is never done ({_one_line(exc)})")
        elif is_zip:
            why = f"not a PyTorch file: a damaged or foreign zip archive ({_one_line(exc)})"
        else:
            why = f"not a PyTorch file: a pickle torch did not write, or a damaged one ({_one_line(exc)})"
        raise ModelFileError(path, why) from None
    if not isinstance(state, dict):
        raise ModelFileError(path, f"a PyTorch file, but not a percept model: it holds {_kind(state)}, "
                                   "not a dict of settings and weights")
    missing = [k for k in MODEL_KEYS if k not in state]
    if missing:
        raise ModelFileError(path, "a PyTorch file, but not a percept model: missing "
                                   + ", ".join(repr(k) for k in missing))
    expected = {"task": (str, "a string"), "scale": (int, "an integer"), "model_config": (dict, "a dict"),
                "model": (dict, "a dict of tensors")}
    for key, (kind, name) in expected.items():
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise ModelFileError(path, f"a PyTorch file, but not a percept model: {key!r} is {_kind(state[key])}, "
                                       f"not {name}")
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise ModelFileError(path, "a PyTorch file, but not a percept model: 'model' holds values that are not tensors")
    return state


def load_model_file(path: str | Path) -> tuple[TransformNet | ResNet, dict[str, Any]]:
    """(network, its metadata: task, scale, model_config, step, and ``level`` for a conditioned
    network, ``training.conditioning.LevelSpec``'s fields) from a ``model.pt`` file. Anything
    else (an empty, truncated or foreign file, a pickle, a tensor, a dict without the percept keys,
    weights that do not fit the config) raises ``ModelFileError`` naming the file and the fault."""
    path = Path(path)
    state = _read_state(path)
    try:
        config = parse_model_config(state["model_config"])
    except ValidationError as exc:
        faults = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'model_config'}: {e['msg']}" for e in exc.errors()[:3])
        raise ModelFileError(path, f"its model_config is not valid: {faults}") from None
    try:
        model = build_transform_net(config, state["scale"])
    except Exception as exc:  # noqa: BLE001 - e.g. a scale the architecture does not have
        raise ModelFileError(path, f"its scale and model_config make no network: {_one_line(exc)}") from None
    try:
        model.load_state_dict(state["model"])
    except Exception as exc:  # noqa: BLE001 - weights of other shapes, missing or extra ones (RuntimeError)
        raise ModelFileError(path, f"its weights do not fit its model_config: {_one_line(exc)}") from None
    if "level" in state:  # a conditioned network: what its level channel holds
        try:
            LevelSpec.from_dict(state["level"])
        except (TypeError, ValueError) as exc:
            raise ModelFileError(path, f"its level entry is not valid: {_one_line(exc)}") from None
    meta = {k: v for k, v in state.items() if k != "model"}
    meta["model_config"] = config.model_dump(mode="json")  # every field, defaults included (in_channels...)
    return model.eval(), meta


def to_tensor(image: np.ndarray, channels: int) -> torch.Tensor:
    """HxWx3 uint8 -> 1xCxHxW float in [0, 1], keeping the first ``channels`` channels (gray
    inputs carry the same value in all three). A conditioned network (4 channels) takes HxWx4:
    the picture and its level channel (``training.degradations.with_level``)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    if image.shape[2] < channels:
        raise ValueError("this network is conditioned on the degradation's level: give the level with the image")
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


def downsampling(model: torch.nn.Module) -> int:
    """The product of the conv strides and pixel-unshuffle factors: tiles must start on multiples
    of it (4 for the style net, the unshuffle factor for a resnet)."""
    if hasattr(model, "receptive_field"):
        return model.receptive_field()[1]
    factor = 1
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            factor *= m.stride[0]
        elif isinstance(m, torch.nn.PixelUnshuffle):
            factor *= m.downscale_factor
    return factor


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class Engine:
    """A network ready to run on uint8 HxWx3 images: ``engine(image)`` or ``engine.run(images)``."""

    def __init__(self, model: torch.nn.Module, scale: int, in_channels: int = 3,
                 cfg: InferenceConfig = InferenceConfig()) -> None:
        self.cfg, self.scale, self.in_channels = cfg, scale, in_channels
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device}: torch sees no CUDA device")
        self.model = model.eval().to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.align = downsampling(model)
        self.overlap = _round_up(max(cfg.overlap or 0, receptive_radius(model)), self.align)
        tile = max(1, AUTO_TILE_OUTPUT // scale) if cfg.tile == "auto" else cfg.tile
        self.tile = None if tile is None else tile // self.align * self.align
        if self.tile is not None and self.tile <= 2 * self.overlap:
            raise ValueError(f"tile ({tile}) must be larger than twice the overlap ({self.overlap}, the network's "
                             f"receptive radius or more, in multiples of {self.align})")
        self.bf16 = cfg.bf16 and self.device.type == "cuda"
        self.compiled = torch.compile(self.model) if cfg.compile else None
        # Tiles swap in whole-image statistics (instance norm, image means) by replacing the layers' forward,
        # which a compiled graph would not see: such nets run their tiles eagerly.
        self.has_whole_image_layers = bool(whole_image_layers(self.model))
        self.passes = 0  # forward passes over the tiles of the last tiled image (instance norm: >= 1)

    def forward(self, x: torch.Tensor, tiles: bool = False) -> torch.Tensor:
        """The network on an N x C x H x W float batch already on the device."""
        net = self.compiled if self.compiled is not None and not (tiles and self.has_whole_image_layers) else self.model
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.bf16):
            return net(x)

    def _to_device(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        x = torch.cat([to_tensor(im, self.in_channels) for im in images])
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    @torch.inference_mode()
    def run(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Outputs in input order. Images of one size share forward passes (``batch`` at a time);
        an image larger than ``tile`` on a side goes through the tiles, ``batch`` tiles a pass."""
        outputs: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape, []).append(i)
        for (h, w, _), idx in groups.items():
            if self.tile is None or (h <= self.tile and w <= self.tile):
                for k in range(0, len(idx), self.cfg.batch):
                    part = idx[k : k + self.cfg.batch]
                    y = self.forward(self._to_device([images[i] for i in part]))
                    for j, i in enumerate(part):
                        outputs[i] = to_image(y[j : j + 1].float())
            else:
                for i in idx:
                    y, self.passes = tiled_forward(lambda t: self.forward(t, tiles=True), self.model,
                                                   self._to_device([images[i]]), self.scale, self.tile, self.overlap,
                                                   self.align, self.cfg.batch)
                    outputs[i] = to_image(y)
        return outputs  # type: ignore[return-value]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.run([image])[0]

    @torch.inference_mode()
    def warm_up(self, height: int, width: int, repeats: int = 2) -> None:
        """Run a zero batch of this size (compiles a compiled network; lets cuDNN pick kernels)."""
        x = torch.zeros(1, self.in_channels, height, width, device=self.device)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for _ in range(repeats):
            self.forward(x)


def apply_model(model: torch.nn.Module, image: np.ndarray, scale: int, in_channels: int = 3,
                tile: int | None = None, overlap: int | None = None, device: torch.device | str = "cpu") -> np.ndarray:
    """The model's uint8 output for one uint8 RGB image; ``tile`` input pixels per tile side
    (None: the whole image at once). The output is ``scale`` times the input's size. (Kept for
    callers and registered pyfuncs that predate ``Engine``.)"""
    cfg = InferenceConfig(device=str(device), tile=tile, overlap=overlap, batch=1)
    return Engine(model, scale, in_channels, cfg)(image)
