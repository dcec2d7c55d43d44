"""The scheduled retrain flow on a temporary copy of the project (real DVC, Ray, MLflow, Prefect):
unchanged data ends early; a new image triggers a retrain and a new version; a worse model is
registered but not promoted; a failing step is retried, then fails the run, champion untouched."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.project_copy import ROOT, copy_project, tiny_datasets
from tests.shared_data import DATASETS, WEIGHTS

pytestmark = pytest.mark.e2e


def retrain_params(incoming: Path) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["acquire"]["collections"] = [{"name": "T91", "dataset": "T91"}, {"name": "Set5", "dataset": "Set5"}]
    params["ingest"]["sources"] = [{"uri": "data/raw/T91", "split": "train"}, {"uri": str(incoming), "split": "train"},
                                   {"uri": "data/raw/Set5", "split": "val"}]
    params["tasks"] = {"sr_x4": {"patch_size": 32, "patches_per_image": 2, "degradation": {"scale": 4},
                                 "model": {"channels": 8, "residual_blocks": 1},
                                 "optim": {"steps": 20, "batch_size": 4, "lr": 2e-3, "warmup_steps": 0}}}
    params["train"].update(tasks=["sr_x4"], cpus_per_worker=1, checkpoint_every=10, log_every=10, loader_workers=0)
    params["compare"] = {}  # its sheet names models this project does not train
    params["evaluate"]["sets"] = {"Set5": "data/raw/Set5"}
    params["promote"] = {"sr_x4": {"metric": "psnr_y", "margin": 0.0, "tolerances": {}}}
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    base = tmp_path_factory.mktemp("retrain")
    repo = base / "percept"
    copy_project(repo)
    incoming = base / "incoming"
    incoming.mkdir()
    shutil.copyfile(DATASETS / "T91" / "HR" / "t6.png", incoming / "t6.png")
    (repo / "params.yaml").write_text(yaml.safe_dump(retrain_params(incoming), sort_keys=False))
    env = {"PERCEPT_DATASETS": str(tiny_datasets(base / "datasets")), "PERCEPT_WEIGHTS": str(WEIGHTS),
           "PREFECT_API_URL": PREFECT_API_URL.value()}
    git_env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=repo, env=git_env, check=True, capture_output=True)
    return repo, incoming, env


def run_retrain(repo: Path, env: dict, **kwargs):
    """The flow in this process (the harness API), with the project's environment."""
    from pipelines.services.retrain import retrain_flow

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return retrain_flow(str(repo / "params.yaml"), retry_delay_s=0.1, **kwargs)
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def test_retrain_lifecycle(project):
    from mlflow.tracking import MlflowClient

    from pipelines.services.registry import MANIFEST_TAG, alias_version

    repo, incoming, env = project
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")

    # First run: nothing registered yet, so everything is new.
    first = run_retrain(repo, env)
    assert first["status"] == "retrained" and first["changed"] == ["sr_x4"]
    v1 = client.get_model_version("sr_x4", "1")
    assert v1.tags[MANIFEST_TAG] == first["manifest_sha256"]
    assert (repo / ".dvc-remote").is_dir() and any((repo / ".dvc-remote").rglob("*"))  # pushed
    if alias_version(client, "sr_x4", "champion") is None:  # it did not beat bicubic: a person promotes it
        from pipelines.common.params import load_config
        from pipelines.common.paths import Paths
        from pipelines.stages.promote import promote_flow

        promote_flow("sr_x4", load_config(repo / "params.yaml"), Paths(repo), version=1, force=True)
    assert alias_version(client, "sr_x4", "champion") == "1"

    # Nothing changed: ends early, no new version.
    again = run_retrain(repo, env)
    assert again["status"] == "nothing to do" and again["changed"] == []
    assert len(client.search_model_versions("name = 'sr_x4'")) == 1

    # A new image lands in the source, and the recipe is a bad one (a huge learning rate): the new
    # model is registered, judged worse than the champion, and not promoted.
    shutil.copyfile(DATASETS / "T91" / "HR" / "t7.png", incoming / "t7.png")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tasks"]["sr_x4"]["optim"].update(lr=0.5, steps=10)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    worse = run_retrain(repo, env)
    assert worse["status"] == "retrained" and worse["manifest_sha256"] != first["manifest_sha256"]
    decision = worse["tasks"]["sr_x4"]
    assert decision["challenger"] == 2 and not decision["promoted"], decision
    assert alias_version(client, "sr_x4", "champion") == "1"

    # A step that keeps failing (the DVC remote is unusable) is retried, then fails the run
    # before the promotion stage: the champion stays.
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "remote", "add", "-d", "-f", "broken", "/dev/null/remote"],
                   cwd=repo, check=True, capture_output=True)
    params["tasks"]["sr_x4"]["optim"].update(lr=2e-3, steps=12)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    from pipelines.services.retrain import StepFailed

    with pytest.raises(StepFailed, match="dvc push failed"):
        run_retrain(repo, env, force=True, retries=2)
    assert alias_version(client, "sr_x4", "champion") == "1"
    assert len(client.search_model_versions("name = 'sr_x4'")) == 3  # registered before the push failed
    assert json.loads((repo / "registry" / "sr_x4.promotion.json").read_text())["challenger"] == 2  # not re-run
    assert push_attempts() == 3


def push_attempts() -> int:
    """How many times the latest failed `dvc push` task ran (1 + its retries), from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as prefect:
        runs = prefect.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="dvc")),
                                      sort=TaskRunSort.EXPECTED_START_TIME_DESC)
    failed = [r for r in runs if r.state and r.state.is_failed()]
    return failed[0].run_count
