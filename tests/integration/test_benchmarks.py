"""The CPU benchmarks at toy sizes: each script stays runnable on the current defaults, and what
it measures still holds where a toy run can tell (same bytes on every engine, the same output on
every inference path, FLOP counted for the network the task builds). gpu.py and scale.py have
their own files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def bench(name: str, *args: str, timeout: int = 300) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^total \d+ s$", proc.stdout, re.M), proc.stdout  # the common ending
    return proc.stdout


def test_infer_benchmark_times_each_path_against_eager_with_the_same_output():
    out = bench("infer", "--sizes", "32", "--repeats", "1", "--warmup", "0", "--paths", "eager,channels_last", "--no-tiling")
    rows = {(r[0], r[3]): r for r in (line.split() for line in out.splitlines()) if r[:1] in (["sr_x4"], ["style"]) and len(r) > 8}
    assert set(rows) == {(n, p) for n in ("sr_x4", "style") for p in ("eager", "channels_last")}, out
    for (net, path), r in rows.items():
        assert r[1] == "32x32" and float(r[6]) > 0  # megapixels/s
        assert (r[7] == "1.00") == (path == "eager")
        assert float(r[-2]) < 1e-3  # max |diff| against eager's output
    assert float(rows[("style", "eager")][2]) > 0  # GFLOP per image, counted


def test_data_benchmark_builds_the_same_bytes_on_every_engine_and_sizes_the_loader():
    out = bench("data", "--ray-workers", "1", "--seconds", "0.5", "--batch", "4", "--train-sets", "Set14", "--tflops", "100")
    build = [line.split() for line in out.splitlines() if re.match(r"\s+(local|ray)\s+\d", line)]
    assert [r[0] for r in build] == ["local", "ray"] and all(r[-1] == "yes" for r in build), out
    header = re.search(r"\((\d+) files -> (\d+) train images -> (\d+) samples", out)
    assert header and int(header[3]) == 8 * int(header[2])  # sr_x4's patches_per_image
    streams = [line.split() for line in out.splitlines() if re.match(r"\s+(old|png|raw)\s+[01]\s", line)]
    assert {r[0] for r in streams} == {"old", "png", "raw"} and all(float(r[2]) > 0 for r in streams)
    assert re.search(r"^\s+100\s+\d+\s+[\d.]+\s+[\d.]+$", out, re.M), out  # loader cores for a 100 TFLOP/s GPU


def test_memory_benchmark_measures_both_policies_for_each_case():
    out = bench("memory", "--calls", "1", "--repeats", "1")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if re.match(r"\| (vgg|train) ", line)]
    assert [(r[0], r[1]) for r in rows] == [(c, p) for c in ("vgg", "train") for p in ("default", "keep")], out
    assert all(float(r[2]) > 0 and int(r[3]) >= 0 for r in rows)
    assert [r[5] for r in rows if r[1] == "default"] == ["x1.00", "x1.00"]  # each case's speed-up is against its default
    # (whether the setting saves page faults needs more than one call per process: not judged here)


def test_train_benchmark_compares_ray_with_a_plain_loop_on_the_default_network(tmp_path):
    out = bench("train", "--steps", "4", "--warmup", "2", "--log-every", "2", "--repeats", "1", "--build-images", "4",
                "--val-images", "1", "--batch-size", "4", "--shards", str(tmp_path / "none"), timeout=600)
    assert re.search(r"^model: resnet \(channels \d+, residual_blocks \d+", out, re.M), out  # the default arch, its own fields
    net = re.search(r"network fwd\+bwd ([\d.]+)", out)
    assert net and float(net[1]) > 0, out  # FLOP attributed to the network the task builds
    rates = {r[0]: float(r[2]) for r in (line.split() for line in out.splitlines()) if r[:2] in (["plain", "1"], ["ray", "1"])}
    assert set(rates) == {"plain", "ray"} and min(rates.values()) > 0, out
    assert re.search(r"Ray / plain = [\d.]+", out)


@pytest.mark.timeout(900)
def test_tune_benchmark_searches_then_trains_both_recipes_on_the_whole_set():
    out = bench("tune", "--tiny", timeout=840)
    assert re.search(r"^search tune-sr_x4-\w+ \(MLflow run \w+\): 3 of 3 trials", out, re.M), out
    rows = {r[0]: r for r in (line.split() for line in out.splitlines())
            if r and r[0] in ("shipped", "tuned", "baseline") and r[1] != "-"}  # not the "tuned - shipped" line
    assert set(rows) == {"shipped", "tuned", "baseline"}, out
    # columns: recipe, tuning split (none for the baseline), Set5, ...
    shipped, tuned, base = float(rows["shipped"][2]), float(rows["tuned"][2]), float(rows["baseline"][1])
    assert min(shipped, tuned) > 0 and base > 0, out  # Set5 figures of both recipes, trained and scored
    gain = float(re.search(r"^tuned - shipped \(psnr_y, higher is better\): Set5 ([-+][\d.]+)", out, re.M)[1])
    assert gain == pytest.approx(tuned - shipped, abs=2e-4), out
