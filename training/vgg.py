"""The frozen feature network of the perceptual losses: a pretrained VGG, cut after the deepest relu asked for.

Two weight layouts are understood, and ``kind="auto"`` tells them apart from the state dict's keys:

- ``vgg19_normalised``: the Gatys/AdaIN/WCT "normalised" VGG-19 (the default file,
  ``vgg_normalised_conv3_1.pth``, stops at relu3_1). Keys are positions in the original
  ``nn.Sequential`` (``0, 2, 5, 9, 12, 16, ...``); key ``0`` is a fixed 1x1 conv that does the Caffe
  preprocessing (RGB->BGR, x255, minus the mean) and is kept as a real layer loaded from the file.
  That model was trained and converted with reflection padding and ``ceil_mode`` max-pooling.
- ``torchvision_vgg16`` / ``torchvision_vgg19``: torchvision's ``features.N.*`` keys (a file holding
  only a prefix of ``features`` is fine, as is one saved from ``vgg.features`` without the prefix;
  ``classifier.*`` is ignored). These expect ImageNet mean/std normalisation, held here as a buffer,
  and zero padding.

Every net takes an RGB tensor in [0, 1] (N x 3 x H x W) and owns its preprocessing, so callers never
normalise. ``random`` builds the normalised architecture with seeded random weights and reads no file:
only for tests, and only when asked for by name (never a fallback for a missing file).

Pure compute: torch and pydantic only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from training.options import FeatureNetConfig


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Layer 0 of the normalised file: BGR channel swap x255, minus the BGR ImageNet mean (0-255 scale).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

# Channel plans ("M" = 2x2 max-pool), as in the VGG paper / torchvision.
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# The normalised file and the `random` kind stop at conv3_1 (the default file's depth).
_RANDOM_DEPTH = "relu3_1"


class FeatureNetError(ValueError):
    """The feature network cannot be built from the given weights and layers."""


@dataclass(frozen=True)
class _Layout:
    """One architecture: its ``nn.Sequential`` positions, so a state dict loads by name."""

    ops: tuple[tuple, ...]  # ("pre",) | ("pad",) | ("conv", cin, cout) | ("relu", name) | ("pool",)
    key_prefix: str  # "" or "features."

    @property
    def convs(self) -> list[tuple[int, str, int, int]]:
        """(index, relu name after it, cin, cout) for every 3x3 conv, in order."""
        out = []
        for i, op in enumerate(self.ops):
            if op[0] == "conv":
                out.append((i, self.ops[i + 1][1], op[1], op[2]))
        return out

    @property
    def relus(self) -> dict[str, int]:
        return {op[1]: i for i, op in enumerate(self.ops) if op[0] == "relu"}

    def expected(self, upto: int) -> dict[str, tuple[int, ...]]:
        """Weight keys (with this layout's prefix) and shapes of every layer at index <= ``upto``."""
        keys: dict[str, tuple[int, ...]] = {}
        for i, op in enumerate(self.ops[: upto + 1]):
            if op[0] == "pre":
                keys[f"{self.key_prefix}{i}.weight"], keys[f"{self.key_prefix}{i}.bias"] = (3, 3, 1, 1), (3,)
            elif op[0] == "conv":
                keys[f"{self.key_prefix}{i}.weight"] = (op[2], op[1], 3, 3)
                keys[f"{self.key_prefix}{i}.bias"] = (op[2],)
        return keys


def _layout(kind: str, key_prefix: str = "") -> _Layout:
    """Module positions exactly as the original ``nn.Sequential`` had them."""
    plan = _VGG16 if kind == "torchvision_vgg16" else _VGG19
    normalised = kind in ("vgg19_normalised", "random")
    ops: list[tuple] = [("pre",)] if normalised else []
    cin, block, n = 3, 1, 0
    for item in plan:
        if item == "M":
            ops.append(("pool",))
            block, n = block + 1, 0
            continue
        n += 1
        if normalised:
            ops.append(("pad",))  # WCT/AdaIN: a separate padding module before each 3x3 conv
        ops += [("conv", cin, item), ("relu", f"relu{block}_{n}")]
        cin = item
    if kind == "random":
        ops = ops[: [i for i, op in enumerate(ops) if op == ("relu", _RANDOM_DEPTH)][0] + 1]
    return _Layout(tuple(ops), key_prefix)


class FeatureNet(nn.Module):
    """A frozen VGG prefix: ``forward(x)`` maps RGB in [0, 1] to ``{relu name: feature map}``.

    Build it with :func:`load_feature_net`. It runs only as deep as the deepest requested layer,
    never trains (``train()`` keeps it in eval mode) and holds no trainable parameters, but it is
    differentiable with respect to its input, which is what a perceptual loss needs.
    """

    def __init__(
        self,
        body: nn.Sequential,
        taps: Mapping[str, int],
        *,
        kind: str,
        padding: str,
        available_layers: Sequence[str],
        imagenet_normalise: bool,
        source: str,
    ) -> None:
        super().__init__()
        self.body = body
        self.kind = kind
        self.padding = padding
        self.source = source
        self.layers: tuple[str, ...] = tuple(sorted(taps, key=taps.__getitem__))
        self.available_layers: tuple[str, ...] = tuple(available_layers)
        self._taps = {index: name for name, index in taps.items()}
        if imagenet_normalise:
            # Constants, not weights: kept out of the state dict but moved by .to(device).
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        else:
            self.mean = self.std = None
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FeatureNet:
        """Always eval: the feature network is a fixed measuring instrument, never trained."""
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W RGB tensor in [0, 1], got shape {tuple(x.shape)}")
        if self.mean is not None:
            x = (x - self.mean) / self.std
        out: dict[str, Tensor] = {}
        for i, module in enumerate(self.body):
            x = module(x)
            name = self._taps.get(i)
            if name is not None:
                out[name] = x
        return out

    def extra_repr(self) -> str:
        return f"kind={self.kind}, padding={self.padding}, layers={self.layers}, source={self.source}"


def load_feature_net(cfg: FeatureNetConfig, layers: Sequence[str] | None = None) -> FeatureNet:
    """The frozen feature network of ``cfg``, returning ``layers`` (None: every layer the weights have)."""
    if cfg.kind == "random":
        layout = _layout("random")
        state = _random_state(layout, cfg.seed)
        kind, source = "random", f"random(seed={cfg.seed})"
    else:
        state = _read_state_dict(Path(cfg.weights))
        kind = _detect_kind(state, cfg.weights) if cfg.kind == "auto" else cfg.kind
        layout = _layout(kind, _key_prefix(state, kind))
        source = cfg.weights

    available = _available_layers(layout, state)
    wanted = _check_layers(layout, kind, available, layers)
    relus = layout.relus
    _check_keys(layout, kind, state, wanted[-1], source)
    deepest = relus[wanted[-1]]

    padding = cfg.padding
    if padding == "auto":
        padding = "zeros" if kind.startswith("torchvision") else "reflect"
    body = _build_body(layout, deepest, padding, ceil_mode=not kind.startswith("torchvision"))
    body.load_state_dict({key[len(layout.key_prefix) :]: state[key] for key in layout.expected(deepest)}, strict=True)
    return FeatureNet(
        body,
        {name: relus[name] for name in wanted},
        kind=kind,
        padding=padding,
        available_layers=available,
        imagenet_normalise=kind.startswith("torchvision"),
        source=source,
    )


def feature_net_skeleton(kind: str, layer: str, padding: str = "auto") -> FeatureNet:
    """The architecture of a ``kind`` feature network up to ``layer``, with untrained weights: for a
    model that embeds the network (colorization's encoder), whose weights come from the model's
    own file or, before training, from :func:`load_feature_net`'s."""
    if kind not in ("vgg19_normalised", "torchvision_vgg16", "torchvision_vgg19"):
        raise FeatureNetError(f"unknown feature network kind {kind!r}")
    layout = _layout(kind)
    if layer not in layout.relus:
        raise FeatureNetError(f"unknown feature layer {layer!r}: {kind} has {', '.join(layout.relus)}")
    if padding == "auto":
        padding = "zeros" if kind.startswith("torchvision") else "reflect"
    body = _build_body(layout, layout.relus[layer], padding, ceil_mode=not kind.startswith("torchvision"))
    return FeatureNet(body, {layer: layout.relus[layer]}, kind=kind, padding=padding, available_layers=(),
                      imagenet_normalise=kind.startswith("torchvision"), source="(embedded)")


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FeatureNetError(
            f"feature network weights not found: {path} (the feature_net.weights param). "
            "`percept acquire` copies the default file into data/weights/; nothing is downloaded, "
            "so put the file there or point feature_net.weights at one."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises KeyError, UnpicklingError, RuntimeError... for bad files
        raise FeatureNetError(f"cannot read {path} as a state dict saved by torch.save ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(k, str) for k in obj):
        raise FeatureNetError(
            f"{path} is not a state dict (a mapping of parameter names to tensors, or a dict with a "
            f"'state_dict' key); it holds a {type(obj).__name__}"
        )
    return {k: v for k, v in obj.items() if isinstance(v, Tensor)}


def _key_prefix(state: Mapping[str, Tensor], kind: str) -> str:
    if kind.startswith("torchvision") and any(k.startswith("features.") for k in state):
        return "features."
    return ""


def _detect_kind(state: Mapping[str, Tensor], source: str) -> str:
    """Normalised VGG-19 has a 3->3 1x1 conv at key 0; torchvision a 3->64 3x3 conv at features.0."""

    def shape(key: str) -> tuple[int, ...] | None:
        return tuple(state[key].shape) if key in state else None

    if shape("0.weight") == (3, 3, 1, 1) and shape("2.weight") == (64, 3, 3, 3):
        return "vgg19_normalised"
    for prefix in ("features.", ""):
        if shape(f"{prefix}0.weight") == (64, 3, 3, 3):
            # The two agree up to conv3_3 (index 14); VGG-19 then has conv3_4 at 16, VGG-16 conv4_1 at 17.
            # A shorter prefix is the same network either way, so it is called VGG-16.
            if f"{prefix}16.weight" in state:
                return "torchvision_vgg19"
            return "torchvision_vgg16"
    sample = ", ".join(f"{k} {tuple(v.shape)}" for k, v in list(state.items())[:6])
    raise FeatureNetError(
        f"cannot tell which VGG {source} holds (feature_net.kind is 'auto'). Expected either the "
        "normalised VGG-19 layout (0.weight (3, 3, 1, 1), 2.weight (64, 3, 3, 3), 5.weight (64, 64, 3, 3), ...) "
        "or torchvision's (features.0.weight (64, 3, 3, 3), features.2.weight (64, 64, 3, 3), ...); "
        f"found {len(state)} tensors: {sample}{', ...' if len(state) > 6 else ''}"
    )


def _available_layers(layout: _Layout, state: Mapping[str, Tensor]) -> tuple[str, ...]:
    """The relu layers whose conv, and every conv before it, have weights in the file."""
    p = layout.key_prefix
    if layout.ops[0] == ("pre",) and not {f"{p}0.weight", f"{p}0.bias"} <= state.keys():
        return ()
    available = []
    for index, relu, _, _ in layout.convs:
        if not {f"{p}{index}.weight", f"{p}{index}.bias"} <= state.keys():
            break
        available.append(relu)
    return tuple(available)


def _check_layers(layout: _Layout, kind: str, available: tuple[str, ...], layers: Sequence[str] | None) -> tuple[str, ...]:
    relus = layout.relus
    if layers is None:
        return available or (next(iter(relus)),)  # nothing usable: _check_keys says why
    if isinstance(layers, str):
        raise FeatureNetError(f"layers must be a sequence of layer names, not the string {layers!r}")
    if not layers:
        raise FeatureNetError("no feature layers requested")
    for name in layers:
        if name not in relus:
            raise FeatureNetError(f"unknown feature layer {name!r}: {kind} has {', '.join(relus)}")
    return tuple(dict.fromkeys(sorted(layers, key=relus.__getitem__)))


def _check_keys(layout: _Layout, kind: str, state: Mapping[str, Tensor], layer: str, source: str) -> None:
    """Every key up to ``layer`` present with its shape; a short file and a gap get different errors."""
    every = layout.expected(len(layout.ops) - 1)
    for key, shape in layout.expected(layout.relus[layer]).items():
        if key in state:
            if tuple(state[key].shape) != shape:
                raise FeatureNetError(f"{source} ({kind}): {key} has shape {tuple(state[key].shape)}, expected {shape}")
            continue
        if any(k in state for k in every if _key_index(k) >= _key_index(key)):  # the file goes on past the hole
            raise FeatureNetError(f"{source} ({kind}) has no key {key} (expected shape {shape}), needed for {layer}")
        available = _available_layers(layout, state)
        raise FeatureNetError(
            f"{source} ({kind}) cannot provide {layer}: its weights stop at "
            f"{available[-1] if available else 'the input'}; layers it has: {', '.join(available) or 'none'}"
        )


def _key_index(key: str) -> int:
    return int(key.split(".")[-2])


def _build_body(layout: _Layout, deepest: int, padding: str, *, ceil_mode: bool) -> nn.Sequential:
    modules: list[nn.Module] = []
    for op in layout.ops[: deepest + 1]:
        if op[0] == "pre":
            modules.append(nn.Conv2d(3, 3, 1))
        elif op[0] == "pad":
            modules.append(nn.ReflectionPad2d(1) if padding == "reflect" else nn.ZeroPad2d(1))
        elif op[0] == "conv":
            if layout.ops[0] == ("pre",):  # the normalised layout has its own pad modules
                modules.append(nn.Conv2d(op[1], op[2], 3))
            else:
                modules.append(nn.Conv2d(op[1], op[2], 3, padding=1, padding_mode="reflect" if padding == "reflect" else "zeros"))
        elif op[0] == "relu":
            modules.append(nn.ReLU())
        else:
            modules.append(nn.MaxPool2d(2, 2, ceil_mode=ceil_mode))
    return nn.Sequential(*modules)


def _random_state(layout: _Layout, seed: int) -> dict[str, Tensor]:
    """Seeded He-normal convs behind the real Caffe preprocessing layer: untrained, for tests only."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for key, shape in layout.expected(len(layout.ops) - 1).items():
        if key == "0.weight":
            state[key] = torch.tensor([[0.0, 0, 255], [0, 255, 0], [255, 0, 0]]).view(3, 3, 1, 1)
        elif key == "0.bias":
            state[key] = -torch.tensor(CAFFE_BGR_MEAN)
        elif key.endswith(".weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        else:
            state[key] = torch.zeros(shape)
    return state
