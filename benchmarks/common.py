"""What the benchmarks share: progress lines, the lines every report ends with, FLOP counts, and
ingesting and sharding a few images outside the project's data/.

The benchmarks run as scripts, so this folder is on ``sys.path`` (``from common import ...``).
Nothing heavy is imported at the top: gpu.py runs on a machine with only training/'s wheels.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any


def progress(msg: str, tag: str = "bench") -> None:
    """A progress line on stderr (the tables go to stdout)."""
    print(f"[{tag}] {msg}", file=sys.stderr, flush=True)


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def ending(load_start: str, elapsed: float) -> list[str]:
    """The report's last lines: other work on a shared machine skews its figures."""
    return [f"load average at start {load_start}, at end {load_average()} (other work on the machine skews the figures)",
            f"total {elapsed:.0f} s"]


def with_feature_weights(raw: dict[str, Any], root: Path) -> dict[str, Any]:
    """``raw`` settings whose ``feature_net.weights`` names a file that exists: the project's copy
    (``data/weights/``), else, in a fresh clone before ``percept acquire``, the one it would copy."""
    feature = raw.setdefault("feature_net", {})
    weights = Path(feature.get("weights", "data/weights/vgg_normalised_conv3_1.pth"))
    if not weights.is_absolute():
        local = root / weights
        if not local.is_file():
            from pipelines.common.paths import Paths

            local = Paths(root).weights_source() / weights.name
        feature["weights"] = str(local)
    return raw


def count_flops(fn: Callable[[], Any]) -> tuple[float, dict[str, float]]:
    """FLOP of ``fn()`` (convolutions and matmuls: ``torch.utils.flop_counter``; element-wise work
    is not counted): the total, and per module class name (``ResNet``, ``PerceptualLoss``, ...)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    by_module = {name: float(sum(counts.values())) for name, counts in counter.get_flop_counts().items()}
    return float(counter.get_total_flops()), by_module


def ingest(cfg, folder: Path) -> Path:
    """``cfg.ingest.sources`` decoded and validated into ``folder``/manifest.csv and images/, as
    the ingest stage does (its steps without the flow); the manifest's path."""
    from pipelines.data.manifest import MANIFEST_FIELDS, write_csv
    from pipelines.stages.ingest import decode_all, list_source

    candidates = [c for s in cfg.ingest.sources for c in list_source(s, cfg)]
    (folder / "images").mkdir(parents=True)
    accepted, _ = decode_all.fn(candidates, cfg, folder / "images")
    manifest = folder / "manifest.csv"
    write_csv(manifest, MANIFEST_FIELDS, accepted)
    return manifest


def shard(cfg, task: str, manifest: Path, dest: Path, splits: tuple[str, ...] = ("train", "val"),
          mapper: Callable | None = None) -> list[dict[str, Any]]:
    """``task``'s samples of ``splits`` from ``manifest`` into ``dest`` with its index.json, as the
    shard stage writes them (``mapper``: an engine's ordered map, else ``cfg.data.engine``'s)."""
    from pipelines.services.engine import data_engine
    from pipelines.data.manifest import read_manifest
    from pipelines.stages.shard import image_jobs, index_for, write_split

    rows = read_manifest(manifest)
    dest.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    with data_engine(cfg) if mapper is None else nullcontext(mapper) as run:
        for split in splits:
            shards += write_split.fn(image_jobs(task, cfg, rows, manifest.parent, split), dest, split, cfg, run)
    (dest / "index.json").write_text(json.dumps(index_for(task, cfg, shards, manifest), indent=2, sort_keys=True) + "\n")
    return shards

