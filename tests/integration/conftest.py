"""Fixtures for the training tests: tiny sr_x4 shards, a tiny-model config, a 2-node Ray cluster.

- ``sr_project`` (module): a temporary project root whose ``data/shards/sr_x4`` holds shards built
  by the real ingest and shard flows (6 T91 images x 4 patches of 32 px for training, 2 Set5
  images for validation), as ``percept shard`` would leave them, and an empty MLflow database
  (``mlflow.db``, tables created) to copy: creating the tables takes ~5 s on 2 cores, per file.
- ``train_params`` (session): the function ``train_params(project, tag, **overrides)``, the
  settings of a short, tiny-model training as a plain dict (what a params.yaml holds), with its
  own MLflow database, artifact folder and checkpoint folder under ``project/tag``.
- ``ray_cluster`` (module): two Ray nodes of one CPU each on this machine
  (``ray.cluster_utils.Cluster``), with this process connected as a driver; shut down (and Ray
  disconnected) when the module ends. Training workers of 1 CPU each therefore land one per node.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.common.params import deep_merge
from pipelines.services.ports import free_port
from tests.shared_data import DATASETS, WEIGHTS

VGG_WEIGHTS = WEIGHTS / "vgg_normalised_conv3_1.pth"
TRAIN_IMAGES = ["t1", "t2", "t3", "t5", "t6", "tt1"]
VAL_IMAGES = ["butterfly", "head"]  # the two smallest of Set5 (256 and 280 px): quick validation
PATCHES_PER_IMAGE = 4
PATCH = 32
MLFLOW_DB = "mlflow.db"


def data_params(root: Path) -> dict[str, Any]:
    """What ingest and shard need: the copied images as sources, small shards, the sr_x4 task."""
    return {
        "seed": 1234,
        "acquire": {"collections": [{"name": "unused", "dataset": "unused"}]},
        "ingest": {"sources": [{"uri": str(root / "raw" / "train"), "split": "train"},
                               {"uri": str(root / "raw" / "val"), "split": "val"}]},
        "shard": {"max_samples": 8, "max_bytes": 2_000_000},
        "data": {"engine": "local"},  # a few images: no Ray start (test_data_engine covers Ray)
        "tasks": {"sr_x4": {"patch_size": PATCH, "patches_per_image": PATCHES_PER_IMAGE, "degradation": {"scale": 4}}},
    }  # fmt: skip


def train_params(project: Path, tag: str, **overrides: Any) -> dict[str, Any]:
    """A short training of a tiny SR net (the paper's, constant lr, no warm-up); ``overrides`` are merged in
    recursively (dicts key by key, anything else replaced)."""
    own = project / tag
    own.mkdir(parents=True, exist_ok=True)
    params = deep_merge(data_params(project), {
        "tasks": {"sr_x4": {
            # The paper's SR net, as these tests were built on (the mechanics they test do not
            # depend on the network; its loss falls far in 40 steps, which the resnet's does not).
            "model": {"arch": "johnson", "sr_channels": 8, "residual_blocks": 1, "norm": "instance", "global_skip": True},
            "loss": {"feature_weight": 0.05},  # the feature term too, so its curve is logged
            "optim": {"steps": 40, "batch_size": 4, "lr": 2e-3, "warmup_steps": 0, "lr_schedule": "constant"},
        }},
        "feature_net": {"weights": str(VGG_WEIGHTS)},
        "train": {
            "tasks": ["sr_x4"], "workers": 2, "cpus_per_worker": 1, "loader_workers": 0,
            "storage_path": str(own / "runs"), "checkpoint_every": 10, "keep_checkpoints": 2,
            "max_failures": 1, "log_every": 2, "shuffle_buffer": 16,
        },
        "mlflow": {"tracking_uri": f"sqlite:///{project / MLFLOW_DB}", "artifact_location": str(own / "mlartifacts"),
                   "experiment": f"test-{tag}"},
    })  # fmt: skip
    return deep_merge(params, overrides)


@pytest.fixture(name="train_params", scope="session")
def train_params_fixture():
    """``train_params(project, tag, **overrides)`` for tests (conftest modules are not imported)."""
    return train_params


@pytest.fixture(scope="module")
def sr_project(tmp_path_factory: pytest.TempPathFactory, prefect_harness) -> Path:
    from pipelines.common.params import parse_config
    from pipelines.common.paths import Paths
    from pipelines.stages.ingest import ingest_flow
    from pipelines.stages.shard import shard_flow

    root = tmp_path_factory.mktemp("train-project")
    for split, names, collection in (("train", TRAIN_IMAGES, "T91"), ("val", VAL_IMAGES, "Set5")):
        (root / "raw" / split).mkdir(parents=True)
        for name in names:
            shutil.copyfile(DATASETS / collection / "HR" / f"{name}.png", root / "raw" / split / f"{name}.png")
    cfg = parse_config(data_params(root))
    ingest_flow(cfg, Paths(root))
    index = shard_flow("sr_x4", cfg, Paths(root))
    assert index["splits"] == {"train": len(TRAIN_IMAGES) * PATCHES_PER_IMAGE, "val": len(VAL_IMAGES)}

    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{root / MLFLOW_DB}").search_experiments()  # creates the tables
    return root



class RayCluster:
    """A ``ray.cluster_utils.Cluster`` plus the facts tests need about it."""

    def __init__(self, cluster, temp_dir: str):
        self.cluster, self.temp_dir = cluster, temp_dir

    @property
    def address(self) -> str:
        return self.cluster.address

    def node_ids(self) -> set[str]:
        import ray

        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a Ray left over by another module: never share it
        ray.shutdown()
    # RAY_TMPDIR: a short temp dir (Ray's unix socket paths must stay under 107 bytes) that also
    # holds the "current cluster" address file instead of the machine-wide /tmp/ray. Ray code that
    # looks for "the local cluster" (Ray Train's placement-group cleaner inside the cluster, state
    # API calls without an address) reads that file, so with other Ray instances on this machine
    # it still finds this one; and no other process is pointed at this cluster by it.
    temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")
    saved = {k: os.environ.get(k) for k in ("RAY_TMPDIR", "RAY_ADDRESS")}
    os.environ["RAY_TMPDIR"] = temp_dir
    os.environ.pop("RAY_ADDRESS", None)
    cluster = None
    try:
        # The dashboard stays on: Ray Train's placement-group cleaner and these tests use Ray's
        # state API (actors, their nodes and pids), which it serves. Free ports, not Ray's fixed
        # defaults (8265, 52365): another Ray on this machine may hold those, and a dashboard that
        # fails to bind makes every state query (and each fit()'s shutdown) wait for a timeout.
        head = {"num_cpus": 1, "include_dashboard": True, "dashboard_port": free_port(), "dashboard_agent_listen_port": free_port()}
        cluster = Cluster(initialize_head=True, connect=True, head_node_args=head)
        cluster.add_node(num_cpus=1, dashboard_agent_listen_port=free_port())
        cluster.wait_for_nodes()
        yield RayCluster(cluster, temp_dir)
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(temp_dir, ignore_errors=True)
