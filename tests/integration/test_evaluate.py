"""`percept evaluate` as a user runs it: the field's figures, JSON on stdout, reports, clear errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tests.shared_data import DATASETS, WEIGHTS

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def percept(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    """The shipped params with the feature network read straight from ../shared/weights."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["feature_net"]["weights"] = str(WEIGHTS / "vgg_normalised_conv3_1.pth")
    path = tmp_path_factory.mktemp("params") / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_bicubic_on_set5_reproduces_the_published_figures_as_json(params_file, tmp_path):
    out = percept("--params", str(params_file), "evaluate", "--task", "sr_x4", "--model", "bicubic",
                  "--images", str(DATASETS / "Set5"), "--json", "--out", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)  # stdout holds the JSON object and nothing else
    assert report["task"] == "sr_x4" and report["model"] == "bicubic" and report["images"] == 5
    assert abs(report["psnr_y"] - 28.42) <= 0.02 and abs(report["ssim_y"] - 0.8104) <= 0.002
    assert sorted(r["name"] for r in report["per_image"]) == ["baby", "bird", "butterfly", "head", "woman"]
    assert report["psnr_y"] == pytest.approx(np.mean([r["psnr_y"] for r in report["per_image"]]))
    assert report["feature_distance"] > 0
    assert "evaluate sr_x4" in out.stderr  # progress goes to stderr
    saved = json.loads((tmp_path / "report" / "Set5.json").read_text())
    assert saved["psnr_y"] == report["psnr_y"]
    with Image.open(tmp_path / "report" / "Set5.png") as sheet:
        assert sheet.mode == "RGB" and sheet.width > 4 * 150 and sheet.height > 5 * 150  # 4 columns, 5 rows


def write_mixed_folder(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (70, 90), dtype=np.uint8), "L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (64, 80, 4), dtype=np.uint8), "RGBA").save(folder / "alpha.png")
    Image.fromarray(rng.integers(0, 65536, (66, 72), dtype=np.uint16)).save(folder / "deep16.png")
    Image.fromarray(rng.integers(0, 256, (50, 61, 3), dtype=np.uint8)).save(folder / "odd.jpg", quality=95)
    (folder / "notes.txt").write_text("not an image: ignored by suffix")


