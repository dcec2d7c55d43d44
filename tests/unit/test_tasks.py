"""The task registry: the tasks the product promises, and how a new one is added."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from training import degradations as deg
from training.tasks import TASKS, Task, get_task, register

pytestmark = pytest.mark.unit


def test_the_promised_tasks_are_registered_with_their_degradations():
    expected = {
        "sr_x4": (deg.BicubicDownscale, 4),
        "sr_x8": (deg.BicubicDownscale, 8),
        "denoise": (deg.GaussianNoise, 1),
        "deblur": (deg.GaussianBlur, 1),
        "jpeg": (deg.JpegCompression, 1),
        "colorize": (deg.Grayscale, 1),
        "style": (deg.Identity, 1),
    }
    assert set(expected) <= set(TASKS)
    for name, (cls, scale) in expected.items():
        d = TASKS[name].make_degradation()
        assert isinstance(d, cls), name
        assert d.input_scale == scale, name
    assert TASKS["denoise"].make_degradation().sigma == 25.0
    assert TASKS["jpeg"].make_degradation().quality == 10


def test_params_override_registry_defaults():
    d = TASKS["sr_x4"].make_degradation({"blur_sigma": 1.0})
    assert d.scale == 4 and d.blur_sigma == 1.0


def test_get_task_lists_alternatives():
    assert get_task("sr_x4").name == "sr_x4"
    with pytest.raises(KeyError, match="registered tasks: .*sr_x4"):
        get_task("sr_x3")


def test_registering_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register(Task("sr_x4", "again", deg.BicubicDownscale))


def test_a_new_task_is_one_entry(monkeypatch):
    # A new task needs only its registry entry; config validation and pairs pick it up.
    from pipelines import config as config_mod
    from training.pairs import train_pair

    monkeypatch.setitem(TASKS, "sr_x2", Task("sr_x2", "2x SR", deg.BicubicDownscale, {"scale": 2}))
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    raw["tasks"]["sr_x2"] = {"patch_size": 32, "patches_per_image": 1}
    params = config_mod.parse_config(raw).task("sr_x2")
    assert params.degradation.input_scale == 2
    pair = train_pair(np.zeros((40, 40, 3), np.uint8), params.degradation, params.patch_size, seed=0)
    assert pair.input.shape == (16, 16, 3)
