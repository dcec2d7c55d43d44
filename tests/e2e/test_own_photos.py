"""The README's "Training on your own photos", run as written: its params.yaml block merged into a
tiny project, then its bash block; a folder of photos becomes a new task (a 4x upscaler) that is
trained, evaluated on the held-out photos, registered, promoted and applied.

Two things differ from a user's run, both said in the README: the photos are a few of the shared
datasets' images resized (not from BSD200's training split), and the budget is smaller (the
block's steps cut; its network and everything else as written)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipelines.common.params import deep_merge
from tests.e2e.project_copy import ROOT, tiny_project
from tests.shared_data import DATASETS

pytestmark = pytest.mark.e2e
SECTION = "## Training on your own photos"
TASK = "sr_x4_mine"
STEPS = 150  # the README's 700, cut: enough for the gate on these photos


def readme_blocks() -> tuple[str, str]:
    """The section's yaml block (the params) and its bash block (the commands)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", 1)]
    yaml_blocks = re.findall(r"```yaml\n(.*?)```", section, flags=re.S)
    bash_blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert len(yaml_blocks) == 1 and len(bash_blocks) == 1, "the section has one params block and one command block"
    return yaml_blocks[0], bash_blocks[0]


def photos(folder: Path, names: list[tuple[str, str]], side: int) -> list[Path]:
    """A folder of 'photos': shared images resized so the longer side is ``side``, saved as JPEG
    and PNG as a camera roll would mix them."""
    folder.mkdir(parents=True)
    out = []
    for i, (dataset, name) in enumerate(names):
        image = Image.open(DATASETS / dataset / "HR" / f"{name}.png").convert("RGB")
        image.thumbnail((side, side), Image.BICUBIC)
        path = folder / (f"IMG_{i:04d}.jpg" if i % 2 else f"IMG_{i:04d}.png")
        image.save(path, quality=95) if path.suffix == ".jpg" else image.save(path)
        out.append(path)
    return out


@pytest.mark.timeout(900)
def test_the_readme_own_photos_example_trains_promotes_and_applies(tmp_path, prefect_harness):
    params_block, commands = readme_blocks()
    repo, env = tiny_project(tmp_path)
    (repo / ".venv").symlink_to(ROOT / ".venv")  # the README's commands call .venv/bin/...
    photos(repo / "my-photos" / "train", [("BSD200", n) for n in ("100075", "100080", "100098", "103041")], 160)
    held_out = photos(repo / "my-photos" / "val", [("Set14", "face"), ("Set14", "pepper")], 128)

    written = yaml.safe_load(params_block)
    assert written["train"]["tasks"] == [TASK] and written["tasks"][TASK]["task"] == "sr_x4"
    written["tasks"][TASK]["optim"]["steps"] = STEPS
    params = deep_merge(yaml.safe_load((repo / "params.yaml").read_text()), written)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", commands], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=780)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"the README's commands failed:\n{out[-6000:]}"

    # trained on the photos: the manifest holds them and nothing else
    manifest = (repo / "data" / "manifest" / "manifest.csv").read_text()
    assert manifest.count("my-photos/train") == 4 and manifest.count("my-photos/val") == 2 and "T91" not in manifest
    assert yaml.safe_load((repo / "models" / TASK / "run.json").read_text())["steps"] == STEPS
    # evaluated on the held-out photos against bicubic, with a sheet, and shown by `dvc metrics show`
    summary = yaml.safe_load((repo / "reports" / TASK / "summary.json").read_text())
    assert summary["mine"]["images"] == 2 and summary["mine"]["psnr_y"] > summary["mine"]["baseline"]["psnr_y"]
    assert summary["mine"]["baseline"]["model"] == "bicubic"
    assert (repo / "reports" / TASK / "mine.png").stat().st_size > 0
    assert set(yaml.safe_load((repo / "metrics" / f"{TASK}.json").read_text())) == {"metric", "Set5", "mine"}
    assert f"metrics/{TASK}.json" in out
    # registered and promoted: `@champion` is what the README's apply line loads
    promotion = yaml.safe_load((repo / "registry" / f"{TASK}.promotion.json").read_text())
    assert promotion["promoted"] and promotion["champion_after"] == 1, promotion
    # applied: one output per held-out photo, four times its size, not its bicubic upscale
    for photo in held_out:
        result = repo / "upscaled" / f"{photo.stem}.png"
        assert result.is_file(), sorted(p.name for p in (repo / "upscaled").iterdir())
        got, given = Image.open(result), Image.open(photo).convert("RGB")
        assert got.size == (4 * given.width, 4 * given.height)
        bicubic = given.resize(got.size, Image.BICUBIC)
        assert np.abs(np.asarray(got, np.int16) - np.asarray(bicubic, np.int16)).mean() > 0.1
