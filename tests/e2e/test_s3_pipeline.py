"""The whole pipeline with every artefact in S3, from one setting (``s3.bucket``), against a real
S3-compatible server on 127.0.0.1: raw images read from a bucket, a retrain that pushes the DVC
data to S3, checkpoints and MLflow artifacts in S3, `dvc pull` in a fresh clone, the registered
model loaded back from S3, and an interrupted training resumed from its checkpoint in S3."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.project_copy import ROOT, copy_project
from tests.shared_data import DATASETS, WEIGHTS

pytestmark = pytest.mark.e2e
PREFIX = "team/percept"
TRAIN, VAL = ("t1", "t2", "t3", "t5"), ("bird", "butterfly")


def keys(s3, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def s3_params(endpoint: str, bucket: str) -> dict:
    """Tiny sr_x4 settings whose only S3 knobs are the endpoint, the bucket and the prefix."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    val_files = [{"uri": f"s3://{bucket}/raw/Set5/{n}.png",
                  "sha256": hashlib.sha256((DATASETS / "Set5" / "HR" / f"{n}.png").read_bytes()).hexdigest()}
                 for n in VAL]
    params["acquire"]["collections"] = [{"name": "Set5", "files": val_files}]  # fetched with boto3
    params["ingest"]["sources"] = [{"uri": f"s3://{bucket}/raw/T91/", "split": "train"},  # listed with boto3
                                   {"uri": "data/raw/Set5", "split": "val"}]
    params["s3"] = {"endpoint_url": endpoint, "region": "us-east-1", "bucket": bucket, "prefix": PREFIX}
    params["tasks"] = {"sr_x4": {"patch_size": 32, "patches_per_image": 2, "degradation": {"scale": 4},
                                 "model": {"channels": 8, "residual_blocks": 1},
                                 "optim": {"steps": 6, "batch_size": 2, "warmup_steps": 0}}}
    params["train"].update(tasks=["sr_x4"], cpus_per_worker=1, checkpoint_every=3, log_every=3, loader_workers=0)
    params["compare"] = {}  # its sheet names models this project does not train
    params["evaluate"]["sets"] = {"Set5": "data/raw/Set5"}
    params["promote"] = {"sr_x4": {"metric": "psnr_y", "margin": 0.0, "tolerances": {}}}
    return params


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_server, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    bucket = "percept-e2e"
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket)
    for split, names in (("T91", TRAIN), ("Set5", VAL)):
        for n in names:
            s3.put_object(Bucket=bucket, Key=f"raw/{split}/{n}.png", Body=(DATASETS / split / "HR" / f"{n}.png").read_bytes())
    base = tmp_path_factory.mktemp("s3")
    repo = copy_project(base / "percept")
    (repo / "params.yaml").write_text(yaml.safe_dump(s3_params(s3_server.endpoint_url, bucket), sort_keys=False))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_CONFIG_FILE": str(base / "no-aws-config"), "AWS_SHARED_CREDENTIALS_FILE": str(base / "no-aws-credentials"), "NO_PROXY": "127.0.0.1,localhost",
        "PERCEPT_WEIGHTS": str(WEIGHTS), "PREFECT_API_URL": PREFECT_API_URL.value(),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }
    run = lambda *cmd, cwd=repo: subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)  # noqa: E731
    for cmd in (("git", "init", "-q", "-b", "main"), ("git", "add", "-A"), ("git", "commit", "-qm", "copy")):
        check(run(*cmd))
    return repo, run, env, s3, bucket


def check(result) -> str:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


@pytest.mark.timeout(2400)  # the retrain (900 s), the served evaluate (900 s), then git and dvc pull
def test_retrain_keeps_every_artefact_in_s3_and_a_fresh_clone_pulls_it_back(stack, tmp_path):
    repo, run, env, s3, bucket = stack
    out = check(run("percept", "retrain"))
    assert "retrain: retrained; data changed for: sr_x4" in out
    stored = keys(s3, bucket, PREFIX + "/")
    assert any(k.startswith(f"{PREFIX}/dvc/files/md5/") for k in stored), "dvc push did not reach the S3 remote"
    assert any(re.match(rf"{PREFIX}/runs/sr_x4-\w+/checkpoint_[^/]+/state\.pt$", k) for k in stored), stored
    assert any(k.startswith(f"{PREFIX}/mlartifacts/") and k.endswith("model.pt") for k in stored), stored
    assert not (repo / "runs").exists() and not (repo / "mlartifacts").exists()  # nothing landed locally instead
    manifest = (repo / "data" / "manifest" / "manifest.csv").read_text()
    assert all(f"s3://{bucket}/raw/T91/{n}.png" in manifest for n in TRAIN)

    # The registered model comes back from its S3 artifacts, through its pyfunc.
    served = run("percept", "evaluate", "--task", "sr_x4", "--model", "models:/sr_x4@challenger", "--images", "data/raw/Set5", "--json")
    check(served)
    scored = json.loads(served.stdout)
    local = json.loads((repo / "reports" / "sr_x4" / "summary.json").read_text())["Set5"]
    assert scored["images"] == 2 and scored["psnr_y"] == pytest.approx(local["psnr_y"], abs=1e-6)

    # A fresh clone of the repository restores the shards from the S3 remote.
    check(run("git", "add", "-A"))
    check(run("git", "commit", "-qm", "retrained"))
    clone = tmp_path / "clone"
    check(run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path))
    assert "s3://" in check(run("percept", "remote", cwd=clone))
    check(run("dvc", "pull", "shard@sr_x4", cwd=clone))
    for path in sorted((repo / "data" / "shards" / "sr_x4").iterdir()):
        assert (clone / path.relative_to(repo)).read_bytes() == path.read_bytes()


@pytest.mark.timeout(2400)  # the shards (900 s), the first checkpoint (240 s), the resumed training (900 s)
def test_interrupted_training_resumes_from_its_checkpoint_in_s3(stack, tmp_path):
    repo, run, env, s3, bucket = stack
    if not (repo / "data" / "shards" / "sr_x4" / "index.json").is_file():
        check(run("dvc", "repro", "shard@sr_x4"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tasks"]["sr_x4"]["optim"]["steps"] = 300  # a new run name, so a new run; long enough to interrupt
    params["train"]["checkpoint_every"] = 10
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = set(keys(s3, bucket, f"{PREFIX}/runs/"))

    def committed_step() -> int | None:
        for key in set(keys(s3, bucket, f"{PREFIX}/runs/")) - before:
            if key.endswith("checkpoint_manager_snapshot.json"):
                latest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).get("latest_checkpoint_result")
                if latest:
                    return int(latest["metrics"]["step"])
        return None

    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(["percept", "train", "--task", "sr_x4"], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)  # its own process group: the kill takes its local Ray too
    try:
        deadline, step = time.monotonic() + 240, None
        while step is None and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.5)
            step = committed_step()
        assert step is not None, (tmp_path / "first.log").read_text()[-4000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        log.close()
    run_json = repo / "models" / "sr_x4" / "run.json"
    assert not run_json.is_file() or json.loads(run_json.read_text())["steps"] != 300, "it finished before the kill"

    out = check(run("percept", "train", "--task", "sr_x4"))
    resumed = [int(s) for s in re.findall(r"resuming from step (\d+)", out)]
    assert resumed and resumed[0] >= step and resumed[0] % 10 == 0 and resumed[0] < 300, out[-4000:]
    assert json.loads(run_json.read_text())["steps"] == 300
