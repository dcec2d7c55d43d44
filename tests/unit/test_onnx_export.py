"""The ONNX export: dynamic batch, height and width, and ONNX Runtime agreeing with PyTorch."""

import numpy as np
import pytest
import torch

from training.inference import Engine
from training.options import ColorNetConfig, InferenceConfig, ResNetConfig, TransformNetConfig
from training.models import build_transform_net
from training.onnx_export import OnnxRunner, export_onnx

from tests.unit.test_inference import randomised  # random weights and running statistics

pytestmark = pytest.mark.unit


CASES = {
    "sr_x4 batch norm": (TransformNetConfig(sr_channels=8, residual_blocks=1, norm="batch", global_skip=True), 4),
    # the style net's shape: downsamples by 4 and pads inside forward; instance norm
    "style instance norm": (TransformNetConfig(channels=4, residual_blocks=1, norm="instance"), 1),
    # the default restoration net: a 2x unshuffled body, a sub-pixel tail, the input as its baseline
    "denoise resnet": (ResNetConfig(channels=8, residual_blocks=1, unshuffle=2), 1),
    # a blind restorer's image-mean FiLM of its features
    "jpeg resnet context": (ResNetConfig(channels=8, residual_blocks=1, unshuffle=2, global_context=True), 1),
    "sr_x4 resnet": (ResNetConfig(channels=8, residual_blocks=1), 4),
    # colorization: the VGG encoder (max-pooling, reflection pads) on a 1/2 grid, chroma upsampled
    "colorize colornet": (ColorNetConfig(channels=8, residual_blocks=1), 1),
    # the default colorizer's options: an image mean, a guided filter from cumulative sums
    "colorize colornet context guide": (ColorNetConfig(channels=8, residual_blocks=1, global_context=True,
                                                       chroma_guide=4, chroma_gamut=True), 1),
    # chroma as a distribution over bins: a softmax and a 1x1 convolution with the cell centres
    "colorize colornet chroma bins": (ColorNetConfig(channels=8, residual_blocks=1, chroma_bins=6, temperature=0.4), 1),
}


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory):
    """(network, scale, its ONNX file on ONNX Runtime), exported once per case."""
    cfg, scale = CASES[request.param]
    model = randomised(build_transform_net(cfg, scale))
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", scale)
    return model, scale, OnnxRunner(path)


def test_onnx_runtime_matches_pytorch_at_two_sizes_and_batches(exported):
    model, scale, runner = exported
    for batch, h, w in ((1, 64, 64), (2, 37, 53)):  # the export example's size, then an odd one
        x = torch.rand(batch, 3, h, w)
        with torch.inference_mode():
            expected = model(x).numpy()
        got = runner(x.numpy())
        assert got.shape == (batch, 3, h * scale, w * scale)
        assert np.abs(got - expected).max() < 1e-4


def test_the_exported_file_gives_the_engine_s_8_bit_image(exported):
    model, scale, runner = exported
    image = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    expected = Engine(model, scale, cfg=InferenceConfig(tile=None))(image)
    out = runner.image(image)
    assert out.shape == expected.shape == (30 * scale, 45 * scale, 3)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
