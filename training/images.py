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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# We apply our own pixel limit (params) before decoding; PIL's warning/error would fire on
# legitimately large images first, with a less useful message.
Image.MAX_IMAGE_PIXELS = None


class RejectReason(str, enum.Enum):
    EMPTY = "empty"
    FILE_TOO_LARGE = "file_too_large"  # more bytes than ingest.max_bytes: never read
    NOT_AN_IMAGE = "not_an_image"
    FORMAT_NOT_ALLOWED = "format_not_allowed"  # a format Pillow knows but ingest.formats leaves out
    TRUNCATED = "truncated"
    CORRUPT = "corrupt"  # the decoder failed in some other way (Pillow raised an unexpected error)
    METADATA_TOO_LARGE = "metadata_too_large"  # an ICC profile, EXIF block or text chunk over the limit
    TOO_MANY_PIXELS = "decompression_bomb"  # width x height, or its decode buffers, over the limits
    TOO_SMALL = "too_small"
    DUPLICATE = "duplicate"
    UNREADABLE = "unreadable"  # the file or object could not be read (permissions, gone, I/O)
    HIDDEN = "hidden"  # dot-files and dot-folders are skipped
    LINK_OUTSIDE_SOURCE = "link_outside_source"  # a link leaving its source folder (ingest.follow_links)
    NOT_A_FILE = "not_a_file"  # a FIFO, device, socket or a link to a folder


class Rejected(Exception):
    def __init__(self, reason: RejectReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # pickled between processes: rebuilt from both fields, not the message
        return Rejected, (self.reason, self.detail)


def failure_reason(exc: BaseException) -> str:
    """Why one file could not be read or decoded, in a few words: a rejection's reason and
    detail, an OS error's text, else the exception's type and message."""
    if isinstance(exc, Rejected):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"[:300]


SAFE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")


@dataclass(frozen=True)
class DecodeLimits:
    """What a decode may cost; ``params.yaml``'s ``ingest`` block sets them (``from_config``)."""

    max_pixels: int = 40_000_000
    min_side: int = 1
    formats: tuple[str, ...] = SAFE_FORMATS
    max_bytes: int = 100_000_000
    max_decode_bytes: int = 512_000_000
    max_metadata_bytes: int = 1_000_000

    @classmethod
    def from_config(cls, ingest, min_side: int = 1) -> DecodeLimits:
        return cls(ingest.max_pixels, min_side, tuple(ingest.formats), ingest.max_bytes,
                   ingest.max_decode_bytes, ingest.max_metadata_bytes)


SINGLE_CHANNEL_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})
# Pillow keeps 1, L and P images in one byte per pixel, 16-bit gray in two, everything else in four.
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2}


# The files percept takes as images in a folder (evaluation sets, `percept apply`, compare sheets).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def list_images(folder: Path) -> list[Path]:
    """The image files under ``folder``, recursively, sorted (by suffix; nothing is opened)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def no_images(folder: Path) -> str:
    return f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"


def source_channels(mode: str) -> int:
    """1 for gray sources (evaluation scores them on their gray values, not on Y), else 3."""
    return 1 if mode in SINGLE_CHANNEL_MODES else 3


def decode_cost(mode: str, width: int, height: int, oriented: bool) -> int:
    """Peak bytes of a decode, from the header alone: the decoded image, a converted copy unless
    it is RGB already, a rotated copy when EXIF orientation applies, and the RGB array."""
    pixel = _PIXEL_BYTES.get(mode, 4)
    per_pixel = pixel + (0 if mode == "RGB" else 4) + (pixel if oriented else 0) + 3
    return width * height * per_pixel


def read_file(path: str | Path, limits: DecodeLimits = DecodeLimits()) -> bytes:
    """A local file's bytes, refused unread when larger than ``limits.max_bytes``."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise Rejected(RejectReason.FILE_TOO_LARGE, f"{size} bytes exceeds max_bytes={limits.max_bytes}")
        with open(path, "rb") as fh:
            data = fh.read(limits.max_bytes + 1)  # the file may have grown since stat
    except OSError as exc:
        raise Rejected(RejectReason.UNREADABLE, exc.strerror or str(exc)) from None
    if len(data) > limits.max_bytes:
        raise Rejected(RejectReason.FILE_TOO_LARGE, f"more than max_bytes={limits.max_bytes} bytes")
    return data


