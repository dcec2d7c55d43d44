"""The `percept` command line as a user meets it: help, and clear errors with exit codes."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def percept(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_help_lists_every_stage():
    out = percept("--help")
    assert out.returncode == 0
    for verb in ("acquire", "ingest", "shard", "tasks"):
        assert verb in out.stdout
    shard = percept("shard", "--help")
    assert shard.returncode == 0 and "--task" in shard.stdout and "--all" in shard.stdout


def test_bad_params_exit_2_naming_the_key(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tasks"]["sr_x4"]["degradation"]["scale"] = 0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    out = percept("--params", str(bad), "tasks")
    assert out.returncode == 2
    assert "tasks.sr_x4.degradation.scale" in out.stderr


def test_unknown_task_and_missing_manifest_are_clear(tmp_path):
    out = percept("--params", str(ROOT / "params.yaml"), "shard", "--task", "sr_x3", cwd=tmp_path)
    assert out.returncode == 2 and "unknown task 'sr_x3'" in out.stderr and "sr_x4" in out.stderr
    assert "prefect" not in out.stderr.lower()  # refused before any flow started
    out = percept("--params", str(ROOT / "params.yaml"), "shard", "--task", "sr_x4", cwd=tmp_path)
    assert out.returncode == 1 and "run `percept ingest`" in out.stderr


def test_tasks_marks_the_configured_ones():
    out = percept("tasks")
    assert out.returncode == 0
    rows = {line[2:].split()[0]: (line[0], line[2:].split()[1]) for line in out.stdout.splitlines() if line[:2] in ("* ", "  ")}
    assert rows["sr_x4"] == ("*", "sr_x4") and rows["style_wave"][1] == "style" and rows["deblur"][0] == "*" and rows["style_candy"][1] == "style"
    assert set(rows) >= {"sr_x8", "denoise", "deblur", "jpeg", "colorize"}


def test_ingest_with_nothing_left_to_train_on_exits_1_saying_why(tmp_path):
    """A patch larger than every train image: not an empty split and a confusing shard error
    later, but exit 1 now, naming the reason and the setting; one bad file costs only itself."""
    import numpy as np
    from PIL import Image

    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (60, 60, 3), dtype=np.uint8)).save(tmp_path / "train" / "small.png")
    (tmp_path / "train" / "cut.png").write_bytes(b"qoif" + (4).to_bytes(4, "big") * 2 + bytes([3, 0]))
    Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(tmp_path / "val" / "v.png")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"]["sources"] = [{"uri": "train", "split": "train"}, {"uri": "val", "split": "val"}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = percept("ingest", cwd=tmp_path)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr, out.stderr  # the reason in one line, not Prefect's frames
    assert "Encountered exception during execution: NothingUsable" in out.stderr  # Prefect's run log still says it
    last = out.stderr.strip().splitlines()
    line = next(x for x in last if x.startswith("percept ingest: error:"))
    assert "no train image left: all 2 train files from train were rejected (1 format_not_allowed, 1 too_small)" in line
    assert "at least 128 px on a side" in line  # the largest patch of the default tasks
    assert not (tmp_path / "data" / "manifest").exists()  # nothing half-made
