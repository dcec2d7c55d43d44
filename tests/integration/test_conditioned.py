"""A model conditioned on its input's level, used as a user would: `percept apply` and `percept
compare` read a JPEG's quality from the file or take `--level`, the served pyfunc takes `level`
beside the image, and a file with no level is named and skipped."""

import base64
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from training.conditioning import LevelSpec, with_level
from training.inference import Engine, load_model_file

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def percept(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "--params", str(ROOT / "params.yaml"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def save_model(folder: Path, task: str, spec: LevelSpec | None) -> Path:
    from training.models import build_transform_net
    from training.options import ResNetConfig

    torch.manual_seed(0)
    cfg = ResNetConfig(channels=8, residual_blocks=1, unshuffle=2, in_channels=4 if spec else 3)
    model = build_transform_net(cfg, 1)
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    folder.mkdir(parents=True)
    state = {"task": task, "scale": 1, "model_config": cfg.model_dump(mode="json"), "model": model.state_dict(), "step": 1}
    if spec:
        state["level"] = spec.to_dict()
    torch.save(state, folder / "model.pt")
    (folder / "config.json").write_text(json.dumps({"task": task}))
    return folder


JPEG_SPEC = LevelSpec("jpeg", "quality", 255 / 95, 10, 95)
NOISE_SPEC = LevelSpec("gaussian_noise", "sigma", 255 / 50, 0, 50)


def photo(seed: int, h: int = 32, w: int = 40) -> np.ndarray:
    steps = np.random.default_rng(seed).integers(-12, 13, (h, w, 3))
    return np.clip(np.cumsum(steps, axis=1) + 128, 0, 255).astype(np.uint8)


def jpeg_bytes(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


@pytest.fixture()
def jpegs(tmp_path) -> tuple[Path, dict[str, bytes]]:
    """Two JPEGs at different qualities and a PNG (no quality to read)."""
    src = tmp_path / "in"
    src.mkdir()
    files = {"q20.jpg": jpeg_bytes(photo(0), 20), "q85.jpg": jpeg_bytes(photo(1), 85)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    Image.fromarray(photo(2)).save(src / "plain.png")
    return src, files


def test_apply_reads_each_jpegs_quality_and_names_the_file_without_one(tmp_path, jpegs):
    src, files = jpegs
    model = save_model(tmp_path / "models" / "jpeg", "jpeg", JPEG_SPEC)
    engine = Engine(load_model_file(model / "model.pt")[0], 1, 4)
    out = tmp_path / "out"
    done = percept("apply", "--task", "jpeg", "--model", str(model), "--input", str(src), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "1 failed" in done.stdout + done.stderr and "plain.png" in done.stderr and "--level" in done.stderr
    assert not (out / "plain.png").exists()
    outputs = {}
    for name, quality in (("q20.jpg", 20), ("q85.jpg", 85)):
        got = np.asarray(Image.open(out / name.replace(".jpg", ".png")))
        want = engine(with_level(decoded(files[name]), JPEG_SPEC.code(quality)))
        np.testing.assert_array_equal(got, want)
        outputs[name] = got
    # the level matters: the same picture at another quality gives another output
    other = engine(with_level(decoded(files["q20.jpg"]), JPEG_SPEC.code(85)))
    assert np.abs(other.astype(int) - outputs["q20.jpg"].astype(int)).max() > 0

    # --level sets one level for every file, the PNG included
    out2 = tmp_path / "out2"
    done = percept("apply", "--task", "jpeg", "--model", str(model), "--input", str(src), "--out", str(out2), "--level", "50")
    assert done.returncode == 0 and "3 written" in done.stdout, done.stdout + done.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(out2 / "q20.png")),
                                  engine(with_level(decoded(files["q20.jpg"]), JPEG_SPEC.code(50))))


def test_a_level_is_required_where_no_file_carries_it_and_refused_where_no_model_takes_it(tmp_path, jpegs):
    src, _ = jpegs
    denoiser = save_model(tmp_path / "models" / "denoise", "denoise", NOISE_SPEC)
    done = percept("apply", "--task", "denoise", "--model", str(denoiser), "--input", str(src), "--out", str(tmp_path / "o1"))
    assert done.returncode != 0 and "--level" in done.stderr and "sigma" in done.stderr
    assert "Traceback" not in done.stderr
    done = percept("apply", "--task", "denoise", "--model", str(denoiser), "--input", str(src), "--out", str(tmp_path / "o2"), "--level", "15")
    assert done.returncode == 0 and "3 written" in done.stdout, done.stderr
    plain = save_model(tmp_path / "models" / "plain", "denoise", None)
    done = percept("apply", "--task", "denoise", "--model", str(plain), "--input", str(src), "--out", str(tmp_path / "o3"), "--level", "15")
    assert done.returncode != 0 and "not conditioned" in done.stderr


def test_compare_gives_a_conditioned_model_each_jpegs_quality(tmp_path, jpegs):
    src, _ = jpegs
    model = save_model(tmp_path / "models" / "jpeg", "jpeg", JPEG_SPEC)
    sheet = tmp_path / "sheet.png"
    done = percept("compare", "--input", str(src), "--model", "identity", "--model", str(model), "--out", str(sheet),
                   "--crop", "32")
    assert done.returncode == 0, done.stderr
    assert "1 skipped" in done.stdout and "plain.png" in done.stderr
    assert sheet.is_file()


@pytest.fixture()
def pyfunc(tmp_path):
    from pipelines.use.serving import PerceptModel

    folder = save_model(tmp_path / "models" / "jpeg", "jpeg", JPEG_SPEC)
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"tile": None}))
    model = PerceptModel()
    model.load_context(SimpleNamespace(artifacts={"weights": str(folder / "model.pt"), "settings": str(settings)}))
    return model


def test_the_served_model_takes_the_level_beside_the_image_or_reads_the_jpeg(pyfunc):
    from mlflow.exceptions import MlflowException

    data = jpeg_bytes(photo(4), 30)
    engine = pyfunc.engine

    def answer(request):
        out = pyfunc.predict(None, request)
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(out["image"]))))

    read = answer({"image": base64.b64encode(data).decode()})
    np.testing.assert_array_equal(read, engine(with_level(decoded(data), JPEG_SPEC.code(30))))
    given = answer({"image": base64.b64encode(data).decode(), "level": 70})
    np.testing.assert_array_equal(given, engine(with_level(decoded(data), JPEG_SPEC.code(70))))
    png = io.BytesIO()
    Image.fromarray(photo(5)).save(png, format="PNG")
    with pytest.raises(MlflowException, match="give it as the level"):
        pyfunc.predict(None, {"image": base64.b64encode(png.getvalue()).decode()})
    with pytest.raises(MlflowException, match="level"):
        pyfunc.predict(None, {"image": base64.b64encode(data).decode(), "level": "high"})
    # an array request carries the level channel itself
    four = with_level(photo(6), JPEG_SPEC.code(40))
    np.testing.assert_array_equal(pyfunc.predict(None, four), engine(four))
    with pytest.raises(MlflowException, match="HxWx4"):
        pyfunc.predict(None, photo(6))
