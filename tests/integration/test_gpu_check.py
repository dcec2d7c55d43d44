"""benchmarks/gpu.py, the script a GPU machine runs, at toy sizes on the CPU: it must not rot
between the sessions that have a GPU. One task of each network kind."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.common.paths import Paths

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_every_step_for_each_kind_of_network(tmp_path):
    paths = Paths(ROOT)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--device", "cpu", "--tasks", "sr_x4,denoise,style_wave",
         "--datasets", str(paths.datasets()), "--weights", str(paths.weights_source()), "--out", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PERCEPT_PROFILE": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["tasks"]) == {"sr_x4", "denoise", "style_wave"}
    for name, r in results["tasks"].items():
        assert "error" not in r, (name, r)
        assert set(r["samples_per_s"]) == {"fp32", "channels_last", "bf16", "bf16+channels_last"} and min(r["samples_per_s"].values()) > 0
        assert r["gflop_per_sample"] > 0 and r["training"]["steps"] >= 2
        assert r["stream"]["loader_workers"] == 1 and r["stream"]["samples_per_s"] > 0 and r["stream"]["vs_step"] > 0
        assert set(r["validation"]) == {"Set5", "Set14"}
    assert results["tasks"]["sr_x4"]["arch"] == "resnet" and results["tasks"]["style_wave"]["arch"] == "johnson"
    sr = results["tasks"]["sr_x4"]["validation"]["Set5"]
    assert {"psnr_y", "baseline_psnr_y"} <= set(sr)
    assert {"style_loss", "content_loss", "baseline_style_loss"} <= set(results["tasks"]["style_wave"]["validation"]["Set5"])
    assert len(results["latency"]) == 3 and all(ms > 0 for v in results["latency"].values() for ms in v.values())
    table = (out / "results.md").read_text()
    assert "| sr_x4 |" in table and "| style_wave |" in table
