"""Degradations: how a task makes its input from a clean target image.

Each degradation is a small typed settings object (validated from ``params.yaml``) that is also
the pure function ``degradation(target_uint8_hwc, seed) -> input_uint8``. The same seed gives the
same input, so shards are reproducible byte for byte.

Super-resolution uses our MATLAB-compatible ``imresize`` because every published SR table is
computed with it; noise, blur and gray use albumentations (applied to the input only); JPEG is
an RGB round trip through libjpeg (``jpeg_roundtrip``: albumentations' swaps the channels). A
strength written as ``[low, high]`` is drawn per sample from the sample's seed (blind tasks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, PrivateAttr, TypeAdapter, ValidationError, WithJsonSchema, model_validator

from training.conditioning import LevelSpec, level_code, with_level
from training.imresize import imresize_uint8

if TYPE_CHECKING:
    import albumentations as A  # imported where a transform is built: it loads torch (2 s), which
    # the settings schema, reading these classes in every `percept` process, must not pay for


class Degradation(BaseModel):
    """Base class: settings plus ``__call__(target, seed) -> input``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[str] = "degradation"
    _pipeline: Any = PrivateAttr(default=None)  # the albumentations Compose, built on first use

    @property
    def input_scale(self) -> int:
        """How much smaller the input is than the target (1 for same-size tasks)."""
        return 1

    @property
    def input_channels(self) -> int:
        """Channels of the input the network sees (colorization may feed one gray channel)."""
        return 3

    def level_spec(self) -> LevelSpec | None:
        """What a model trained on this records about its level channel (None: not conditioned)."""
        return None

    def describe(self) -> dict[str, Any]:
        """What went into the input, for each sample's meta.json."""
        return {"kind": self.kind, **self.model_dump()}

    def __call__(self, target: np.ndarray, seed: int) -> np.ndarray:
        check_uint8_rgb(target)
        if self._pipeline is None:
            import albumentations as A

            self._pipeline = A.Compose(self.transforms())
        self._pipeline.set_random_seed(seed)
        return self._pipeline(image=target)["image"]

    def transforms(self) -> list[A.BasicTransform]:
        raise NotImplementedError


