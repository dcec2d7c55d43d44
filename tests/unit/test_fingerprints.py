"""The digests that decide resume, reuse and lineage (pipelines/common/fingerprints.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from pipelines.common import fingerprints as fp
from tests.conftest import config_from_params

pytestmark = pytest.mark.unit


@pytest.fixture
def code(tmp_path, monkeypatch):
    """A copy of the training package that fingerprints read as the training code."""
    copy = tmp_path / "training"
    shutil.copytree(fp.TRAINING_CODE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fp, "TRAINING_CODE", copy)
    return copy


def test_a_run_name_changes_with_the_recipe_the_shards_and_the_training_code(tmp_path, code):
    index = tmp_path / "index.json"
    index.write_text('{"shards": 1}')
    cfg = config_from_params()
    name = fp.run_name("sr_x4", cfg, index)
    assert name.startswith("sr_x4-") and len(name) == len("sr_x4-") + 12
    assert fp.run_name("sr_x4", config_from_params(), index) == name  # same inputs, same name: a rerun resumes
    assert fp.run_name("sr_x4", config_from_params({"seed": cfg.seed + 1}), index) != name
    assert fp.run_name("sr_x4", config_from_params({"train": {"workers": 2}}), index) != name
    index.write_text('{"shards": 2}')
    changed_shards = fp.run_name("sr_x4", cfg, index)
    assert changed_shards != name
    (code / "losses.py").write_text((code / "losses.py").read_text() + "\n# changed\n")
    assert fp.run_name("sr_x4", cfg, index) != changed_shards  # older code's finished run is not resumed


def test_the_params_hash_is_the_recipe_alone(code):
    cfg = config_from_params()
    digest = fp.params_hash("sr_x4", cfg)
    assert digest == fp.digest(fp.recipe("sr_x4", cfg)) and len(digest) == 64
    # how a model is trained (workers, the code) is lineage of the run, not of the recipe
    assert fp.params_hash("sr_x4", config_from_params({"train": {"workers": 2}})) == digest
    (code / "losses.py").write_text("# changed\n")
    assert fp.params_hash("sr_x4", cfg) == digest
    larger = cfg.task("sr_x4").patch_size + 4
    assert fp.params_hash("sr_x4", config_from_params({"tasks": {"sr_x4": {"patch_size": larger}}})) != digest
    assert fp.params_hash("denoise", cfg) != digest


def test_an_evaluation_digest_follows_the_images_and_the_settings_not_other_files(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    pixels = np.zeros((16, 16, 3), np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    cfg = config_from_params()
    digest = fp.evaluation_sha256("sr_x4", cfg, folder)
    (folder / "notes.txt").write_text("not an image")
    assert fp.evaluation_sha256("sr_x4", cfg, folder) == digest
    pixels[0, 0] = 1
    Image.fromarray(pixels).save(folder / "a.png")
    changed = fp.evaluation_sha256("sr_x4", cfg, folder)
    assert changed != digest
    assert fp.evaluation_sha256("sr_x4", config_from_params({"evaluate": {"sheet_crop": cfg.evaluate.sheet_crop + 8}}), folder) != changed


def test_a_digest_ignores_key_order():
    assert fp.digest({"a": 1, "b": [1, 2]}) == fp.digest({"b": [1, 2], "a": 1}) != fp.digest({"a": 1, "b": [2, 1]})
