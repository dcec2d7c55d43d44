"""decode_image: every malformed file becomes a Rejected with a reason, never a stray exception."""

import io

import numpy as np
import pytest
from PIL import Image

from training.images import Rejected, RejectReason, decode_image

pytestmark = pytest.mark.unit


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", RejectReason.EMPTY),
        (b"hello, not an image", RejectReason.NOT_AN_IMAGE),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, RejectReason.TRUNCATED),  # a PNG signature, a broken header
        (png_bytes(np.zeros((40, 40, 3), np.uint8))[:60], RejectReason.TRUNCATED),
    ],
)
def test_malformed_files_are_rejected_with_a_reason(data, reason):
    with pytest.raises(Rejected) as exc:
        decode_image(data, max_pixels=10**6)
    assert exc.value.reason is reason


def test_a_gray_16_bit_png_decodes_to_8_bit_rgb_and_one_source_channel():
    gray = np.array([[0, 65535], [32768, 257]], np.uint16)
    rgb, channels = decode_image(png_bytes(gray), max_pixels=100)
    assert channels == 1 and rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[..., 0].tolist() == [[0, 255], [128, 1]]