class BicubicDownscale(Degradation):
    """SR input: MATLAB bicubic downscale by ``scale``, rounded to 8 bits (the benchmark protocol).

    ``blur_sigma`` adds the paper's variant: a Gaussian blur before the downscale.
    """

    kind: ClassVar[str] = "bicubic_downscale"
    scale: int = Field(4, ge=1, le=16, description="the input is the target downscaled by this (MATLAB-compatible bicubic)")
    blur_sigma: float | None = Field(None, gt=0, description="a Gaussian blur before the downscale; null = none")

    @property
    def input_scale(self) -> int:
        return self.scale

    def __call__(self, target: np.ndarray, seed: int) -> np.ndarray:
        h, w = check_sr_target(target, self.scale)
        if self.blur_sigma is not None:
            import albumentations as A

            blur = A.GaussianBlur(blur_limit=0, sigma_limit=(self.blur_sigma, self.blur_sigma), p=1.0)
            target = blur(image=target)["image"]
        return imresize_uint8(target, output_shape=(h // self.scale, w // self.scale))


def Level(kind: type = float, **bounds: float) -> Any:
    """A settings type for a strength: one value (fixed) or ``[low, high]`` (drawn per sample),
    each value within ``bounds``; an error names the bound, not the union's two branches."""
    one = TypeAdapter(Annotated[kind, Field(**bounds)])

    def check(value: Any) -> Any:
        try:
            if isinstance(value, (list, tuple)):
                if len(value) != 2:
                    raise ValueError(f"expected a number or a [low, high] pair, got {len(value)} values")
                return one.validate_python(value[0]), one.validate_python(value[1])
            return one.validate_python(value)
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"]) from None

    # Written back as it was given: a number, or a [low, high] list (meta.json, MLflow params). A
    # plain validator shows as "anything" in a JSON schema: say what it takes (params.yaml's schema).
    value = one.json_schema()
    shape = {"anyOf": [value, {"type": "array", "prefixItems": [value, value], "minItems": 2, "maxItems": 2}]}
    return Annotated[kind | tuple[kind, kind], PlainValidator(check), WithJsonSchema(shape),
                     PlainSerializer(lambda v: list(v) if isinstance(v, tuple) else v)]


def level_range(value: float | tuple[float, float]) -> tuple[float, float]:
    """A level as (low, high): a number is a fixed level, a pair a range drawn uniformly per sample."""
    return (float(value), float(value)) if isinstance(value, (int, float)) else (float(value[0]), float(value[1]))


class LevelledDegradation(Degradation):
    """A degradation with one strength (``level_key``) that is either fixed or a [low, high] range
    drawn per sample from the sample's seed (blind restoration: one model for every level).

    ``condition`` tells the network the level: the input gains a fourth channel holding the level's
    code (``level_code``) at every pixel, as FFDNet's noise level map and FBCNN's quality factor do.
    A blind net has to judge the level from a few blocks and hedges: it smooths a quality-90 JPEG
    as if it might be a quality-30 one. At inference the level comes from the user, or from a JPEG
    file's quantisation tables (``training.conditioning``)."""

    level_key: ClassVar[str]
    # The share of samples left clean (input = target): a blind net that also sees clean inputs
    # learns to leave them alone, where it would otherwise smooth a nearly clean photo. Code 0 is
    # "clean" (sigma 0, or no JPEG at all).
    clean_prob: float = Field(0.0, ge=0, lt=1)
    condition: bool = Field(False, description="give the model its input's level as a fourth input channel")
    _code_scale: float | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _ordered(self) -> LevelledDegradation:
        low, high = level_range(getattr(self, self.level_key))
        if low > high:
            raise ValueError(f"{self.level_key}: the range [{low:g}, {high:g}] is reversed")
        return self

    @property
    def input_channels(self) -> int:
        return 4 if self.condition else 3

    @property
    def level_scale(self) -> float:
        """Codes per unit of level: the top of the range is code 255, so the channel spans 0..1
        for the network whatever the level's units (a quality, a sigma in pixels). A fixed level
        taken from a range (``at``) keeps the range's scale: the code a model trained on it knows."""
        if self._code_scale is not None:
            return self._code_scale
        high = self.levels[1]
        return 255.0 / high if high > 0 else 1.0

    @property
    def levels(self) -> tuple[float, float]:
        return level_range(getattr(self, self.level_key))

    @property
    def blind(self) -> bool:
        low, high = self.levels
        return low != high

    def at(self, level: float) -> LevelledDegradation:
        """The same degradation at one fixed level, every sample degraded (evaluation per level)."""
        fixed = type(self)(**{**self.model_dump(), self.level_key: level, "clean_prob": 0.0})
        fixed._code_scale = self.level_scale
        return fixed

    def level_spec(self) -> LevelSpec | None:
        """What a model trained on this records about its level channel (None: not conditioned)."""
        if not self.condition:
            return None
        low, high = self.levels
        return LevelSpec(self.kind, self.level_key, self.level_scale, low, high)

    def level_code(self, level: float) -> int:
        return level_code(level, self.level_scale, self.level_key)

    def draw_level(self, seed: int) -> float:
        """The level of the sample with this seed: uniform in the range, from the seed's own stream."""
        low, high = self.levels
        return low if low == high else float(np.random.default_rng([seed, LEVEL_STREAM]).uniform(low, high))

    def __call__(self, target: np.ndarray, seed: int) -> np.ndarray:
        check_uint8_rgb(target)
        # its own stream of the seed: the level drawn for a degraded sample does not depend on it
        clean = bool(self.clean_prob) and np.random.default_rng([seed, CLEAN_STREAM]).random() < self.clean_prob
        if not self.condition:
            return target.copy() if clean else self.degrade(target, seed)
        if clean:
            return with_level(target.copy(), 0)
        # The level is applied exactly (an evaluation at sigma 25 is at 25); the channel holds the
        # nearest code, within half a code of it (0.1 of a sigma of 0..50).
        level = self.draw_level(seed)
        return with_level(self.at(level).degrade(target, seed), self.level_code(level))

    def level_of_code(self, code: int) -> float:
        """The level a code stands for, to within half a code."""
        return code / self.level_scale

    def degrade(self, target: np.ndarray, seed: int) -> np.ndarray:
        return super().__call__(target, seed)


CLEAN_STREAM, LEVEL_STREAM = 0xC1EA, 0x1E7E1


class GaussianNoise(LevelledDegradation):
    """Additive white Gaussian noise, ``sigma`` on the 0..255 scale (25 is the usual benchmark), one
    value per channel. ``sigma: [0, 50]`` draws each sample's sigma uniformly (blind denoising, as
    DnCNN-B). The noisy input is clipped and rounded to 8 bits, as a real noisy photo would be.
    """

    kind: ClassVar[str] = "gaussian_noise"
    level_key: ClassVar[str] = "sigma"
    sigma: Level(ge=0, le=255) = Field(25.0, description="noise sigma in 8-bit levels: a number, or [low, high] drawn per sample")

    def transforms(self) -> list[A.BasicTransform]:
        import albumentations as A

        low, high = self.levels
        return [A.GaussNoise(std_range=(low / 255.0, high / 255.0), mean_range=(0.0, 0.0), per_channel=True, p=1.0)]


class GaussianBlur(LevelledDegradation):
    """Gaussian blur with kernel standard deviation ``sigma`` (pixels); kernel size follows sigma.
    ``sigma: [0.5, 3]`` draws each sample's sigma uniformly (blind deblurring)."""

    kind: ClassVar[str] = "gaussian_blur"
    level_key: ClassVar[str] = "sigma"
    sigma: Level(gt=0, le=20) = Field(2.0, description="blur sigma in pixels: a number, or [low, high] drawn per sample")

    def transforms(self) -> list[A.BasicTransform]:
        import albumentations as A

        return [A.GaussianBlur(blur_limit=0, sigma_limit=self.levels, p=1.0)]


class JpegCompression(LevelledDegradation):
    """JPEG round trip at ``quality`` (10 is the usual artefact-removal benchmark); ``quality: [10,
    95]`` draws each sample's quality uniformly among the integers of the range (blind, as FBCNN)."""

    kind: ClassVar[str] = "jpeg"
    level_key: ClassVar[str] = "quality"
    quality: Level(int, ge=1, le=100) = Field(10, description="JPEG quality: a number, or [low, high] drawn per sample")
    def draw_level(self, seed: int) -> float:
        low, high = self.levels
        return int(np.random.default_rng(seed).integers(int(low), int(high) + 1))

    def level_of_code(self, code: int) -> float:
        return round(code / self.level_scale)  # a quality is an integer; codes per quality >= 2.55

    def degrade(self, target: np.ndarray, seed: int) -> np.ndarray:
        return jpeg_roundtrip(target, int(self.draw_level(seed)))


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """An RGB uint8 image saved as a JPEG at ``quality`` and decoded, byte for byte what Pillow and
    libjpeg give for a photo saved at that quality (4:2:0). Not albumentations' ImageCompression:
    it hands RGB to OpenCV as if it were BGR, so its luma weighs red as blue and its artefacts
    differ from a real JPEG's (2.7 levels per pixel on Set5's baby at quality 30)."""
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


class Grayscale(Degradation):
    """Gray input for colorization: ITU-R BT.601 luma, as one channel or three equal channels."""

    kind: ClassVar[str] = "grayscale"
    channels: Literal[1, 3] = Field(3, description="the gray input as 1 channel or repeated over 3")

    @property
    def input_channels(self) -> int:
        return self.channels

    def transforms(self) -> list[A.BasicTransform]:
        import albumentations as A

        return [A.ToGray(num_output_channels=self.channels, method="weighted_average", p=1.0)]


class Identity(Degradation):
    """The input is the clean image itself (fast style transfer: content in, stylised out)."""

    kind: ClassVar[str] = "identity"

    def __call__(self, target: np.ndarray, seed: int) -> np.ndarray:
        check_uint8_rgb(target)
        return target.copy()


def check_sr_target(target: np.ndarray, scale: int) -> tuple[int, int]:
    """(height, width) of an SR target that ``scale`` divides; a clear error otherwise."""
    check_uint8_rgb(target)
    h, w = target.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"target {w}x{h} is not a multiple of the scale {scale}: mod-crop it first")
    return h, w


def check_uint8_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
