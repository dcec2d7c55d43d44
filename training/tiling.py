"""Tiled forward passes whose output matches the whole-image forward pass.

A tile's output agrees with the whole image's wherever every pixel the output depends on lies
inside the tile, so each tile keeps only the part at least ``overlap`` input pixels away from its
inner edges, with ``overlap`` at least the network's receptive radius (``receptive_radius``).
Two more things make the tiles exact:

- Alignment. The style-shaped nets downsample by 4 (two stride-2 convs): a tile must start on the
  whole image's sampling grid, or every one of its pixels is computed from other samples. The
  image is reflect-padded to a multiple of 4 exactly as the network pads it itself, and tiles
  start on multiples of 4.
- Instance norm. Each tile would be normalised with its own mean and variance. Instead every
  InstanceNorm layer is given the statistics of the whole image, summed over the tiles' kept
  (non-overlapping) regions. A layer's statistics depend on every layer before it, so they are
  gathered one layer at a time: sweep k runs the tiles only up to the k-th layer (earlier layers
  normalised with their whole-image statistics), sums its input, and stops there. After one
  sweep per layer, a last pass over the tiles gives the output. The sweeps cost the network's
  prefix up to each layer: about 6 extra forward passes for the default style net (15 layers,
  most of the compute in the residual blocks); with the overlap, a 1024² style image in 512 px
  tiles took 7.8x its whole-image time (benchmarks/infer.py), paid only by images larger than a tile.
  Batch norm in eval mode uses fixed running statistics and needs none of this. An image mean
  (colornet's ``global_context``) is gathered the same way: every tile gets the whole image's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Tile:
    """One tile: its input window [y0, y1) x [x0, x1) and the part of it the output keeps, both in
    (padded) input pixels. The kept parts of all tiles cover the image exactly once."""

    y0: int
    y1: int
    x0: int
    x1: int
    keep: tuple[int, int, int, int]  # ky0, ky1, kx0, kx1, absolute


def axis_spans(length: int, tile: int, overlap: int, align: int = 1) -> tuple[int, list[tuple[int, int, int]]]:
    """(tile side, [(start, keep_lo, keep_hi), ...]) along one axis. As few tiles as ``tile``
    allows, shrunk to share the length evenly (the last one flush with the end): a 512 px side
    in 256 px tiles with a 16 px overlap takes three tiles of 192, not three of 256. Each tile
    keeps from the previous keep's end to ``overlap`` before its own end."""
    if length <= tile:
        return length, [(0, 0, length)]
    span = length - 2 * overlap  # what the tiles' kept parts must cover between the two edge margins
    count = _ceil_div(span, tile - 2 * overlap)
    side = min(tile, _ceil_div(_ceil_div(span, count) + 2 * overlap, align) * align)
    starts = [i * (side - 2 * overlap) for i in range(count - 1)] + [length - side]
    spans, lo = [], 0
    for i, s in enumerate(starts):
        hi = length if i == count - 1 else s + side - overlap
        spans.append((s, lo, hi))
        lo = hi
    return side, spans


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def tile_grid(height: int, width: int, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    (th, rows), (tw, cols) = axis_spans(height, tile, overlap, align), axis_spans(width, tile, overlap, align)
    return [Tile(y, y + th, x, x + tw, (ky0, ky1, kx0, kx1)) for y, ky0, ky1 in rows for x, kx0, kx1 in cols]


def walk_radius(modules, radius: float = 0.0, step: float = 1.0) -> tuple[float, float]:
    """(radius, step) after a chain of convolutions and resamplings, run in the order they were
    registered; ``step`` is input pixels per feature pixel at that depth. Residual skips add nothing."""
    for top in modules:
        for m in top.modules():
            if isinstance(m, nn.Conv2d):
                radius += (m.kernel_size[0] - 1) // 2 * m.dilation[0] * step
                step *= m.stride[0]
            elif isinstance(m, nn.ConvTranspose2d):
                step /= m.stride[0]
                radius += (m.kernel_size[0] - 1) / 2 * step + step
            elif isinstance(m, nn.Upsample):
                # nearest: an output pixel reads the low-res pixel it falls in; bilinear: two of them
                radius += step / 2 if m.mode == "nearest" else step
                step /= float(m.scale_factor)
            elif isinstance(m, nn.PixelShuffle):
                step /= m.upscale_factor
            elif isinstance(m, nn.PixelUnshuffle):
                radius += (m.downscale_factor - 1) * step  # a cell reads every pixel in it
                step *= m.downscale_factor
            elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
                stride = m.stride if isinstance(m.stride, int) else m.stride[0]
                radius += (k - 1) * step
                step *= stride
            elif isinstance(m, (nn.ReflectionPad2d, nn.ZeroPad2d)):
                pass  # the conv after it accounts for its kernel
    return radius, step


def receptive_radius(model: nn.Module) -> int:
    """Input pixels on each side of an output pixel that can change it: an upper bound. A network
    with parallel paths says it itself (``receptive_field()``); otherwise its modules are walked in
    registration order (the networks' order). The SR global skip's bicubic reaches 2 input pixels."""
    if hasattr(model, "receptive_field"):
        return model.receptive_field()[0]
    radius, _ = walk_radius([model])
    if getattr(model, "global_skip", False):
        radius = max(radius, 2.0)
    return math.ceil(radius)


def whole_image_layers(model: nn.Module) -> list[nn.Module]:
    """The layers that need whole-image statistics: InstanceNorm layers that normalise with
    per-image ones (not running ones), and image means (``whole_image_mean``, colornet's context)."""
    return [m for m in model.modules() if getattr(m, "whole_image_mean", False) or (
        isinstance(m, nn.InstanceNorm2d) and not (m.track_running_stats and not m.training))]


class _Stats:
    """Per-channel sums of one layer's input over the kept regions, in float64."""

    def __init__(self) -> None:
        self.n = 0
        self.s1: torch.Tensor | float = 0.0
        self.s2: torch.Tensor | float = 0.0

    def add(self, x: torch.Tensor) -> None:  # x: C x h x w
        x = x.to(torch.float64)
        self.n += x.shape[-1] * x.shape[-2]
        self.s1 = self.s1 + x.sum((-1, -2))
        self.s2 = self.s2 + x.square().sum((-1, -2))

    def mean_var(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.s1 / self.n
        return mean, (self.s2 / self.n - mean.square()).clamp_min(0)


class _StopForward(Exception):
    """Raised by the layer being gathered: the rest of the network is not needed in this sweep."""


class WholeImageNorm:
    """Replaces the forward of each InstanceNorm layer (and image mean). A layer with ``frozen``
    statistics normalises with them (an image mean returns them); the first layer without them (in
    call order) sums the kept regions of its input into ``gathered`` and stops the forward pass.
    Each layer must run once per pass."""

    def __init__(self, norms: list[nn.Module]) -> None:
        self.norms = norms
        self.frozen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.gathered: tuple[int, _Stats] | None = None
        self.keeps: list[tuple[int, int, int, int]] = []  # per batch item, relative to its tile
        self.tile_hw = (1, 1)

    @contextmanager
    def installed(self) -> Iterator[WholeImageNorm]:
        for i, m in enumerate(self.norms):
            m.forward = self._forward(i, m)  # an instance attribute shadows the class's forward
        try:
            yield self
        finally:
            for m in self.norms:
                del m.forward

    def _forward(self, i: int, m: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(x: torch.Tensor) -> torch.Tensor:
            if i not in self.frozen:
                self._gather(i, x)
                raise _StopForward
            if getattr(m, "whole_image_mean", False):  # N x C: the whole image's mean for every tile
                return self.frozen[i][0].to(x.dtype)[None].expand(x.shape[0], -1)
            mean, var = (t.to(x.dtype)[None, :, None, None] for t in self.frozen[i])
            y = (x - mean) * torch.rsqrt(var + m.eps)
            return y * m.weight[None, :, None, None] + m.bias[None, :, None, None] if m.affine else y
        return forward

    def _gather(self, i: int, x: torch.Tensor) -> None:
        if self.gathered is None:
            self.gathered = (i, _Stats())
        stats = self.gathered[1]
        (th, tw), (h, w) = self.tile_hw, x.shape[-2:]
        for item, (ky0, ky1, kx0, kx1) in zip(x, self.keeps):
            # The kept box at this layer's resolution; tiles are aligned so the division is exact.
            stats.add(item[:, ky0 * h // th : ky1 * h // th, kx0 * w // tw : kx1 * w // tw])

    def freeze_gathered(self) -> None:
        assert self.gathered is not None, "no instance-norm layer ran in this sweep"
        i, stats = self.gathered
        self.frozen[i] = stats.mean_var()
        self.gathered = None


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad the last two dims to a multiple, split as TransformNet splits it; (x, top, left)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return x, 0, 0
    top, left = ph // 2, pw // 2
    return F.pad(x, (left, pw - left, top, ph - top), mode="reflect"), top, left


def tiled_forward(forward: Callable[[torch.Tensor], torch.Tensor], model: nn.Module, x: torch.Tensor, scale: int,
                  tile: int, overlap: int, align: int = 1, batch: int = 1) -> tuple[torch.Tensor, int]:
    """``forward`` over overlapping tiles of ``x`` (1 x C x H x W); (output, passes over the tiles).

    ``tile`` and ``overlap`` are in input pixels and must be multiples of ``align`` (the network's
    downsampling factor). ``model`` is the module ``forward`` runs, searched for InstanceNorm
    layers; each gets its whole-image statistics in a sweep of its own before the output pass.
    """
    xp, top, left = pad_to_multiple(x, align)
    h, w = x.shape[-2:]
    tiles = tile_grid(xp.shape[-2], xp.shape[-1], tile, overlap, align)
    state = WholeImageNorm(whole_image_layers(model))
    with state.installed():
        for _ in state.norms:
            _one_pass(forward, xp, tiles, scale, batch, state, None)
            state.freeze_gathered()
        out = _one_pass(forward, xp, tiles, scale, batch, state, torch.empty(
            1, 3, xp.shape[-2] * scale, xp.shape[-1] * scale, device=xp.device))
    return out[..., top * scale : (top + h) * scale, left * scale : (left + w) * scale], len(state.norms) + 1


def _one_pass(forward, xp: torch.Tensor, tiles: list[Tile], scale: int, batch: int, state: WholeImageNorm,
              out: torch.Tensor | None) -> torch.Tensor | None:
    """One pass over the tiles: a statistics sweep (``out`` None: every forward stops at the layer
    being gathered) or the output pass (every layer frozen: ``out`` filled with the kept parts)."""
    for i in range(0, len(tiles), batch):
        group = tiles[i : i + batch]
        state.tile_hw = (group[0].y1 - group[0].y0, group[0].x1 - group[0].x0)
        state.keeps = [(t.keep[0] - t.y0, t.keep[1] - t.y0, t.keep[2] - t.x0, t.keep[3] - t.x0) for t in group]
        batch_in = torch.cat([xp[..., t.y0 : t.y1, t.x0 : t.x1] for t in group])
        if out is None:
            try:
                forward(batch_in)
            except _StopForward:
                continue
            raise RuntimeError("a statistics sweep ran through the whole network")
        pieces = forward(batch_in)
        for piece, t, (ky0, ky1, kx0, kx1) in zip(pieces, group, state.keeps):
            out[0, :, t.keep[0] * scale : t.keep[1] * scale, t.keep[2] * scale : t.keep[3] * scale] = \
                piece[:, ky0 * scale : ky1 * scale, kx0 * scale : kx1 * scale].float()
    return out
