"""`percept compare` as a user runs it on photos without a clean original: one sheet, a row per
image, the input enlarged, each model's output and a reference output matched by file name."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.use.sheets import GAP, LABEL_HEIGHT
from training.imresize import imresize_uint8

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def percept(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "--params", str(ROOT / "params.yaml"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def sr_model(tmp_path) -> Path:
    from training.models import build_transform_net
    from training.options import ResNetConfig

    torch.manual_seed(0)
    cfg = ResNetConfig(channels=8, residual_blocks=1)
    model = build_transform_net(cfg, 4)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    folder = tmp_path / "models" / "sr_x4_real"
    folder.mkdir(parents=True)
    torch.save({"task": "sr_x4_real", "scale": 4, "model_config": cfg.model_dump(mode="json"),
                "model": model.state_dict(), "step": 1}, folder / "model.pt")
    (folder / "config.json").write_text(json.dumps({"task": "sr_x4_real"}))
    return folder


def test_compare_draws_input_baseline_model_and_reference_per_image(sr_model, tmp_path):
    rng = np.random.default_rng(0)
    photos, refs = tmp_path / "LR", tmp_path / "published"
    photos.mkdir(), refs.mkdir()
    a = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(a).save(photos / "a.png")
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(photos / "b.png")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 20)
    reference = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(reference).save(refs / "a_theirs.png")
    Image.fromarray(reference[:50, :50]).save(refs / "b_theirs.png")  # not 4x b: left out with a warning
    out = percept("compare", "--input", str(photos), "--model", "bicubic", "--model", str(sr_model),
                  "--reference", str(refs), "--out", str(tmp_path / "sheet.png"), "--crop", "64")
    assert out.returncode == 0, out.stderr
    assert "2 model(s), 1 skipped" in out.stdout and "skipped" in out.stderr and "broken.png" in out.stderr
    assert "not the output's 96x96: not shown" in out.stderr
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"))
    cell = 64
    assert sheet.shape[1] == 4 * (cell + GAP) + GAP  # input, bicubic, the model, the reference
    assert sheet.shape[0] == LABEL_HEIGHT + GAP + 2 * (cell + LABEL_HEIGHT + GAP) + GAP  # a and b
    # Row a: the centred 64 px of the 160 x 120 output, at input pixels (12..28, 8..24).
    y = LABEL_HEIGHT + GAP + LABEL_HEIGHT
    top, left = (120 - 64) // 2, (160 - 64) // 2

    def cell_at(column: int) -> np.ndarray:
        x = GAP + column * (cell + GAP)
        return sheet[y : y + cell, x : x + cell]

    assert np.array_equal(cell_at(0), np.repeat(np.repeat(a[top // 4 : top // 4 + 16, left // 4 : left // 4 + 16], 4, 0), 4, 1))
    assert np.array_equal(cell_at(1), imresize_uint8(a, scale=4)[top : top + 64, left : left + 64])
    assert not np.array_equal(cell_at(2), cell_at(1))  # the (random) network is not bicubic
    assert np.array_equal(cell_at(3), reference[top : top + 64, left : left + 64])


def test_compare_refuses_a_baseline_of_the_wrong_kind(sr_model, tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "x.png")
    out = percept("compare", "--input", str(tmp_path / "x.png"), "--model", "identity", "--model", str(sr_model),
                  "--out", str(tmp_path / "sheet.png"))
    assert out.returncode == 1 and "at scale x4 the baseline is 'bicubic'" in out.stderr
    assert not (tmp_path / "sheet.png").exists()
