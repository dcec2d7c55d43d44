"""Image transformation networks: the paper's (``arch: johnson``) and a plain residual network for
restoration (``arch: resnet``). ``model:`` in a task block picks one; ``build_transform_net`` builds it.

``johnson``: Johnson, Alahi, Fei-Fei 2016 ("Perceptual Losses for Real-Time Style Transfer and
Super-Resolution", ECCV), written from the paper and its supplementary material. Two shapes of the
same family, chosen by the output/input ``scale``:

- ``scale == 1`` (style transfer, denoising, deblurring, JPEG, colorization): the paper's style
  net (supplementary Table 1): 9x9 conv, two stride-2 convs down to 1/4 resolution, residual
  blocks, two x2 upsampling blocks back up, 9x9 conv out.
- ``scale > 1`` (super-resolution): the paper's SR net (supplementary Table 2): 9x9 conv, residual
  blocks, all at the low input resolution, then ``log2(scale)`` x2 upsampling blocks, 9x9 conv out.

``resnet``: residual blocks without normalisation at one resolution (EDSR, Lim et al. 2017), a
sub-pixel tail (ESPCN, Shi et al. 2016) and a global skip, so the net learns a correction of its
baseline. Optionally the body runs on a pixel-unshuffled input (FFDNet, Zhang et al. 2018): at 1/2
or 1/4 resolution with 4x or 16x the channels, which widens the receptive field and cuts the cost
per pixel. What restoration and SR need (measured in docs/networks.md); the paper's down/up shape with
instance norm is what style transfer needs.

Images are float tensors in [0, 1], NCHW. ``forward`` never clamps (clamping kills gradients where
the output leaves the range); callers clamp for display and for metrics.

Layout follows pytorch/examples ``fast_neural_style/neural_style/transformer_net.py`` (small
``ConvLayer`` / ``ResidualBlock`` / ``UpsampleBlock`` classes, reflection padding in every conv).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from training.options import ColorNetConfig, ResNetConfig, TransformNetConfig

SCALES = (1, 2, 4, 8, 16)
# Smallest input side: the 9x9 in-conv reflection-pads by 4, which needs more than 4 pixels.
MIN_INPUT_SIZE = 5


class ConvLayer(nn.Module):
    """Reflection padding of k//2 then a conv: sizes stay (or halve with stride 2) without the
    border artefacts zero padding leaves (as pytorch/examples does; the paper pads the whole input
    by 40 pixels once and uses valid convs instead)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


def make_norm(kind: str, channels: int) -> nn.Module:
    """Per-channel norm with a learned scale and shift (2*channels parameters either way)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"unknown norm {kind!r}")


class ConvNormReLU(nn.Sequential):
    """conv - norm - ReLU: every non-residual, non-output layer of the paper's tables."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str, stride: int = 1) -> None:
        super().__init__(
            ConvLayer(in_channels, out_channels, kernel_size, stride),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class ResidualBlock(nn.Module):
    """conv3x3 - norm - ReLU - conv3x3 - norm, plus the identity, no ReLU after the sum (suppl.
    Figure 1: Gross and Wilber's variant of He et al. 2016). For style transfer the paper uses
    unpadded convs and center-crops the identity to match; we reflection-pad each conv so sizes
    stay and nothing is cropped, as pytorch/examples fast_neural_style does."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.norm1 = make_norm(norm, channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.norm2 = make_norm(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        return x + self.norm2(self.conv2(y))


class UpsampleBlock(nn.Module):
    """x2 upsampling - norm - ReLU (the paper's "conv, stride 1/2" rows), in one of three ways."""

    def __init__(self, in_channels: int, out_channels: int, mode: str, norm: str) -> None:
        super().__init__()
        if mode == "deconv":
            # Paper: fractionally-strided conv; output_padding=1 makes the output exactly 2x.
            self.up = nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1)
        elif mode == "resize_conv":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"), ConvLayer(in_channels, out_channels, 3)
            )
        elif mode == "pixel_shuffle":
            self.up = nn.Sequential(ConvLayer(in_channels, 4 * out_channels, 3), nn.PixelShuffle(2))
        else:
            raise ValueError(f"unknown upsample mode {mode!r}")
        self.norm = make_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.norm(self.up(x)))


