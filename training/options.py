"""The typed options of the compute: what a network, a loss, the optimiser, the promotion gate, a
feature network and the inference engine take (``model:``, ``loss:``, ``optim:``, ``promote:``,
``feature_net:``, ``inference:`` in params.yaml).

Pydantic only, no torch: the settings schema (pipelines/common/schema.py) and the task registry
load them in a process that never builds a network, and the modules that do (models, losses,
loop, quality, vgg, lpips, inference) take them from here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, TypeAdapter, model_validator


# ------------------------------------------------------------------------------------------
# Networks (built by training.models.build_transform_net)

class TransformNetConfig(BaseModel):
    """Architecture settings; the task (through ``scale``) picks the style net or the SR net.

    ``global_skip``: the output is a fixed estimate plus a bounded residual the network learns,
    which starts at zero (the output conv is zero-initialised), so training starts from the
    baseline instead of from noise. The estimate is the bicubic upscale of the input for SR and
    the input itself for same-size restoration (its gray channel repeated for colorization).
    Off by default: a style transfer net must be free to move far from its input.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["johnson"] = Field("johnson", description="the paper's networks: its style net, or its SR net for a scale")
    # Style net widths are channels, 2*channels, 4*channels: 32/64/128 in the paper (suppl. Table 1).
    channels: int = Field(32, ge=1, le=1024)
    # SR net width: 64 in the paper (suppl. Table 2).
    sr_channels: int = Field(64, ge=1, le=1024)
    # Paper: 5 for the style net, 4 for SR (the task registry sets 4 for SR).
    residual_blocks: int = Field(5, ge=0, le=32)
    # "instance": Ulyanov et al. 2016, what fast style transfer needs (affine=True).
    # "batch": the paper's choice for every network.
    norm: Literal["batch", "instance"] = "instance"
    # "deconv": the paper's fractionally-strided conv (stride 1/2). "resize_conv": nearest x2 then
    # 3x3 conv, free of checkerboard artefacts (Odena et al. 2016). "pixel_shuffle": 3x3 conv to
    # 4x the channels then a sub-pixel shuffle (Shi et al. 2016).
    upsample: Literal["deconv", "resize_conv", "pixel_shuffle"] = "resize_conv"
    global_skip: bool = Field(False, description="add the input (or its bicubic upscale) to the output")
    # Colorization may feed a single gray channel, a conditioned task RGB and its level channel
    # (training.degradations.with_level); the output is always RGB.
    in_channels: Literal[1, 3, 4] = Field(3, description="set by the task: 1 for a gray input, 4 with a level channel")
    out_channels: Literal[3] = Field(3, description="RGB out")


