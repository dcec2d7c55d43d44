"""``percept export``: a trained network as one ONNX file (dynamic batch, height and width),
checked against PyTorch on ONNX Runtime before it is put in place."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.use.predictors import load_network
from training.onnx_export import OnnxRunner, export_onnx

CHECK_SIZES = ((37, 53), (64, 48))  # input sizes the exported file is compared at: odd and even
TOLERANCE = 1e-3  # largest |ONNX - PyTorch| accepted, on outputs in [0, 1]


def export(spec: str, out: Path, task: str | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Export the network ``spec`` names (as ``--model`` of ``percept evaluate``) to ``out``."""
    model, meta = load_network(spec, task, tracking_uri)
    scale, in_channels = meta["scale"], meta["model_config"]["in_channels"]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".onnx", dir=out.parent)
    os.close(fd)
    try:
        export_onnx(model, tmp, scale, in_channels)
        diff = max_difference(model, OnnxRunner(tmp, in_channels), in_channels)
        if not diff <= TOLERANCE:
            raise RuntimeError(f"the exported model differs from PyTorch by {diff:.3g} (> {TOLERANCE})")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return {"model": spec, "task": meta["task"], "scale": scale, "out": str(out), "bytes": out.stat().st_size,
            "max_difference": diff}


def max_difference(model: torch.nn.Module, runner: OnnxRunner, in_channels: int, seed: int = 0) -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime over a batch of two random
    inputs at each of ``CHECK_SIZES``."""
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for h, w in CHECK_SIZES:
        x = torch.rand(2, in_channels, h, w, generator=generator)
        with torch.inference_mode():
            expected = model.eval()(x).numpy()
        worst = max(worst, float(np.abs(runner(x.numpy()) - expected).max()))
    return worst


def run_cli(args, cfg) -> int:
    """``percept export --model SPEC --out FILE [--task TASK]``."""
    from pipelines.common.paths import Paths
    from pipelines.services import tracking

    done = export(args.model, args.out, args.task, tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, Paths().root))
    print(f"export: {done['out']} ({done['bytes'] / 1e6:.1f} MB, {done['task']} x{done['scale']}, dynamic batch, "
          f"height and width); ONNX Runtime matches PyTorch within {done['max_difference']:.2g}")
    return 0
