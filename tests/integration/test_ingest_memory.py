"""Ingest's peak memory is set by its limits, not by how many or how large the inputs are.

Each case runs ``decode_all`` in a fresh process on a folder of files and reports the peak
resident memory the decode added (VmHWM after resetting it, minus the RSS before). Eight times
the files, plus a file far over ``max_bytes`` and an image far over ``max_decode_bytes``, must
not raise the peak by more than the allocator's slack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SIDE = 1000  # noise images: ~3 MB each as PNG, ~7 MB to decode

CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from pipelines.config import parse_config
    from pipelines.ingest import decode_all, list_all

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    cfg = parse_config({{
        "acquire": {{"collections": [{{"name": "x", "dataset": "x"}}]}},
        "ingest": {{"sources": [{{"uri": {src!r}, "split": "train"}}], "max_bytes": 20_000_000, "max_decode_bytes": 100_000_000}},
        "tasks": {{"denoise": {{"patch_size": 32, "patches_per_image": 1}}}},
        "data": {{"engine": "local"}},  # the decode in this process, where its memory is measured
    }})
    candidates = list_all.fn(cfg)
    out = Path({out!r}); out.mkdir()
    before = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark
    accepted, rejects = decode_all.fn(candidates, cfg, out)
    print(json.dumps({{"peak": status("VmHWM") - before, "accepted": len(accepted),
                      "rejects": sorted(r.reason for r in rejects)}}))
""")


def noise_folder(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(folder / f"n{i:02d}.png",
                                                                                    compress_level=1)


def peak(src: Path, out: Path) -> dict:
    code = CHILD.format(root=str(ROOT), src=str(src), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_peak_memory_stays_flat_as_inputs_grow(tmp_path):
    few, many = tmp_path / "few", tmp_path / "many"
    noise_folder(few, 4)
    noise_folder(many, 32)
    with open(many / "huge.png", "wb") as fh:  # 1 GiB, sparse: read whole, it would cost 1 GiB
        fh.truncate(1 << 30)
    Image.new("I;16", (6000, 6000)).save(many / "deep.png")  # 36 MP 16-bit: ~0.3 GB to decode

    small, large = peak(few, tmp_path / "out-few"), peak(many, tmp_path / "out-many")

    assert small["accepted"] == 4 and large["accepted"] == 32
    assert large["rejects"] == ["decompression_bomb", "file_too_large"]
    # 32 accepted images are ~100 MB of PNG, and the 1 GiB file was read whole before: none of it
    # may stay in memory. The margin, half of the PNG bytes, is for the allocator: freed decode
    # buffers stay in the threads' malloc arenas in amounts that vary from run to run (seen:
    # 0-35 MB more for 32 images than for 4).
    assert large["peak"] - small["peak"] < 50e6, (small, large)
    # Each worker holds one file and its decode (~10 MB), plus the allocator's slack; the 1 GiB
    # file alone, read whole as before, would be seven times this bound.
    assert large["peak"] < 150e6, large