class ResNetConfig(BaseModel):
    """The residual restoration network (``arch: resnet``): see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["resnet"] = Field("resnet", description="a residual body without normalisation (EDSR) at the input's "
                                    "resolution, starting from its baseline")
    channels: int = Field(64, ge=1, le=1024, description="feature channels of the body")
    residual_blocks: int = Field(4, ge=0, le=64, description="residual blocks of two 3x3 convs each")
    # The body runs at 1/unshuffle of the input resolution, on unshuffle**2 times the channels.
    unshuffle: Literal[1, 2, 4, 8] = 1
    # "rgb": the baseline (the input, or its bicubic upscale for SR) plus a learned RGB residual.
    # "chroma": the input's luma with learned Cb and Cr (colorization: the gray input is kept
    # exactly), predicted at the body's resolution and upsampled bilinearly: chroma varies slowly
    # in photos, and per-pixel chroma noise costs far more SSIM than blur does (docs/networks.md).
    predict: Literal["rgb", "chroma"] = "rgb"
    in_channels: Literal[1, 3, 4] = Field(3, description="set by the task: 1 for a gray input, 4 with a level channel")
    out_channels: Literal[3] = Field(3, description="RGB out")
    # A blind restorer has to tell a quality-90 JPEG from a quality-10 one; its receptive field
    # sees a few blocks. With this the body's features are scaled and shifted per channel by a
    # function of their mean over the whole image (FiLM), so the net can judge the level from
    # all of it and hold back on a nearly clean input. Tiled inference uses the whole image's mean.
    global_context: bool = False
    # 0: the tail predicts every output pixel at the body's resolution and pixel-shuffles it up, so
    # each of the factor² sub-pixel phases has its own filter and nothing ties neighbours of
    # different phases (a feature loss turns that freedom into a grid of period `factor`). n > 0:
    # the tail predicts n channels per output pixel and two 3x3 convs at the output resolution
    # (n -> n, ReLU, n -> 3) make the residual, as ESRGAN's conv_hr does (sr_x4_perceptual: n = 8).
    hr_channels: int = Field(0, ge=0, le=64)


class ColorNetConfig(BaseModel):
    """Colorization (``arch: colornet``): a frozen pretrained encoder (the feature network up to
    relu3_1, on the gray input at 1/``downsample`` resolution) gives the decoder what no net
    trained from scratch for minutes learns, what things are; the decoder, residual blocks at
    1/(4 x downsample) resolution, predicts Cb and Cr, upsampled bilinearly and added to the input's
    luma, which is kept exactly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["colornet"] = Field("colornet", description="colorization: a frozen feature-network encoder and a "
                                      "residual chroma decoder")
    channels: int = Field(96, ge=1, le=1024, description="feature channels of the decoder")
    residual_blocks: int = Field(4, ge=0, le=64, description="residual blocks of the decoder")
    downsample: Literal[1, 2, 4] = Field(2, description="the gray input is shrunk by this before the encoder")
    # The feature network's layout (feature_net.kind once resolved); its weights are copied in
    # from feature_net.weights before training and saved with the model.
    encoder: Literal["vgg19_normalised", "torchvision_vgg16", "torchvision_vgg19"] = "vgg19_normalised"
    # Scale the (low-resolution) chroma by 4 Y (1 - Y) at full resolution: the room the luma leaves
    # for colour, 0 at black and white, 1 at mid-gray. Without it the upsampled chroma spills into
    # dark and bright pixels at edges, where a wrong colour costs SSIM most. Off for files saved
    # before it existed.
    chroma_gamut: bool = False
    # Add the image's mean encoder feature, through a small MLP, to every decoder position: a cue
    # from the whole scene (Iizuka et al. 2016's global features), so one image's colours agree.
    # Tiled inference pools it over the whole image, not per tile (training.tiling).
    global_context: bool = False
    # Radius (input pixels) of a guided filter (He et al. 2013) on the upsampled chroma with the
    # luma as guide: colour edges follow the luma's edges instead of bilinear ramps over the
    # decoder's 1/8 grid; ``guide_eps`` is its edge threshold (luma variance). 0: off.
    chroma_guide: int = Field(0, ge=0, le=32)
    guide_eps: float = Field(1e-3, gt=0, description="the guided filter's regulariser: larger smooths more")
    # Predict chroma as a distribution over a chroma_bins x chroma_bins grid of (Cb, Cr) cells
    # instead of regressing it (Zhang et al. 2016), trained by the loss's ``chroma_bin_weight``
    # (cross-entropy); a regression averages an uncertain colour toward sepia, a distribution
    # keeps its modes. Decoded as the annealed mean at ``temperature`` (1: the plain mean; lower:
    # toward the mode, more colour). 0: regress Cb and Cr.
    chroma_bins: int = Field(0, ge=0, le=64)
    temperature: float = Field(1.0, gt=0, description="the bins' distribution is decoded at this temperature "
                               "(below 1: more saturated)")
    in_channels: Literal[1, 3] = Field(3, description="set by the task: 1 for a gray input")
    out_channels: Literal[3] = Field(3, description="RGB out")


def _arch_of(value: Any) -> str:
    # Model files written before `arch` existed hold the paper's network.
    return value.get("arch", "johnson") if isinstance(value, dict) else getattr(value, "arch", "johnson")


