"""Fuzz: mutated PNG, JPEG, WebP, TIFF, GIF and QOI files through ``decode_image``.

Every outcome must be an accepted image (H x W x 3 uint8 within the limits) or a ``Rejected``
with one of the known reasons and a detail: no other exception may escape, whatever the bytes.
Reproducible (derandomized) and bounded: a few hundred cases in well under a minute.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from training.images import SAFE_FORMATS, DecodeLimits, Rejected, RejectReason, decode_image

# Pillow warns about the corrupt EXIF and TIFF tags it meets on the way: expected here.
pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore::UserWarning")]

LIMITS = DecodeLimits(max_pixels=1_000_000, formats=(*SAFE_FORMATS, "QOI"), max_decode_bytes=20_000_000,
                      max_metadata_bytes=100_000)
SAVE_ARGS = {"PNG": {}, "JPEG": {"quality": 80}, "WEBP": {"quality": 80}, "TIFF": {"compression": "tiff_lzw"},
             "GIF": {}, "QOI": {}}


def seed_file(fmt: str, mode: str) -> bytes:
    rng = np.random.default_rng(len(fmt) + len(mode))
    img = Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **SAVE_ARGS[fmt])
    return buf.getvalue()


SEEDS = {(fmt, mode): seed_file(fmt, mode)
         for fmt in SAVE_ARGS for mode in ("RGB", "L", "RGBA", "P")
         if not (fmt == "JPEG" and mode in ("RGBA", "P")) and not (fmt == "QOI" and mode in ("L", "P"))}


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(sorted(SEEDS.items())))[1])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "repeat"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
        elif kind == "cut":
            data = data[:at]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:  # a header field or chunk repeated, as a length-confused writer would
            size = draw(st.integers(1, 32))
            data[at:at] = data[at:at + size]
    return bytes(data)


def check(data: bytes) -> None:
    try:
        rgb, channels = decode_image(data, limits=LIMITS)
    except Rejected as rej:
        assert isinstance(rej.reason, RejectReason) and rej.detail, rej
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.shape[0] * rgb.shape[1] <= LIMITS.max_pixels and channels in (1, 3)


def test_every_seed_file_decodes():
    for (fmt, mode), data in SEEDS.items():
        rgb, _ = decode_image(data, limits=LIMITS)
        assert rgb.shape == (24, 20, 3), (fmt, mode)


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated())
def test_mutated_images_are_accepted_or_rejected_with_a_reason(data):
    check(data)


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=256))
def test_random_bytes_are_rejected_with_a_reason(data):
    check(data)


def test_formats_outside_the_list_are_refused_unread():
    qoi = SEEDS[("QOI", "RGB")]
    with pytest.raises(Rejected) as exc:
        decode_image(qoi)  # the default list leaves QOI out
    assert exc.value.reason is RejectReason.FORMAT_NOT_ALLOWED and exc.value.detail.startswith("QOI")
