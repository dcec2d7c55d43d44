"""benchmarks/scale.py at toy sizes, in this process's engine: the script stays runnable, the
generated images are distinct (all accepted, none a duplicate) and every sample is made."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_scale_benchmark_runs_and_its_checks_pass(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--sizes", "12,24", "--engine", "local",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if re.match(r"\s+(12|24)\s+\d", line)]
    assert [r[0] for r in rows] == ["12", "24"] and all(r[-1] == "ok" for r in rows), proc.stdout
    assert "ingest time per image" in proc.stdout and "shard peak memory, flow" in proc.stdout
    assert len(list((tmp_path / "collection").glob("*.png"))) == 24
