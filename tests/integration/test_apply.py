"""`percept apply` and `percept export` as a user runs them: a folder streamed through a model
(bad files reported and skipped, reruns idempotent), an ONNX file that matches PyTorch, and a
registered MLflow model named by its URI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines.use.apply import apply_folder, plan
from training.inference import Engine, load_model_file
from training.options import InferenceConfig

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TASK = "sr_x4"


def percept(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "--params", str(ROOT / "params.yaml"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """models/sr_x4/ as training leaves it: a tiny batch-norm SR net with random weights."""
    from training.models import build_transform_net
    from training.options import TransformNetConfig

    torch.manual_seed(0)
    cfg = TransformNetConfig(sr_channels=8, residual_blocks=1, norm="batch")
    model = build_transform_net(cfg, 4)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    folder = tmp_path_factory.mktemp("project") / "models" / TASK
    folder.mkdir(parents=True)
    torch.save({"task": TASK, "scale": 4, "model_config": cfg.model_dump(mode="json"), "model": model.state_dict(),
                "step": 1}, folder / "model.pt")
    (folder / "config.json").write_text(json.dumps({"task": TASK}))
    return folder


def photo(h: int, w: int, seed: int) -> np.ndarray:
    steps = np.random.default_rng(seed).integers(-12, 13, (h, w, 3))
    return np.clip(np.cumsum(steps, axis=1) + 128, 0, 255).astype(np.uint8)


@pytest.fixture()
def folder(tmp_path) -> Path:
    """Two same-size photos, a larger one (tiled), gray, two files sharing a stem, a corrupt and
    an empty file, a text file, a subfolder."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(photo(24, 32, 0)).save(src / "a.png")
    Image.fromarray(photo(24, 32, 1)).save(src / "b.png")
    Image.fromarray(photo(70, 45, 2)).save(src / "sub" / "large.png")
    Image.fromarray(photo(20, 26, 3)[..., 0], "L").save(src / "gray.png")
    Image.fromarray(photo(24, 32, 4)).save(src / "twin.png")
    Image.fromarray(photo(24, 32, 5)).save(src / "twin.jpg", quality=95)
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.txt").write_text("not an image: ignored by suffix")
    return src