def decode_image(data: bytes, max_pixels: int | None = None, min_side: int | None = None,
                 limits: DecodeLimits = DecodeLimits()) -> tuple[np.ndarray, int]:
    """Decode ``data`` fully; return (HxWx3 uint8 RGB with EXIF orientation applied, source channels).

    Every failure is a ``Rejected`` with a reason, whatever the decoder raised: one bad file must
    never stop a run. ``max_pixels`` and ``min_side`` override ``limits``' own."""
    if max_pixels is not None or min_side is not None:
        limits = replace(limits, max_pixels=max_pixels or limits.max_pixels, min_side=min_side or limits.min_side)
    if not data:
        raise Rejected(RejectReason.EMPTY, "zero-byte file")
    if len(data) > limits.max_bytes:
        raise Rejected(RejectReason.FILE_TOO_LARGE, f"{len(data)} bytes exceeds max_bytes={limits.max_bytes}")
    img = _open(data, limits.formats)
    try:
        return _decode(img, limits)
    except Rejected:
        raise
    except MemoryError:
        raise Rejected(RejectReason.TOO_MANY_PIXELS, "out of memory while decoding") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise anything on hostile bytes
        raise _decoder_error(exc, "decoding failed") from None
    finally:
        img.close()


def _open(data: bytes, formats: tuple[str, ...]) -> Image.Image:
    """Read the header with the allowed decoders only; name the format of anything else."""
    try:
        return Image.open(io.BytesIO(data), formats=list(formats))
    except UnidentifiedImageError:
        pass
    except Exception as exc:  # noqa: BLE001 - a known signature whose header is cut or broken
        raise _decoder_error(exc, "header unreadable") from None
    try:  # which format it is, for the message: headers only, nothing is decoded
        with Image.open(io.BytesIO(data)) as other:
            name = other.format
    except Exception:  # noqa: BLE001
        raise Rejected(RejectReason.NOT_AN_IMAGE, "not a format Pillow can identify") from None
    raise Rejected(RejectReason.FORMAT_NOT_ALLOWED, f"{name} (ingest.formats allows {', '.join(formats)})")


def _decoder_error(exc: BaseException, what: str) -> Rejected:
    text = f"{what}: {type(exc).__name__}: {exc}"[:300]
    if isinstance(exc, ValueError) and ("too large" in str(exc).lower() or "text chunks" in str(exc)):
        return Rejected(RejectReason.METADATA_TOO_LARGE, text)  # Pillow's own PNG chunk limits
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
        return Rejected(RejectReason.TRUNCATED, text)  # how Pillow reports cut and broken streams
    return Rejected(RejectReason.CORRUPT, text)


def _decode(img: Image.Image, limits: DecodeLimits) -> tuple[np.ndarray, int]:
    width, height = img.size
    if width * height > limits.max_pixels:
        raise Rejected(RejectReason.TOO_MANY_PIXELS, f"{width}x{height} exceeds max_pixels={limits.max_pixels}")
    for key, value in img.info.items():
        if isinstance(value, (bytes, str)) and len(value) > limits.max_metadata_bytes:
            raise Rejected(RejectReason.METADATA_TOO_LARGE,
                           f"{key!s:.40} is {len(value)} bytes (max_metadata_bytes={limits.max_metadata_bytes})")
    # Checked before anything is decoded, so for the worst case: a rotation may follow (Pillow
    # reads a PNG's EXIF only by decoding the image, since its eXIf chunk may follow the pixels).
    cost = decode_cost(img.mode, width, height, oriented=True)
    if cost > limits.max_decode_bytes:
        raise Rejected(RejectReason.TOO_MANY_PIXELS, f"{width}x{height} {img.mode} needs about {cost} bytes to decode "
                                                     f"(max_decode_bytes={limits.max_decode_bytes})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        img.load()
    oriented = img.getexif().get(ExifTags.Base.Orientation, 1) not in (1, None)
    channels = source_channels(img.mode)
    rgb = to_rgb_array(ImageOps.exif_transpose(img) if oriented else img)
    h, w = rgb.shape[:2]
    if min(h, w) < limits.min_side:
        raise Rejected(RejectReason.TOO_SMALL, f"{w}x{h} is smaller than {limits.min_side} px on a side")
    return rgb, channels


def to_rgb_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit (and 32-bit int / float) gray: PNG 16-bit loads as I;16 or I with 0..65535 values.
        # float32 keeps the decode's working memory at 4 bytes a pixel (float64 took 16).
        arr = np.asarray(img).astype(np.float32, copy=False)
        peak = np.float32(255.0 if arr.max(initial=0) <= 255 else 65535.0)
        arr *= np.float32(255.0) / peak
        arr += np.float32(0.5)
        gray = np.clip(np.floor(arr, out=arr), 0, 255, out=arr).astype(np.uint8)
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


def encode_npy(image: np.ndarray) -> bytes:
    """An H x W x 3 uint8 ``.npy`` (gray repeated to three channels, as a PNG decoded to RGB reads)."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(image, dtype=np.uint8), allow_pickle=False)
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
