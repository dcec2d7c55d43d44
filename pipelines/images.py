"""Decoding and validating raw image files: every file is decoded fully before it is accepted.

``decode_image`` turns bytes into an oriented 8-bit RGB array or raises ``Rejected`` with one of
the reasons in ``RejectReason``. Modes handled: L, LA, P (with or without transparency), RGB,
RGBA, CMYK, I;16 / I (16-bit), F. Transparent pixels are composited on white.
"""

from __future__ import annotations

import enum
import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# We apply our own pixel limit (params) before decoding; PIL's warning/error would fire on
# legitimately large images first, with a less useful message.
Image.MAX_IMAGE_PIXELS = None


class RejectReason(str, enum.Enum):
    EMPTY = "empty"
    NOT_AN_IMAGE = "not_an_image"
    TRUNCATED = "truncated"
    TOO_MANY_PIXELS = "decompression_bomb"
    TOO_SMALL = "too_small"
    DUPLICATE = "duplicate"
    UNREADABLE = "unreadable"


class Rejected(Exception):
    def __init__(self, reason: RejectReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


SINGLE_CHANNEL_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})


def source_channels(mode: str) -> int:
    """1 for gray sources (evaluation scores them on their gray values, not on Y), else 3."""
    return 1 if mode in SINGLE_CHANNEL_MODES else 3


def decode_image(data: bytes, max_pixels: int, min_side: int = 1) -> tuple[np.ndarray, int]:
    """Decode ``data`` fully; return (HxWx3 uint8 RGB with EXIF orientation applied, source channels)."""
    if not data:
        raise Rejected(RejectReason.EMPTY, "zero-byte file")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Rejected(RejectReason.NOT_AN_IMAGE, "not a format Pillow can identify") from None
    except (OSError, SyntaxError, ValueError) as exc:  # a known signature whose header is cut or broken
        raise Rejected(RejectReason.TRUNCATED, f"header unreadable: {exc}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise Rejected(RejectReason.TOO_MANY_PIXELS, f"{width}x{height} exceeds max_pixels={max_pixels}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow reports truncation and bad streams so
        raise Rejected(RejectReason.TRUNCATED, f"decoding failed: {exc}") from None
    channels = source_channels(img.mode)
    img = ImageOps.exif_transpose(img)
    rgb = to_rgb_array(img)
    h, w = rgb.shape[:2]
    if min(h, w) < min_side:
        raise Rejected(RejectReason.TOO_SMALL, f"{w}x{h} is smaller than {min_side} px on a side")
    return rgb, channels


def to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit (and 32-bit int / float) gray: PNG 16-bit loads as I;16 or I with 0..65535 values.
        arr = np.asarray(img, dtype=np.float64)
        peak = 255.0 if arr.max(initial=0) <= 255 else 65535.0
        gray = np.clip(np.floor(arr / peak * 255.0 + 0.5), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, CMYK, YCbCr, 1, ...
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def pixel_sha256(rgb: np.ndarray) -> str:
    """Content hash of decoded pixels (shape included), so re-encodings of one image match."""
    digest = hashlib.sha256(f"{rgb.shape[0]}x{rgb.shape[1]}x{rgb.shape[2]}:".encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG; deterministic bytes for the same pixels (no timestamps, fixed settings)."""
    buf = io.BytesIO()
    mode = "L" if rgb.ndim == 2 else None
    Image.fromarray(rgb, mode=mode).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB") if img.mode not in ("RGB", "L") else img, dtype=np.uint8)


def load_style_image(path: str | Path, side: int | None = None):
    """A style image as a 1 x 3 x H x W float tensor in [0, 1]; with ``side``, resized (Lanczos)
    so that its longer side is ``side`` pixels, which sets the scale of the strokes a model learns."""
    import torch

    with Image.open(path) as img:
        img = img.convert("RGB")
        if side is not None and max(img.size) != side:
            ratio = side / max(img.size)
            img = img.resize((max(1, round(img.width * ratio)), max(1, round(img.height * ratio))), Image.LANCZOS)
        rgb = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float().div(255.0)