def decoded(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_a_folder_streams_skips_bad_files_and_reruns_idempotently(model_dir, folder, tmp_path):
    model, meta = load_model_file(model_dir / "model.pt")
    engine = Engine(model, 4, cfg=InferenceConfig(tile=32, batch=2))
    out = tmp_path / "out"
    report = apply_folder(engine, folder, out, workers=2, progress=False)

    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert names == ["a.png", "b.png", "gray.png", "sub/large.png", "twin.jpg.png", "twin.png.png"]
    assert sorted(p.name for p, _ in report.failed) == ["corrupt.png", "empty.jpg"]
    assert all("cannot read it" in why for _, why in report.failed)
    assert not list(out.rglob(".*"))  # no temporary files left behind
    for src, dst in plan(folder, out):
        if dst.exists():
            image = decoded(src)
            result = decoded(dst)
            assert result.shape == (image.shape[0] * 4, image.shape[1] * 4, 3)
    # the large image went through tiles, and matches the whole-image output
    whole = Engine(model, 4, cfg=InferenceConfig(tile=None))(decoded(folder / "sub" / "large.png"))
    assert np.abs(decoded(out / "sub" / "large.png").astype(int) - whole.astype(int)).max() <= 1

    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = apply_folder(engine, folder, out, progress=False)
    assert again.written == [] and len(again.existing) == 6 and len(again.failed) == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps

    os.utime(out / "a.png", ns=(0, 0))
    forced = apply_folder(engine, folder, out, overwrite=True, progress=False)
    assert len(forced.written) == 6 and (out / "a.png").stat().st_mtime_ns > 0


def test_apply_and_export_on_the_command_line(model_dir, folder, tmp_path):
    out = percept("apply", "--model", str(model_dir), "--task", TASK, "--input", str(folder), "--out",
                  str(tmp_path / "out"), "--tile", "32", "--batch", "2", "--channels-last")
    assert out.returncode == 0, out.stderr
    assert "img/s" in out.stderr or "s/img" in out.stderr  # tqdm's rate on stderr
    assert "corrupt.png: cannot read it" in out.stderr and "6 written" in out.stderr
    assert (tmp_path / "out" / "sub" / "large.png").is_file()

    wrong = percept("apply", "--model", str(model_dir), "--task", "deblur", "--input", str(folder), "--out", str(tmp_path / "x"))
    assert wrong.returncode == 1 and "trained for task 'sr_x4'" in wrong.stderr

    onnx_file = tmp_path / "model.onnx"
    out = percept("export", "--model", str(model_dir / "model.pt"), "--out", str(onnx_file), "--task", TASK)
    assert out.returncode == 0, out.stderr
    assert "ONNX Runtime matches PyTorch" in out.stdout
    from training.onnx_export import OnnxRunner

    model, _ = load_model_file(model_dir / "model.pt")
    image = photo(19, 27, 7)
    expected = Engine(model, 4, cfg=InferenceConfig(tile=None))(image)
    assert np.abs(OnnxRunner(onnx_file).image(image).astype(int) - expected.astype(int)).max() <= 1


def test_a_registered_model_is_found_by_its_uri(model_dir, tmp_path, monkeypatch):
    """models:/sr_x4/1 gives the model.pt artifact of the registered pyfunc (as register logs it),
    and leaves nothing of the download behind."""
    import tempfile

    import mlflow

    from pipelines.common.paths import Paths
    from pipelines.use.predictors import load_engine
    from pipelines.stages.register import log_pyfunc

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment("apply-test", artifact_location=str(tmp_path / "mlartifacts"))
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    version = log_pyfunc(TASK, Paths(model_dir.parents[1]), run.info.run_id)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    engine, meta = load_engine(f"models:/{TASK}/{version}", TASK, InferenceConfig(tile=None), tracking_uri)
    local, _ = load_model_file(model_dir / "model.pt")
    image = photo(16, 20, 8)
    assert meta["task"] == TASK
    assert list(scratch.iterdir()) == []
    np.testing.assert_array_equal(engine(image), Engine(local, 4, cfg=InferenceConfig(tile=None))(image))


QOI_HEADER = b"qoif" + (4).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes([3, 0])  # Pillow once raised IndexError


def png_bytes(image: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_bad_images(folder: Path) -> list[str]:
    """A QOI header named .png and a PNG cut to half its bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bad.png").write_bytes(QOI_HEADER)
    data = png_bytes(photo(24, 32, 9))
    (folder / "half.png").write_bytes(data[: len(data) // 2])
    return ["bad.png", "half.png"]


def test_one_bad_image_is_named_and_skipped_and_the_others_are_written(model_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo(24, 32, 0)).save(src / "a.png")
    Image.fromarray(photo(20, 28, 1)).save(src / "b.png")
    (src / "bad.png").write_bytes(QOI_HEADER)
    out = percept("apply", "--model", str(model_dir), "--task", TASK, "--input", str(src), "--out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]  # nothing partial beside them
    assert "Traceback" not in out.stderr
    assert f"{src / 'bad.png'}: cannot read it" in out.stderr and "2 written, 0 already there, 1 failed" in out.stderr


def test_a_run_where_every_image_fails_exits_non_zero_and_says_so(model_dir, tmp_path):
    names = write_bad_images(tmp_path / "in")
    out = percept("apply", "--model", str(model_dir), "--task", TASK, "--input", str(tmp_path / "in"), "--out",
                  str(tmp_path / "out"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "apply: none of the 2 input(s) could be processed (2 failed)" in out.stderr
    assert all(f"{tmp_path / 'in' / name}: cannot read it" in out.stderr for name in names)
    assert not list((tmp_path / "out").rglob("*.png")) if (tmp_path / "out").exists() else True
    # one file given as --input, and it is bad: the same
    single = percept("apply", "--model", str(model_dir), "--task", TASK, "--input", str(tmp_path / "in" / "bad.png"),
                     "--out", str(tmp_path / "out"))
    assert single.returncode == 1 and "none of the 1 input(s) could be processed" in single.stderr


def test_any_error_while_decoding_running_or_writing_one_image_costs_only_that_image(model_dir, tmp_path, monkeypatch):
    """Whatever a decoder, the network or the writer raises for one image (not only the errors
    foreseen), that image is reported and skipped; the others are written."""
    import pipelines.use.apply as apply_module

    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(["a", "b", "c", "d", "e"]):
        Image.fromarray(photo(24, 32, i)).save(src / f"{name}.png")
    (src / "qoi.png").write_bytes(QOI_HEADER)
    (src / "odd.png").write_bytes(png_bytes(photo(17, 19, 7)))
    decode = apply_module.decode_image

    def buggy_decode(data, **kwargs):
        if data.startswith(b"qoif"):
            raise IndexError("list index out of range")  # what Pillow's QOI decoder raised
        return decode(data, **kwargs)

    model, _ = load_model_file(model_dir / "model.pt")
    engine = Engine(model, 4, cfg=InferenceConfig(tile=None, batch=4))
    run = engine.run

    def picky_run(images):
        if any(image.shape[:2] == (17, 19) for image in images):
            raise TypeError("an unforeseen failure")
        return run(images)

    write = apply_module.atomic_write_bytes

    def disk_full_for_b(dst, data):
        if dst.name != "b.png":
            return write(dst, data)
        from pipelines.common.fsutil import atomic_open

        with atomic_open(dst) as fh:  # half written, then the disk is full
            fh.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(apply_module, "decode_image", buggy_decode)
    monkeypatch.setattr(engine, "run", picky_run)
    monkeypatch.setattr(apply_module, "atomic_write_bytes", disk_full_for_b)
    report = apply_folder(engine, src, tmp_path / "out", workers=2, progress=False)

    failed = {p.name: why for p, why in report.failed}
    assert sorted(failed) == ["b.png", "odd.png", "qoi.png"]
    assert failed["qoi.png"] == "cannot read it (IndexError: list index out of range)"
    assert failed["odd.png"] == "the model failed on it (TypeError: an unforeseen failure)"
    assert failed["b.png"] == f"cannot write {tmp_path / 'out' / 'b.png'} (No space left on device)"
    assert len(report.written) == 4 and all(p.is_file() for p in report.written)
    assert not (tmp_path / "out" / "b.png").exists() and not list((tmp_path / "out").glob(".*"))  # nothing partial
    assert not report.all_failed and "4 written, 0 already there, 3 failed" in report.line()


@pytest.mark.parametrize("kind", ["empty", "text", "link"])
def test_a_bad_model_file_is_one_line_on_the_command_line(model_dir, tmp_path, kind):
    folder = tmp_path / "models" / TASK
    folder.mkdir(parents=True)
    weights = folder / "model.pt"
    if kind == "empty":
        weights.write_bytes(b"")
    elif kind == "text":
        weights.write_text("not weights\n")
    else:
        if not Path("/etc/passwd").is_file():
            pytest.skip("needs /etc/passwd")
        os.symlink("/etc/passwd", weights)
    Image.fromarray(photo(24, 32, 0)).save(tmp_path / "a.png")
    out = percept("apply", "--model", str(folder), "--task", TASK, "--input", str(tmp_path / "a.png"), "--out",
                  str(tmp_path / "out"))
    assert out.returncode == 1 and out.stdout == ""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"percept apply: error: --model {weights}") and "not a percept model file (" in lines[0]