def test_same_size_task_on_mixed_modes_reports_rgb_figures_and_the_input(params_file, tmp_path):
    write_mixed_folder(tmp_path / "mixed")
    out = percept("--params", str(params_file), "evaluate", "--task", "denoise", "--model", "identity",
                  "--images", str(tmp_path / "mixed"), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["images"] == 4 and {"psnr", "ssim", "feature_distance"} <= set(report)
    # The model is the noisy input itself, so it scores exactly what the baseline does.
    assert report["psnr"] == report["baseline"]["psnr"] and report["baseline"]["model"] == "identity"
    # Blind denoising: each image draws its sigma from [0, 50]; the fixed levels are scored too.
    levels = report["levels"]
    assert list(levels) == ["mixed-sigma10", "mixed-sigma25", "mixed-sigma50"]
    assert 18 < levels["mixed-sigma25"]["psnr"] < 24  # Gaussian noise of sigma 25 on 8 bits: ~20.2 dB before clipping
    assert levels["mixed-sigma10"]["psnr"] > levels["mixed-sigma25"]["psnr"] + 6 > levels["mixed-sigma50"]["psnr"] + 6 + 4
    assert all(r["psnr"] == r["baseline"]["psnr"] and r["images"] == 4 for r in levels.values())
    # the levels are judged by PSNR and SSIM: no VGG pass there (most of an evaluation's cost)
    assert all({"psnr", "ssim"} <= set(r) and "feature_distance" not in r for r in levels.values())


def test_colorize_leaves_out_gray_targets_which_would_score_the_gray_input_infinitely(params_file, tmp_path):
    write_mixed_folder(tmp_path / "mixed")
    out = percept("--params", str(params_file), "evaluate", "--task", "colorize", "--model", "identity",
                  "--images", str(tmp_path / "mixed"), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    # gray.png and deep16.png (16-bit gray) have no colour to recover: left out, and said so.
    assert sorted(r["name"] for r in report["per_image"]) == ["alpha", "odd"]
    assert np.isfinite(report["baseline"]["psnr"]) and "2 gray image(s) left out" in out.stderr
    assert report["colourfulness"] == 0 < report["target_colourfulness"]  # the gray input itself


QOI_HEADER = b"qoif" + (4).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes([3, 0])  # Pillow once raised IndexError


def write_bad_images(folder: Path) -> None:
    """Three files no decoder can use: a cut PNG signature, a QOI header named .png, a PNG cut in half."""
    folder.mkdir(exist_ok=True)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (folder / "qoi.png").write_bytes(QOI_HEADER)
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / "whole.png")
    data = (folder / "whole.png").read_bytes()
    (folder / "whole.png").unlink()
    (folder / "half.png").write_bytes(data[: len(data) // 2])


def test_unreadable_images_are_named_skipped_and_listed_in_the_report(params_file, tmp_path):
    write_mixed_folder(tmp_path / "mixed")
    write_bad_images(tmp_path / "mixed")
    out = percept("--params", str(params_file), "evaluate", "--task", "denoise", "--model", "identity",
                  "--images", str(tmp_path / "mixed"), "--json", "--out", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    report = json.loads(out.stdout)  # stdout is still the JSON object alone
    # the means are over the four images that could be read
    assert report["images"] == 4 and sorted(r["name"] for r in report["per_image"]) == ["alpha", "deep16", "gray", "odd"]
    assert report["psnr"] == pytest.approx(np.mean([r["psnr"] for r in report["per_image"]]))
    assert [s["name"] for s in report["skipped"]] == ["broken", "half", "qoi"]
    assert all(s["reason"].startswith("cannot read it (") for s in report["skipped"])
    for name in ("broken.png", "half.png", "qoi.png"):
        assert f"skipped {tmp_path / 'mixed' / name}: cannot read it" in out.stderr
    assert "(4 images, 3 skipped)" in out.stderr
    assert json.loads((tmp_path / "report" / "mixed.json").read_text())["skipped"] == report["skipped"]


def test_a_set_where_no_image_can_be_read_fails_with_one_line(params_file, tmp_path):
    write_bad_images(tmp_path / "bad")
    out = percept("--params", str(params_file), "evaluate", "--task", "denoise", "--model", "identity",
                  "--images", str(tmp_path / "bad"), "--json")
    assert out.returncode == 1 and out.stdout == "" and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(f"percept evaluate: error: {tmp_path / 'bad'}: none of its 3 image file(s) could be used "
                           "(broken: cannot read it (")
    assert last.endswith("; see the warnings above)")


def test_any_decoder_error_or_a_too_small_image_skips_only_that_image(make_config, tmp_path, monkeypatch):
    """Not only the errors the decoder foresees: whatever it raises for one file, and an image too
    small for the task's scale, leave that file out with the reason."""
    import pipelines.use.scoring as evaluate

    write_mixed_folder(tmp_path / "mixed")
    (tmp_path / "mixed" / "qoi.png").write_bytes(QOI_HEADER)
    Image.fromarray(np.zeros((3, 9, 3), np.uint8)).save(tmp_path / "mixed" / "tiny.png")
    decode = evaluate.decode_image

    def buggy_decode(data, **kwargs):
        if data.startswith(b"qoif"):
            raise IndexError("list index out of range")  # what Pillow's QOI decoder raised
        return decode(data, **kwargs)

    monkeypatch.setattr(evaluate, "decode_image", buggy_decode)
    images = evaluate.load_image_set(tmp_path / "mixed", "sr_x4", make_config())
    assert sorted(i.name for i in images) == ["alpha", "deep16", "gray", "odd"]
    assert dict(images.skipped) == {"qoi": "cannot read it (IndexError: list index out of range)",
                                    "tiny": "too small: 9x3, under the scale (4) on a side"}


def test_a_model_file_for_another_task_or_missing_is_refused(params_file, tmp_path):
    from training.models import build_transform_net

    cfg = {"residual_blocks": 1, "sr_channels": 8}
    from training.options import TransformNetConfig

    net = build_transform_net(TransformNetConfig(**cfg), 4)
    torch.save({"task": "sr_x4", "scale": 4, "model_config": net.cfg.model_dump(mode="json"), "model": net.state_dict()},
               tmp_path / "model.pt")
    out = percept("--params", str(params_file), "evaluate", "--task", "sr_x8", "--model", str(tmp_path),
                  "--images", str(DATASETS / "Set5"))
    assert out.returncode == 1 and "trained for task 'sr_x4', not 'sr_x8'" in out.stderr
    out = percept("--params", str(params_file), "evaluate", "--task", "sr_x4", "--model", str(tmp_path / "nope"),
                  "--images", str(DATASETS / "Set5"))
    assert out.returncode == 1 and "no such model file or folder" in out.stderr
    out = percept("--params", str(params_file), "evaluate", "--task", "sr_x4", "--model", "identity",
                  "--images", str(DATASETS / "Set5"))
    assert out.returncode == 1 and "the baseline of sr_x4 is 'bicubic'" in out.stderr


def test_an_image_the_baseline_reproduces_exactly_is_left_out_with_its_reason(params_file, tmp_path):
    """A flat image blurs to itself: its input equals the target, whose PSNR is infinite and would
    make every mean of the set infinite. It is left out of the means and named with the reason."""
    folder = tmp_path / "flat"
    folder.mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(folder / "flat.png")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "texture.png")
    out = percept("--params", str(params_file), "evaluate", "--task", "deblur", "--model", "identity",
                  "--images", str(folder), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for one in (report, *report["levels"].values()):
        assert one["images"] == 1 and [r["name"] for r in one["per_image"]] == ["texture"]
        assert np.isfinite(one["psnr"]) and np.isfinite(one["baseline"]["psnr"])
        assert [s["name"] for s in one["skipped"]] == ["flat"]
        assert "reproduce it exactly (PSNR infinite)" in one["skipped"][0]["reason"]
    assert list(report["levels"]) == ["flat-sigma1", "flat-sigma2", "flat-sigma3"]


def test_a_model_of_another_task_is_scored_on_this_tasks_inputs_only_when_asked(params_file, tmp_path):
    """How sr_x4 (clean bicubic inputs) copes with sr_x4_real's second-order inputs: --any-task."""
    from training.models import build_transform_net
    from training.options import ResNetConfig

    cfg = ResNetConfig(channels=8, residual_blocks=1)
    model = build_transform_net(cfg, 4)  # untrained: its zero tail returns the bicubic upscale
    (tmp_path / "m").mkdir()
    torch.save({"task": "sr_x4", "scale": 4, "model_config": cfg.model_dump(mode="json"), "model": model.state_dict(),
                "step": 0}, tmp_path / "m" / "model.pt")
    args = ("--params", str(params_file), "evaluate", "--task", "sr_x4_real", "--model", str(tmp_path / "m"),
            "--images", str(DATASETS / "Set5"), "--json")
    refused = percept(*args)
    assert refused.returncode == 1 and "was trained for task 'sr_x4', not 'sr_x4_real'" in refused.stderr
    out = percept(*args, "--any-task")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["model"].endswith("m (sr_x4)") and report["images"] == 5
    # torch's bicubic (the net's skip) and MATLAB's (the baseline) differ a little: close, not equal
    assert abs(report["psnr_y"] - report["baseline"]["psnr_y"]) < 0.5
    stage = percept("--params", str(params_file), "evaluate", "--task", "sr_x4_real", "--model", str(tmp_path / "m"),
                    "--any-task")
    assert stage.returncode == 1 and "--any-task needs --images" in stage.stderr
