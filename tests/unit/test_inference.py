"""Whole-image inference: tiles agree with the whole image (batch norm and instance norm),
batches agree with single images, failures are loud."""

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from training.inference import Engine, ModelFileError, apply_model, load_model_file, to_image, to_tensor
from training.options import InferenceConfig, TransformNetConfig
from training.models import build_transform_net
from training.tiling import receptive_radius, tile_grid, tiled_forward

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


def sr_state(**changes):
    model = sr_net()
    return {"task": "sr_x4", "scale": 4, "model_config": model.cfg.model_dump(mode="json"), "model": model.state_dict(),
            "step": 3, **changes}


def write_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes/readme.txt", "a zip archive, not a torch file")


def write_truncated(path: Path) -> None:
    torch.save(sr_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class Gadget:  # a class a pickle would have to import (and could run code of) to rebuild
    pass


BAD_MODEL_FILES = {  # name: (how to write it, what the message must say)
    "empty": (lambda p: p.write_bytes(b""), "(empty file)"),
    "text": (lambda p: p.write_text("task: sr_x4\nscale: 4\n"), "not a PyTorch file: neither a zip archive nor a pickle"),
    "pickle": (lambda p: p.write_bytes(pickle.dumps({"task": "sr_x4", "scale": 4})), "not a PyTorch file: a pickle"),
    "pickle_protocol_2": (lambda p: p.write_bytes(pickle.dumps({"task": "sr_x4"}, protocol=2)), "not a PyTorch file: a pickle"),
    "zip": (write_zip, "not a PyTorch file: a damaged or foreign zip archive"),
    "truncated": (write_truncated, "not a PyTorch file: a damaged or foreign zip archive"),
    "tensor": (lambda p: torch.save(torch.zeros(3, 4), p), "a PyTorch file, but not a percept model: it holds a tensor"),
    "list": (lambda p: torch.save([1, 2], p), "a PyTorch file, but not a percept model: it holds a list"),
    "missing_keys": (lambda p: torch.save({"task": "sr_x4", "weights": torch.zeros(1)}, p),
                     "a PyTorch file, but not a percept model: missing 'scale', 'model_config', 'model'"),
    "wrong_types": (lambda p: torch.save(sr_state(scale="4"), p), "'scale' is a str, not an integer"),
    "custom_object": (lambda p: torch.save({"task": Gadget()}, p), "Python objects that only running its code could rebuild"),
    "bad_config": (lambda p: torch.save(sr_state(model_config={"arch": "resnet", "channels": "wide"}), p),
                   "its model_config is not valid: resnet.channels"),
    "wrong_weights": (lambda p: torch.save(sr_state(model_config={**sr_state()["model_config"], "sr_channels": 8}), p),
                      "its weights do not fit its model_config: Error(s) in loading state_dict"),
    "bad_scale": (lambda p: torch.save(sr_state(scale=3), p), "its scale and model_config make no network: scale"),
}


@pytest.mark.parametrize("kind", sorted(BAD_MODEL_FILES))
def test_a_bad_model_file_is_one_line_naming_the_file_and_the_fault(tmp_path, kind):
    write, expected = BAD_MODEL_FILES[kind]
    path = tmp_path / "models" / kind / "model.pt"
    path.parent.mkdir(parents=True)
    write(path)
    with pytest.raises(ModelFileError) as caught:
        load_model_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a percept model file (") and expected in message, message
    assert "\n" not in message and len(message) < len(str(path)) + 400
    assert isinstance(caught.value, ValueError) and caught.value.path == path  # the CLI prints ValueErrors as one line


@pytest.mark.skipif(not Path("/etc/passwd").is_file(), reason="needs /etc/passwd")
def test_a_link_to_a_system_file_is_named_with_its_target(tmp_path):
    link = tmp_path / "model.pt"
    os.symlink("/etc/passwd", link)
    with pytest.raises(ModelFileError) as caught:
        load_model_file(link)
    assert str(caught.value) == (f"{link} (a link to {os.path.realpath('/etc/passwd')}): not a percept model file "
                                 "(not a PyTorch file: neither a zip archive nor a pickle)")


def test_a_folder_a_device_and_a_missing_file_are_model_file_errors(tmp_path):
    with pytest.raises(ModelFileError, match="a folder, not a file"):
        load_model_file(tmp_path)
    with pytest.raises(ModelFileError, match="no such file"):
        load_model_file(tmp_path / "absent.pt")
    if Path("/dev/null").exists():
        with pytest.raises(ModelFileError, match="not a regular file"):
            load_model_file("/dev/null")


def test_a_model_file_with_defaults_left_out_of_its_config_loads_with_every_field(tmp_path):
    state = sr_state()
    state["model_config"] = {k: v for k, v in state["model_config"].items() if k not in ("in_channels", "arch")}
    torch.save(state, tmp_path / "model.pt")
    _, meta = load_model_file(tmp_path / "model.pt")
    assert meta["model_config"]["in_channels"] == 3 and meta["model_config"]["arch"] == "johnson"


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights, and batch-norm running statistics away from 0/1, so every layer matters."""
    torch.manual_seed(seed)
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    for name, b in model.named_buffers():
        if "running" in name:
            b.data.uniform_(0.5, 1.5)
    return model.eval()


def style_net(**overrides):
    """The style/restoration shape (down x4, residual blocks, up x4) with instance norm, small."""
    cfg = {"channels": 4, "residual_blocks": 1, "norm": "instance", **overrides}
    return randomised(build_transform_net(TransformNetConfig(**cfg), 1))


def smooth_image(h: int, w: int, seed: int = 1) -> np.ndarray:
    """Random-walk rows: smooth like a photo, so the statistics vary across the image."""
    steps = np.random.default_rng(seed).integers(-12, 13, (h, w, 3))
    return np.clip(np.cumsum(steps, axis=1) + 128, 0, 255).astype(np.uint8)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(int) - b.astype(int)).max())


@pytest.mark.parametrize("shape", [(70, 93), (72, 96), (50, 130)])
def test_instance_norm_tiles_match_the_whole_image(shape):
    model = style_net()
    image = smooth_image(*shape)
    whole = Engine(model, 1, cfg=InferenceConfig(tile=None))(image)
    engine = Engine(model, 1, cfg=InferenceConfig(tile=64, batch=3))
    assert engine.tile == 64 and engine.overlap >= receptive_radius(model)
    tiled = engine(image)
    assert engine.passes == 8  # 7 instance-norm layers, one sweep each, then the output pass
    assert max_diff(whole, tiled) <= 1


def test_without_whole_image_statistics_the_tiles_would_show():
    """The same tiles, each instance-normalised on its own (the naive way), differ by far more."""
    model, image = style_net(), smooth_image(70, 93)
    whole = Engine(model, 1, cfg=InferenceConfig(tile=None))(image)
    naive, _ = tiled_forward(model, nn.Identity(), to_tensor(image, 3), 1, tile=64, overlap=28, align=4)
    assert max_diff(whole, to_image(naive)) > 8


class _ShiftByImageMean(nn.Module):
    """conv, then every pixel shifted by the image's mean of it (colornet's global context, small)."""

    def __init__(self) -> None:
        super().__init__()
        from training.models import ImageMean

        self.conv, self.image_mean = nn.Conv2d(3, 3, 3, padding=1), ImageMean()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.conv(x)
        return x + 0.5 * (z - self.image_mean(z)[:, :, None, None])

    def receptive_field(self) -> tuple[int, int]:
        return 1, 1


def test_an_image_mean_is_the_whole_image_s_in_every_tile():
    torch.manual_seed(0)
    model = _ShiftByImageMean().eval()
    image = smooth_image(70, 93)
    image[:, :40] //= 4  # a dark left side: each tile's own mean is far from the image's
    x = to_tensor(image, 3)
    with torch.no_grad():
        whole = model(x)
        tiled, passes = tiled_forward(model, model, x, 1, tile=32, overlap=4)
        assert passes == 2  # one sweep for the mean, then the output pass
        torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
        model.image_mean.whole_image_mean = False  # each tile its own mean: the tiles show
        naive, _ = tiled_forward(model, model, x, 1, tile=32, overlap=4)
        assert (naive - whole).abs().max() > 0.02


def test_restoration_net_with_global_skip_and_an_instance_norm_sr_net_tile_exactly():
    image = smooth_image(45, 61)
    for model, scale, tile in ((style_net(global_skip=True), 1, 64),
                               (randomised(build_transform_net(TransformNetConfig(sr_channels=8, residual_blocks=1), 4)), 4, 28)):
        whole = Engine(model, scale, cfg=InferenceConfig(tile=None))(image)
        tiled = Engine(model, scale, cfg=InferenceConfig(tile=tile, batch=2))(image)
        assert max_diff(whole, tiled) <= 1


def test_batch_norm_sr_tiles_batched_and_channels_last_match_the_whole_image():
    model = randomised(sr_net())
    image = smooth_image(53, 67)
    whole = Engine(model, 4, cfg=InferenceConfig(tile=None))(image)
    engine = Engine(model, 4, cfg=InferenceConfig(tile=32, batch=4, channels_last=True))
    assert engine.passes == 0
    assert max_diff(whole, engine(image)) <= 1
    assert engine.passes == 1  # batch norm: no statistics sweeps


@pytest.mark.parametrize("h,w,tile,overlap,align", [(72, 96, 64, 28, 4), (512, 300, 256, 16, 4), (200, 37, 48, 12, 1),
                                                   (40, 40, 64, 8, 1), (1001, 997, 130, 17, 1)])
def test_the_tiles_keep_every_pixel_exactly_once_and_start_aligned(h, w, tile, overlap, align):
    tiles = tile_grid(h, w, tile, overlap, align)
    covered = np.zeros((h, w), int)
    for t in tiles:
        ky0, ky1, kx0, kx1 = t.keep
        assert 0 <= t.y0 <= ky0 < ky1 <= t.y1 <= h and 0 <= t.x0 <= kx0 < kx1 <= t.x1 <= w
        # the kept part is overlap away from every inner edge of the tile
        assert (ky0 - t.y0 >= overlap or t.y0 == 0) and (t.y1 - ky1 >= overlap or t.y1 == h)
        assert (kx0 - t.x0 >= overlap or t.x0 == 0) and (t.x1 - kx1 >= overlap or t.x1 == w)
        assert t.y0 % align == 0 and t.x0 % align == 0
        assert t.y1 - t.y0 <= tile and t.x1 - t.x0 <= tile  # memory stays bounded by the tile
        covered[ky0:ky1, kx0:kx1] += 1
    assert (covered == 1).all()
    assert len({(t.y1 - t.y0, t.x1 - t.x0) for t in tiles}) == 1  # one size: tiles batch together
    if (h, w, tile) == (512, 300, 256):  # shrunk to share the sides: 3 x 2 tiles of 192 x 168, not 256
        assert len(tiles) == 6 and (tiles[0].y1, tiles[0].x1) == (192, 168)


@pytest.mark.parametrize("make,scale", [(lambda: randomised(sr_net()), 4),
                                        (lambda: randomised(build_transform_net(TransformNetConfig(channels=4, residual_blocks=1, norm="batch"), 1)), 1)])
def test_receptive_radius_bounds_how_far_a_pixel_reaches(make, scale):
    model = make()
    radius = receptive_radius(model)
    x = torch.rand(1, 3, 96, 96)
    y = x.clone()
    y[..., 48, 48] += 0.5
    with torch.no_grad():
        changed = (model(x) - model(y)).abs().amax(1)[0] > 0
    rows, cols = changed.nonzero(as_tuple=True)
    reach = max((rows - 48 * scale).abs().max(), (cols - 48 * scale).abs().max()).item() / scale
    assert 0 < reach <= radius


def test_a_batch_of_mixed_sizes_matches_one_image_at_a_time():
    for model, scale in ((style_net(), 1), (randomised(sr_net()), 4)):
        images = [smooth_image(40, 52, seed) for seed in range(3)] + [smooth_image(36, 44, 9)]
        engine = Engine(model, scale, cfg=InferenceConfig(tile=None, batch=2))
        batched = engine.run(images)
        for image, out in zip(images, batched):
            assert out.shape == (image.shape[0] * scale, image.shape[1] * scale, 3)
            assert max_diff(out, engine(image)) <= 1


def test_auto_tile_is_about_1024_output_pixels_aligned_to_the_downsampling():
    assert Engine(style_net(), 1).tile == 1024
    assert Engine(randomised(sr_net()), 4).tile == 256
    assert Engine(style_net(), 1, cfg=InferenceConfig(tile=130)).tile == 128


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA device"):
        Engine(randomised(sr_net()), 4, cfg=InferenceConfig(device="cuda"))