class TransformNet(nn.Module):
    """The paper's image transformation network: ``head`` (input convs), ``body`` (residual
    blocks), ``up`` (upsampling blocks), ``out`` (9x9 conv to RGB, no norm).

    Output, unclamped:
    - without the global skip: ``(tanh(y) + 1) / 2``, the paper's scaled tanh, in [0, 1];
    - with it (SR only): ``bicubic(x) + tanh(y)``. The residual is bounded to (-1, 1) and ``out`` is
      zero-initialised, so the untrained net returns exactly the bicubic upscale. A consequence:
      on the very first backward pass only ``out`` gets a gradient (every layer below sees a zero
      weight); from the first optimiser step on, all layers learn.
    """

    def __init__(self, cfg: TransformNetConfig, scale: int) -> None:
        super().__init__()
        _check_scale(scale)
        self.cfg = cfg
        self.scale = scale
        self.global_skip = cfg.global_skip
        norm, mode = cfg.norm, cfg.upsample
        if scale == 1:
            # Suppl. Table 1: 32 9x9 s1, 64 3x3 s2, 128 3x3 s2, 5 residual blocks at 128,
            # 64 and 32 3x3 "s1/2", 3 9x9 s1.
            c1, c2, c3 = cfg.channels, 2 * cfg.channels, 4 * cfg.channels
            self.head = nn.Sequential(
                ConvNormReLU(cfg.in_channels, c1, 9, norm),
                ConvNormReLU(c1, c2, 3, norm, stride=2),
                ConvNormReLU(c2, c3, 3, norm, stride=2),
            )
            self.body = nn.Sequential(*(ResidualBlock(c3, norm) for _ in range(cfg.residual_blocks)))
            self.up = nn.Sequential(UpsampleBlock(c3, c2, mode, norm), UpsampleBlock(c2, c1, mode, norm))
            last = c1
        else:
            # Suppl. Table 2: 64 9x9 s1, 4 residual blocks at 64, log2(scale) 64 3x3 "s1/2", 3 9x9 s1.
            # Everything before the upsampling blocks runs at the low input resolution.
            c = cfg.sr_channels
            self.head = nn.Sequential(ConvNormReLU(cfg.in_channels, c, 9, norm))
            self.body = nn.Sequential(*(ResidualBlock(c, norm) for _ in range(cfg.residual_blocks)))
            self.up = nn.Sequential(*(UpsampleBlock(c, c, mode, norm) for _ in range(scale.bit_length() - 1)))
            last = c
        self.out = ConvLayer(last, cfg.out_channels, 9)
        if self.global_skip:
            nn.init.zeros_(self.out.conv.weight)
            nn.init.zeros_(self.out.conv.bias)

    @property
    def first_conv(self) -> nn.Conv2d:
        return self.head[0][0].conv

    @property
    def last_conv(self) -> nn.Conv2d:
        """The output conv (zero-initialised when there is a global skip)."""
        return self.out.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        h, w = x.shape[-2:]
        if self.scale == 1:
            # Two stride-2 convs then two x2 upsamplings: reflect-pad to a multiple of 4, crop back.
            ph, pw = -h % 4, -w % 4
            top, left = ph // 2, pw // 2
            if ph or pw:
                x_in = F.pad(x, (left, pw - left, top, ph - top), mode="reflect")
            else:
                x_in = x
            y = self.out(self.up(self.body(self.head(x_in))))
            y = y[..., top : top + h, left : left + w]
        else:
            y = self.out(self.up(self.body(self.head(x))))
        if not self.global_skip:
            return (torch.tanh(y) + 1) / 2
        rgb = picture_of(x)
        base = rgb if self.scale == 1 else F.interpolate(rgb, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + torch.tanh(y)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected an N x {self.cfg.in_channels} x H x W tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if min(h, w) < MIN_INPUT_SIZE:
            raise ValueError(f"input {w}x{h} is too small: reflection padding needs sides of at least {MIN_INPUT_SIZE}")


def picture_of(x: torch.Tensor) -> torch.Tensor:
    """The RGB picture of an N x C x H x W input: a gray channel repeated, a level channel dropped."""
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x[:, :3]


class PlainResidualBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3 plus the identity, no norm (EDSR: batch norm hurts restoration)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


# ITU-R BT.601 full-range YCbCr -> RGB (JPEG's), the inverse of the luma the Grayscale degradation takes.
_CHROMA_TO_RGB = ((0.0, 1.402), (-0.344136, -0.714136), (1.772, 0.0))
_LUMA = (0.299, 0.587, 0.114)


class HeadBodyTail(nn.Module):
    """What ResNet and ColorNet share: a conv ``head``, a residual ``body`` and a zero-initialised
    conv ``tail`` (so the untrained net returns its skip path, the baseline)."""

    head: nn.Conv2d
    tail: nn.Conv2d

    @property
    def first_conv(self) -> nn.Conv2d:
        return self.head

    @property
    def last_conv(self) -> nn.Conv2d:
        return self.tail


class ResNet(HeadBodyTail):
    """``down`` (pixel unshuffle) - ``head`` - ``body`` (residual blocks) + ``body_out`` with a long
    skip - ``tail`` (conv to out x factor**2 channels) - ``up`` (pixel shuffle by unshuffle x scale),
    added to the baseline. ``tail`` is zero-initialised: the untrained net returns its baseline
    exactly (the input, its bicubic upscale, or the gray input), so training starts there."""

    global_skip = True  # training.tiling: the SR baseline's bicubic reaches 2 input pixels

    def __init__(self, cfg: ResNetConfig, scale: int) -> None:
        super().__init__()
        _check_scale(scale)
        self.cfg, self.scale = cfg, scale
        u, c = cfg.unshuffle, cfg.channels
        out = 2 if cfg.predict == "chroma" else cfg.out_channels
        self.down = nn.PixelUnshuffle(u) if u > 1 else nn.Identity()
        self.head = nn.Conv2d(cfg.in_channels * u * u, c, 3, padding=1)
        self.body = nn.Sequential(*(PlainResidualBlock(c) for _ in range(cfg.residual_blocks)))
        self.body_out = nn.Conv2d(c, c, 3, padding=1)
        factor = u * scale
        if cfg.predict == "chroma":
            self.tail = nn.Conv2d(c, out, 3, padding=1)
            self.up = nn.Upsample(scale_factor=factor, mode="bilinear", align_corners=False) if factor > 1 else nn.Identity()
        elif cfg.hr_channels:
            n = cfg.hr_channels
            self.tail = nn.Conv2d(c, n * factor * factor, 3, padding=1)
            self.up = nn.Sequential(*([nn.PixelShuffle(factor)] if factor > 1 else []), nn.Conv2d(n, n, 3, padding=1),
                                    nn.ReLU(inplace=True), nn.Conv2d(n, out, 3, padding=1))
        else:
            self.tail = nn.Conv2d(c, out * factor * factor, 3, padding=1)
            self.up = nn.PixelShuffle(factor) if factor > 1 else nn.Identity()
        if cfg.global_context:
            self.image_mean = ImageMean()
            self.context = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, 2 * c))
            nn.init.zeros_(self.context[2].weight)  # starts as the identity: scale 1, shift 0
            nn.init.zeros_(self.context[2].bias)
        # The last conv starts at zero (the tail before an HR head keeps its random init, or no
        # gradient would reach either).
        nn.init.zeros_(self.last_conv.weight)
        nn.init.zeros_(self.last_conv.bias)

    @property
    def last_conv(self) -> nn.Conv2d:
        return self.up[-1] if self.cfg.hr_channels and self.cfg.predict == "rgb" else self.tail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected an N x {self.cfg.in_channels} x H x W tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        u = self.cfg.unshuffle
        if min(h, w) < max(2, u):
            raise ValueError(f"input {w}x{h} is too small: sides of at least {max(2, u)} are needed")
        # Reflect-pad to a multiple of the unshuffle factor, split as the paper's net splits it.
        ph, pw = -h % u, -w % u
        top, left = ph // 2, pw // 2
        x_in = F.pad(x, (left, pw - left, top, ph - top), mode="reflect") if ph or pw else x
        f = self.head(self.down(x_in))
        g = self.body_out(self.body(f)) + f
        if self.cfg.global_context:
            scale, shift = self.context(self.image_mean(g.float())).to(g.dtype)[:, :, None, None].chunk(2, dim=1)
            g = g * (1 + scale) + shift
        residual = self.up(self.tail(g).float())
        s = self.scale
        residual = residual[..., top * s : (top + h) * s, left * s : (left + w) * s]
        x = x.float()
        if self.cfg.predict == "chroma":
            return _add_chroma(_luma(x), residual)
        rgb = picture_of(x)
        base = rgb if s == 1 else F.interpolate(rgb, scale_factor=s, mode="bicubic", align_corners=False)
        return base + residual


