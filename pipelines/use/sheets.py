"""Comparison sheets: input, baseline, model and target crops side by side, one row per image."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

LABEL_HEIGHT = 14
GAP = 4
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


def centre_box(height: int, width: int, side: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a centred square crop, no larger than the image."""
    h, w = min(side, height), min(side, width)
    return (height - h) // 2, (width - w) // 2, h, w


def row_crops(input_image: np.ndarray, baseline: np.ndarray, output: np.ndarray, target: np.ndarray,
              scale: int, side: int) -> list[np.ndarray]:
    """The same centred region of the four images; the (smaller) SR input is shown enlarged by
    pixel repetition so its pixels stay visible as pixels."""
    top, left, h, w = centre_box(*target.shape[:2], side - side % scale)
    crops = [img[top : top + h, left : left + w] for img in (baseline, output, target)]
    small = input_image[top // scale : (top + h) // scale, left // scale : (left + w) // scale]
    crops.insert(0, np.repeat(np.repeat(small, scale, axis=0), scale, axis=1))
    return crops


def render_sheet(rows: list[tuple[str, list[np.ndarray], list[str]]], title: str) -> np.ndarray:
    """``rows`` of (name, crops, one caption per crop) -> one HxWx3 uint8 sheet with a title."""
    cell = max(max(c.shape[0] for _, crops, _ in rows for c in crops), max(c.shape[1] for _, crops, _ in rows for c in crops))
    columns = max(len(crops) for _, crops, _ in rows)
    width = columns * (cell + GAP) + GAP
    height = LABEL_HEIGHT + GAP + len(rows) * (cell + LABEL_HEIGHT + GAP) + GAP
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((GAP, 2), title, fill=INK)
    y = LABEL_HEIGHT + GAP
    for name, crops, captions in rows:
        for i, (crop, caption) in enumerate(zip(crops, captions)):
            x = GAP + i * (cell + GAP)
            draw.text((x, y), f"{name}: {caption}" if i == 0 else caption, fill=INK)
            sheet.paste(Image.fromarray(np.ascontiguousarray(crop)), (x, y + LABEL_HEIGHT))
        y += cell + LABEL_HEIGHT + GAP
    return np.asarray(sheet)
