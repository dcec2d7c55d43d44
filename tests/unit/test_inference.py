"""Whole-image inference: tiles agree with the whole image, failures are loud."""

import numpy as np
import pytest
import torch

from training.inference import apply_model, load_model_file, to_image
from training.models import TransformNetConfig, build_transform_net

pytestmark = pytest.mark.unit


def sr_net(seed: int = 0):
    torch.manual_seed(seed)
    model = build_transform_net(TransformNetConfig(residual_blocks=2, sr_channels=16, norm="batch"), 4)
    for p in model.parameters():  # away from the zero-initialised output conv of the global skip
        p.data.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize("shape", [(70, 90), (64, 64), (41, 100)])
def test_tiled_output_matches_the_whole_image_within_one_level(shape):
    model = sr_net()
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    whole = apply_model(model, image, scale=4)
    tiled = apply_model(model, image, scale=4, tile=40, overlap=12)
    assert whole.shape == tiled.shape == (shape[0] * 4, shape[1] * 4, 3)
    assert np.abs(whole.astype(int) - tiled.astype(int)).max() <= 1


def test_tile_must_exceed_twice_the_overlap():
    with pytest.raises(ValueError, match="larger than twice the overlap"):
        apply_model(sr_net(), np.zeros((50, 50, 3), np.uint8), scale=4, tile=32, overlap=16)


def test_non_finite_outputs_raise_instead_of_becoming_an_image():
    with pytest.raises(ValueError, match="non-finite"):
        to_image(torch.full((1, 3, 4, 4), float("nan")))


def test_model_file_round_trip_and_a_wrong_file(tmp_path):
    model = sr_net()
    state = {"task": "sr_x4", "scale": 4, "model_config": model.cfg.model_dump(mode="json"), "model": model.state_dict(), "step": 3}
    torch.save(state, tmp_path / "model.pt")
    loaded, meta = load_model_file(tmp_path / "model.pt")
    x = torch.rand(1, 3, 12, 12)
    torch.testing.assert_close(loaded(x), model(x))
    assert meta["task"] == "sr_x4" and meta["step"] == 3 and "model" not in meta
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a percept model file"):
        load_model_file(tmp_path / "other.pt")
