"""ONNX export of a transformation network (dynamic batch, height and width), and a runner for
the exported file on ONNX Runtime.

The style-shaped nets pad their input to a multiple of 4 inside ``forward`` with a Python
``if``; ``torch.export`` traces one side of it, so a file exported from a 64x64 example would
silently skip the padding on other sizes. ``AnySize`` pads unconditionally (a zero-width pad
is free) before calling the network, so the inner ``if`` is provably false for every size and
the exported graph is right for all of them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.inference import downsampling, to_image, to_tensor
from training.models import MIN_INPUT_SIZE

INPUT, OUTPUT = "image", "output"  # NCHW float in [0, 1] in; NCHW float out (clamp it to [0, 1])
MAX_SIDE = 1 << 15


class AnySize(nn.Module):
    """``model`` on any input size: reflect-pad to a multiple of ``multiple`` (split as
    TransformNet splits it), run, crop the output back."""

    def __init__(self, model: nn.Module, multiple: int, scale: int) -> None:
        super().__init__()
        self.model, self.multiple, self.scale = model, multiple, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        top, left = ph // 2, pw // 2
        y = self.model(F.pad(x, (left, pw - left, top, ph - top), mode="reflect"))
        s = self.scale
        return y[..., top * s : (top + h) * s, left * s : (left + w) * s]


def export_onnx(model: nn.Module, path: str | Path, scale: int, in_channels: int = 3, opset: int | None = None) -> Path:
    """Write ``model`` (eval mode, on the CPU) to ``path`` as one self-contained ONNX file whose
    batch, height and width are dynamic. The exporter's progress lines go nowhere."""
    multiple = downsampling(model)
    net = (AnySize(model, multiple, scale) if multiple > 1 else model).eval().cpu()
    example = torch.rand(1, in_channels, 64, 64)
    dims = {0: torch.export.Dim("batch", min=1, max=1024),
            2: torch.export.Dim("height", min=MIN_INPUT_SIZE, max=MAX_SIDE),
            3: torch.export.Dim("width", min=MIN_INPUT_SIZE, max=MAX_SIDE)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Quiet: "[torch.onnx] Obtain model graph..." on stdout, a warning per torchvision op it cannot
    # register (torchvision is not installed, nor needed), a FutureWarning from torch's own pytree.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*treespec.*", category=FutureWarning)
        torch.onnx.export(net, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_shapes={"x": dims}, opset_version=opset, dynamo=True, external_data=False)
    return path


class OnnxRunner:
    """An exported file on ONNX Runtime's CPU provider: ``runner(x)`` on NCHW float32 arrays,
    ``runner.image(rgb)`` on one uint8 HxWx3 image."""

    def __init__(self, path: str | Path, in_channels: int = 3, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.in_channels = in_channels

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def image(self, image: np.ndarray) -> np.ndarray:
        return to_image(torch.from_numpy(self(to_tensor(image, self.in_channels).numpy())))