def chroma_bin_centres(bins: int) -> torch.Tensor:
    """2 x bins²: the (Cb, Cr) centres of a bins x bins grid of equal cells over [-0.5, 0.5]², the
    range of full-range BT.601 chroma; Cb varies slowest. Symmetric about 0, so a uniform
    distribution (the zero-initialised tail's) decodes to gray."""
    g = (torch.arange(bins, dtype=torch.float32) + 0.5) / bins - 0.5
    return torch.stack(torch.meshgrid(g, g, indexing="ij")).reshape(2, -1)


def rgb_to_chroma(x: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W RGB -> N x 2 x H x W full-range BT.601 (Cb, Cr): the inverse of ``_add_chroma``."""
    y = _luma(x)
    return torch.cat([(x[:, 2:3] - y) / 1.772, (x[:, 0:1] - y) / 1.402], dim=1)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return x[:, :1] if x.shape[1] == 1 else sum(k * x[:, i : i + 1] for i, k in enumerate(_LUMA))


def _add_chroma(luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    cb, cr = chroma[:, :1], chroma[:, 1:2]
    return torch.cat([luma + a * cb + b * cr for a, b in _CHROMA_TO_RGB], dim=1)


class ColorNet(HeadBodyTail):
    """``pool`` (1/downsample) - ``encoder`` (frozen feature network to relu3_1, 1/4 more) beside the
    luma unshuffled to the same grid - ``head`` - ``body`` + ``body_out`` with a long skip - ``tail``
    (Cb, Cr), or logits over a grid of (Cb, Cr) cells decoded to their annealed mean with
    ``chroma_bins`` - ``up`` (bilinear) - times 4 Y (1 - Y) with ``chroma_gamut`` - added to the luma.
    ``tail`` is zero-initialised: the untrained net returns its gray input. Options: the image's mean
    encoder feature added to the decoder (``global_context``), a guided filter on the chroma
    (``chroma_guide``)."""

    def __init__(self, cfg: ColorNetConfig, scale: int) -> None:
        super().__init__()
        if scale != 1:
            raise ValueError(f"colornet is for same-size tasks (scale 1), got scale {scale}")
        from training.vgg import feature_net_skeleton  # training.vgg imports nothing from here

        self.cfg, self.scale = cfg, scale
        self.factor = f = 4 * cfg.downsample
        self.pool = nn.AvgPool2d(cfg.downsample) if cfg.downsample > 1 else nn.Identity()
        self.encoder = feature_net_skeleton(cfg.encoder, "relu3_1")
        c = cfg.channels
        self.head = nn.Conv2d(256 + f * f, c, 3, padding=1)
        self.body = nn.Sequential(*(PlainResidualBlock(c) for _ in range(cfg.residual_blocks)))
        self.body_out = nn.Conv2d(c, c, 3, padding=1)
        self.tail = nn.Conv2d(c, cfg.chroma_bins**2 if cfg.chroma_bins else 2, 3, padding=1)
        if cfg.chroma_bins:  # a constant, rebuilt from the config: not saved
            self.register_buffer("bin_centres", chroma_bin_centres(cfg.chroma_bins), persistent=False)
        self.chroma_logits: torch.Tensor | None = None  # the last training forward's, for the loss
        self.up = nn.Upsample(scale_factor=f, mode="bilinear", align_corners=False)
        if cfg.global_context:
            self.image_mean = ImageMean()
            self.context = nn.Sequential(nn.Linear(256, c), nn.ReLU(inplace=True), nn.Linear(c, c))
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def receptive_field(self) -> tuple[int, int]:
        """(radius in input pixels, alignment): the encoder path, then the decoder on its grid."""
        from training.tiling import walk_radius

        radius, step = walk_radius([self.pool, self.encoder])
        radius, _ = walk_radius([self.head, self.body, self.body_out, self.tail, self.up], radius, step)
        # the guided filter's output reads its box means' box means: twice its radius
        return math.ceil(radius) + 2 * self.cfg.chroma_guide, self.factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected an N x {self.cfg.in_channels} x H x W tensor, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        f = self.factor
        luma = _luma(x.float())
        ph, pw = -h % f, -w % f
        top, left = ph // 2, pw // 2
        padded = F.pad(luma, (left, pw - left, top, ph - top), mode="reflect") if ph or pw else luma
        with torch.no_grad():  # frozen: no gradient is needed below the decoder
            features = self.encoder(self.pool(padded).expand(-1, 3, -1, -1))["relu3_1"]
        z = self.head(torch.cat([features.to(padded.dtype), F.pixel_unshuffle(padded, f)], dim=1))
        if self.cfg.global_context:
            z = z + self.context(self.image_mean(features.float())).to(z.dtype)[:, :, None, None]
        chroma = self.tail(self.body_out(self.body(z)) + z).float()
        if self.cfg.chroma_bins:
            self.chroma_logits = chroma if self.training else None
            # the expected (Cb, Cr) under the softmax: a 1x1 convolution with the cell centres
            chroma = F.conv2d(torch.softmax(chroma / self.cfg.temperature, dim=1), self.bin_centres[:, :, None, None])
        chroma = self.up(chroma)
        if self.cfg.chroma_guide:  # on the padded grid, as tiles of it (training.tiling) see it
            chroma = guided_filter(padded.float(), chroma, self.cfg.chroma_guide, self.cfg.guide_eps)
        chroma = chroma[..., top : top + h, left : left + w]
        if self.cfg.chroma_gamut:
            chroma = chroma * (4 * luma * (1 - luma)).clamp_min(0)
        return _add_chroma(luma, chroma)


class ImageMean(nn.Module):
    """N x C x H x W -> N x C: the mean over the image. A layer of its own so that tiled inference
    (training.tiling) can give every tile the whole image's mean, as it does InstanceNorm's."""

    whole_image_mean = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The mean over each (2 radius + 1)² window, edges replicated; from cumulative sums, so its
    cost does not grow with the radius (float64 sums: in float32 a 3000² image's means were off by
    2e-5, 2 % of the default guide_eps that the guided filter's variances are set against)."""
    k = 2 * radius + 1
    c = F.pad(x, (radius + 1, radius, radius + 1, radius), mode="replicate").double().cumsum(-1)
    c = (c[..., k:] - c[..., :-k]).cumsum(-2)
    return ((c[..., k:, :] - c[..., :-k, :]) / (k * k)).to(x.dtype)


def guided_filter(guide: torch.Tensor, x: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter: ``x`` (N x C x H x W) made locally linear in ``guide`` (N x 1 x H
    x W, a constant: no gradient) over windows of ``radius``; where the guide is flat (variance <<
    ``eps``) ``x`` is smoothed, at the guide's edges ``x`` takes them."""
    with torch.no_grad():
        mean_g = box_mean(guide, radius)
        var_g = box_mean(guide * guide, radius) - mean_g * mean_g
    mean_x = box_mean(x, radius)
    a = (box_mean(guide * x, radius) - mean_g * mean_x) / (var_g + eps)
    return box_mean(a, radius) * guide + box_mean(mean_x - a * mean_g, radius)


def init_encoder(model: nn.Module, feature_net: nn.Module) -> bool:
    """Copy a loaded feature network's weights into a model that embeds one (colornet); False if
    the model has none. The layouts must match: the model's ``encoder`` is the feature_net kind."""
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        return False
    layout = {"random": "vgg19_normalised"}.get(feature_net.kind, feature_net.kind)  # "random": tests' untrained VGG-19
    if encoder.kind != layout:
        raise ValueError(f"the model's encoder is {encoder.kind} but the feature network is {feature_net.kind}: "
                         f"set model.encoder to {feature_net.kind!r}")
    wanted = encoder.state_dict()
    encoder.load_state_dict({k: v for k, v in feature_net.state_dict().items() if k in wanted}, strict=True)
    return True


def _check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SCALES:
        raise ValueError(f"scale must be a power of two in {', '.join(map(str, SCALES))}; got {scale!r}")


def build_transform_net(cfg: TransformNetConfig | ResNetConfig | ColorNetConfig, scale: int) -> nn.Module:
    """The network ``cfg.arch`` names: for ``johnson`` the style net at ``scale == 1`` and the SR net
    at ``scale`` in 2, 4, 8, 16; ``resnet`` at any of those scales; ``colornet`` at scale 1."""
    _check_scale(scale)
    if isinstance(cfg, ResNetConfig):
        return ResNet(cfg, scale)
    if isinstance(cfg, ColorNetConfig):
        return ColorNet(cfg, scale)
    return TransformNet(cfg, scale)


def count_parameters(model: nn.Module) -> int:
    """Learned parameters (buffers such as batch-norm running statistics are not counted)."""
    return sum(p.numel() for p in model.parameters())
