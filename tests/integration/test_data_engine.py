"""Ingest and shard give the same bytes wherever their work runs: in this process (``data.engine:
local``), on a local Ray started for the flow, and on a two-node Ray cluster (Ray tasks landing on
both nodes). Manifest, rejects, accepted images and every shard are compared byte for byte."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from pipelines.common.params import parse_config
from pipelines.stages.ingest import ingest_flow
from pipelines.common.paths import Paths
from pipelines.stages.shard import shard_flow
from tests.shared_data import DATASETS

pytestmark = pytest.mark.integration

TRAIN = ["t1", "t2", "t3", "t5", "t6", "tt1", "tt2", "tt3"]
VAL = ["butterfly", "head"]


def params(raw: Path, engine: str) -> dict:
    return {
        "seed": 5,
        "acquire": {"collections": [{"name": "x", "dataset": "x"}]},
        "ingest": {"sources": [{"uri": str(raw / "train"), "split": "train"}, {"uri": str(raw / "val"), "split": "val"}]},
        "shard": {"max_samples": 8, "max_bytes": 2_000_000},
        "tasks": {"sr_x4": {"patch_size": 32, "patches_per_image": 3, "degradation": {"scale": 4}},
                  "denoise": {"patch_size": 32, "patches_per_image": 2}},
        "data": {"engine": engine, "workers": 2, "items_per_task": 2},
    }  # fmt: skip


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """Train and val images, plus what ingest must reject or de-duplicate, in one folder for every run."""
    root = tmp_path_factory.mktemp("engine-raw")
    for split, names, folder in (("train", TRAIN, "T91"), ("val", VAL, "Set5")):
        (root / split).mkdir()
        for name in names:
            shutil.copyfile(DATASETS / folder / "HR" / f"{name}.png", root / split / f"{name}.png")
    shutil.copyfile(root / "train" / "t1.png", root / "train" / "t1-copy.png")  # a duplicate
    (root / "train" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a reject
    return root


def build(raw: Path, project: Path, engine: str) -> dict[str, bytes]:
    cfg = parse_config(params(raw, engine))
    paths = Paths(project)
    ingest_flow(cfg, paths)
    for task in ("sr_x4", "denoise"):
        shard_flow(task, cfg, paths)
    files = {p.relative_to(project).as_posix(): p.read_bytes() for p in (project / "data").rglob("*") if p.is_file()}
    assert any(name.endswith(".tar") for name in files) and "data/manifest/rejects.csv" in files
    return files


@pytest.fixture(scope="module")
def reference(raw, tmp_path_factory, prefect_harness) -> dict[str, bytes]:
    return build(raw, tmp_path_factory.mktemp("engine-local"), "local")


def test_a_local_ray_gives_the_same_bytes_as_one_process(raw, reference, tmp_path, prefect_harness):
    import ray

    from pipelines.services.engine import init_ray

    if ray.is_initialized():
        ray.shutdown()
    # One local Ray for the three flows, as `percept repro` starts one for its stages (a flow run
    # alone starts and stops its own: test_s3_ingest.py's Ray case).
    assert init_ray(parse_config(params(raw, "ray")), num_cpus=2)
    try:
        assert build(raw, tmp_path, "ray") == reference
    finally:
        ray.shutdown()


def test_a_flow_own_local_ray_is_stopped_and_its_temp_folder_removed(raw):
    import ray

    from pipelines.services.engine import data_engine

    if ray.is_initialized():
        ray.shutdown()
    before = set(Path("/tmp").glob("ray*"))
    with data_engine(parse_config(params(raw, "ray"))) as mapper:
        assert list(mapper(abs, [-3, 1, -2, 5, -7])) == [3, 1, 2, 5, 7]
        made = set(Path("/tmp").glob("ray*")) - before
        assert made, "the local Ray made no temp folder under /tmp"
    assert not ray.is_initialized()
    assert not [p for p in made if p.exists()], f"left behind: {sorted(made)}"


def test_a_two_node_cluster_gives_the_same_bytes(raw, reference, tmp_path, ray_cluster, prefect_harness):
    import ray

    from pipelines.services.engine import ray_map

    def where(_):
        # Long enough that the tasks overlap: instant ones can all finish on the node that got
        # the first lease before the scheduler ever sees it busy (CI saw 16 of 16 on one node).
        time.sleep(0.5)
        return ray.get_runtime_context().get_node_id()

    # The engine's tasks spread over both nodes (one CPU each, two tasks in flight per CPU).
    assert set(ray_map(where, range(16), 1, None)) == ray_cluster.node_ids()
    assert build(raw, tmp_path, "ray") == reference
    assert ray.is_initialized()  # a cluster the flow joined is left running