# What `model:` in a task block (and `model_config` in a model file) may hold.
ModelConfig = Annotated[
    Union[Annotated[TransformNetConfig, Tag("johnson")], Annotated[ResNetConfig, Tag("resnet")],
          Annotated[ColorNetConfig, Tag("colornet")]],
    Discriminator(_arch_of),
]


_MODEL_CONFIG = TypeAdapter(ModelConfig)


def parse_model_config(data: dict[str, Any]) -> TransformNetConfig | ResNetConfig | ColorNetConfig:
    """A model config from plain data (a params block, or a model file's ``model_config``)."""
    return _MODEL_CONFIG.validate_python(data)


# ------------------------------------------------------------------------------------------
# Optimisation (training.loop)

class OptimConfig(BaseModel):
    """How one task trains. ``batch_size`` is the global batch, split evenly over the workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: int = Field(500, ge=1, description="optimiser steps: the training's length")
    batch_size: int = Field(8, ge=1, description="samples per step, over all workers")
    lr: float = Field(1e-3, gt=0, le=1, description="Adam's learning rate after the warm-up")
    lr_schedule: Literal["constant", "cosine"] = Field("cosine", description="cosine: decays to 1 % of lr by the last step")
    warmup_steps: int = Field(0, ge=0, description="steps of linear warm-up from 0 to lr")
    weight_decay: float = Field(0.0, ge=0, description="AdamW's decoupled weight decay")
    grad_clip: float | None = Field(1.0, gt=0, description="the gradient's largest norm; null = no clipping")
    # An exponential moving average of the weights is saved in place of the last ones (BasicSR
    # and traiNNer-redux use 0.999 over 100k+ steps); 0 turns it off. See WeightAverage.
    ema_decay: float = Field(0.0, ge=0, lt=1)


# ------------------------------------------------------------------------------------------
# Losses (training.losses, training.adversarial)

class GanConfig(BaseModel):
    """``loss.gan``: the adversarial term (off at ``weight`` 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Real-ESRGAN weighs its GAN term 0.1 beside L1 1 and the perceptual term 1.
    weight: float = Field(0.0, ge=0)
    # The discriminator's width (Real-ESRGAN: 64; half of it costs a quarter of the compute on a CPU).
    features: int = Field(32, ge=4, le=256)
    lr: float = Field(1e-4, gt=0, le=1, description="the discriminator's learning rate")


LayerName = Annotated[str, StringConstraints(pattern=r"^relu\d+_\d+$")]


Weight = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class LossConfig(BaseModel):
    """How the training loss is made (``loss:`` in params.yaml); every weight >= 0, at least one > 0.

    ``style_layers=None`` means every layer the feature network provides (relu1_1..relu3_1 for the
    default normalised VGG-19, the Gatys/Johnson choice of one layer per block up to its depth).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature_weight: Weight = Field(1.0, description="the feature reconstruction loss (the paper's content loss)")
    feature_layer: LayerName = Field("relu2_2", description="the feature network's layer it compares at")
    # The feature network sees output and target through a [1 2 1] binomial blur, which removes
    # the Nyquist frequency: VGG's max-pooling reads a one-pixel stripe pattern as texture (the
    # pooled maximum of +-e is +e), so an unblurred feature loss paints one (the grid of the
    # perceptual SR sheets, +44 dB at half the sampling rate); the pixel term alone then decides it.
    feature_blur: bool = False
    # A sub-pixel grid in the output, penalised (``subpixel_grid_loss`` at the upsampler's period):
    # the blur leaves the grid at a quarter of the sampling rate, this removes it (and the one-pixel
    # stripes, a harmonic too) without hiding detail from VGG (docs/blind-restoration.md). From the
    # end of pixel_only_steps, as the feature term: during them it stalls the net near bicubic.
    grid_weight: Weight = 0.0
    style_weight: Weight = Field(0.0, description="the style loss: Gram matrices against the style image's")
    style_layers: tuple[LayerName, ...] | None = Field(None, description="the layers of the style loss; null = every "
                                                       "relu_1 layer the feature network has")
    tv_weight: Weight = Field(0.0, description="total variation: smoothness of the output")
    pixel_weight: Weight = Field(0.0, description="the pixel loss against the target")
    pixel: Literal["l1", "mse", "psnr"] = Field("l1", description="the pixel loss: L1, MSE, or minus the per-image PSNR")
    # 1 - SSIM (RGB): what colorization is judged on beside PSNR; it punishes wrong or noisy
    # chroma in dark regions, where L1 barely sees it.
    ssim_weight: Weight = 0.0
    # |colourfulness(output) - colourfulness(target)| per image: pixel losses alone fade an
    # uncertain colorization to one sepia tint; this asks for the target's amount of colour.
    colourfulness_weight: Weight = 0.0
    # The same over the whole batch taken as one image: the spread of colour between patches of
    # different images, which no per-patch term sees and a whole image's colourfulness counts. On
    # colorize it bought colour at 2.5x less SSIM per point than the per-patch term (docs/networks.md).
    batch_colourfulness_weight: Weight = 0.0
    # The first steps train on pixel L1 alone (weight 1, no feature network run): a PSNR-led start
    # that the other terms then sharpen, as SRGAN and ESRGAN pretrain. 0: every term from step 0.
    pixel_only_steps: int = Field(0, ge=0)
    # Cross-entropy of a colornet's chroma-bin logits (model.chroma_bins > 0) against the target's
    # chroma (Zhang et al. 2016), and its class rebalancing: 0 weighs every position alike; r > 0
    # weighs a position by 1 / (r p + (1 - r) / bins²) of its colour's frequency p in the batch, so
    # rare, saturated colours count against the common desaturated ones (their r: 0.5).
    chroma_bin_weight: Weight = 0.0
    chroma_bin_rebalance: float = Field(0.0, ge=0, le=1, description="r: a position weighs 1 / (r p + (1 - r) / bins) "
                                        "of its colour's frequency p in the batch; 0 = no rebalancing")
    # The adversarial term (training/adversarial.py: a spectral-norm U-Net discriminator, the
    # relativistic GAN loss), from the end of pixel_only_steps; off at gan.weight 0.
    gan: GanConfig = GanConfig()

    @model_validator(mode="after")
    def _something_to_optimise(self) -> LossConfig:
        weights = (self.feature_weight, self.style_weight, self.tv_weight, self.pixel_weight, self.ssim_weight,
                   self.colourfulness_weight, self.batch_colourfulness_weight, self.chroma_bin_weight)
        if not any(w > 0 for w in weights):
            raise ValueError("all loss weights are 0: set at least one of feature/style/tv/pixel/ssim/"
                             "colourfulness/batch_colourfulness/chroma_bin_weight > 0")
        if self.style_layers is not None:
            if not self.style_layers:
                raise ValueError("style_layers is empty: list layers, or leave it unset for all of them")
            if len(set(self.style_layers)) != len(self.style_layers):
                raise ValueError(f"style_layers has duplicates: {self.style_layers}")
        return self

    @property
    def needs_features(self) -> bool:
        """Whether a feature network must be loaded (feature or style loss active)."""
        return self.feature_weight > 0 or self.style_weight > 0

    @property
    def needed_layers(self) -> tuple[str, ...] | None:
        """The ``layers`` to pass to ``load_feature_net``: None means all it has (style over every layer).

        Empty when no feature network is needed.
        """
        layers: list[str] = []
        if self.style_weight > 0:
            if self.style_layers is None:
                return None
            layers += self.style_layers
        if self.feature_weight > 0:
            layers.append(self.feature_layer)
        return tuple(dict.fromkeys(layers))


# ------------------------------------------------------------------------------------------
# Metrics and the promotion gate (training.quality)

# Which way each metric of training.quality.METRICS is better (True: higher). Here, apart from how
# they are computed, so the schema and the registry check names and directions without torch.
HIGHER_IS_BETTER: dict[str, bool] = {
    "psnr_y": True, "ssim_y": True, "psnr": True, "ssim": True, "colourfulness": True,
    "feature_distance": False, "lpips": False, "content_loss": False, "style_loss": False,
    "perceptual_total": False, "periodic_db": False, "grid_db": False,
}


class GateConfig(BaseModel):
    """When a challenger may replace the champion (per task in params.yaml, ``tasks.<t>.promote``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: str = Field("psnr_y", description="the primary metric; its direction comes from the metric")
    margin: float = Field(0.0, ge=0, description="the challenger must beat the champion by at least this")
    tolerances: dict[str, float] = Field(default_factory=dict, description="secondary metric -> largest allowed regression")
    # Absolute bounds, whatever the primary metric says: a lower-is-better metric must not exceed
    # its limit, a higher-is-better one must reach it (style: a content loss above the bound means
    # the content is gone, however low the weighted total).
    limits: dict[str, float] = Field(default_factory=dict, description="metric -> bound it must stay within")
    # A model that helps on average can still harm some inputs (a JPEG model trained at quality 10
    # ruins quality-90 files): every set, and every evaluation level, must be at least its baseline.
    no_harm: bool = Field(True, description="refuse a challenger worse than the baseline on any set or level by `metric`")

    def check_metrics(self, reported: tuple[str, ...]) -> None:
        for name in (self.metric, *self.tolerances, *self.limits):
            if name not in reported:
                raise ValueError(f"promote metric {name!r} is not reported by this task (it reports {', '.join(reported)})")


# ------------------------------------------------------------------------------------------
# Feature networks (training.vgg, training.lpips)

class FeatureNetConfig(BaseModel):
    """Which pretrained network computes the perceptual features (``feature_net:`` in params.yaml).

    ``padding="auto"`` follows each network's training: reflect for the normalised VGG-19 (WCT used
    ``ReflectionPad2d``), zeros for torchvision VGGs. It only changes the borders of the feature maps.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: str = Field("data/weights/vgg_normalised_conv3_1.pth", min_length=1, description="the state dict file "
                         "(acquire copies the default in; nothing is downloaded)")
    kind: Literal["auto", "vgg19_normalised", "torchvision_vgg16", "torchvision_vgg19", "random"] = Field(
        "auto", description="which network the file holds; auto = told by its keys and shapes")
    padding: Literal["auto", "reflect", "zeros"] = Field("auto", description="conv padding; auto = the network's own "
                                                         "(reflect for the normalised VGG-19)")
    seed: int = 0  # only for kind "random"


class LpipsConfig(BaseModel):
    """``evaluate.lpips`` in params.yaml: both files, local paths."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    vgg16: str = Field(min_length=1, description="a torchvision VGG-16 state dict (features.* keys)")
    lin: str = Field(min_length=1, description="the LPIPS VGG linear layers (lin0..lin4)")


# ------------------------------------------------------------------------------------------
# Inference (training.inference.Engine)

AUTO_TILE_OUTPUT = 1024  # tile="auto": tiles of about this many output pixels a side


class InferenceConfig(BaseModel):
    """How ``Engine`` runs a network (``inference:`` in params.yaml, flags of ``percept apply``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$", description="cpu, cuda or cuda:N")
    tile: int | Literal["auto"] | None = Field(
        "auto", description=f"input pixels per tile side; auto = {AUTO_TILE_OUTPUT} output pixels; null = whole images")
    overlap: int | None = Field(None, ge=0, description="tile overlap in input pixels, at least the network's "
                                "receptive radius (null: that radius)")
    batch: int = Field(4, ge=1, le=1024, description="same-size images or tiles per forward pass")
    channels_last: bool = Field(False, description="channels-last tensors: faster for SR on CPU, slower for the style net")
    compile: bool = Field(False, description="torch.compile the network (a warm-up compiles it once)")
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
