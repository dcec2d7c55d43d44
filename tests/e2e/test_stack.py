"""The production stack of infra/compose, run natively (pipelines.services.stack): PostgreSQL with the
`mlflow` and `prefect` databases, `mlflow server` on PostgreSQL proxying artifacts into the S3
server, Prefect server on PostgreSQL with the `percept` process pool and a worker, a Ray head and
a second Ray node; the project's params point at it through `profiles.stack`.

1. A retrain started from the deployment is run by the worker; `percept train` is submitted to
   the Ray cluster with `ray job submit`; MLflow's runs and registry live in PostgreSQL, its
   artifacts and DVC's pushed data in S3; the model is registered and put through the gate.
2. Faults: the MLflow server restarted in the middle of a training (metrics resume, the run ends
   FINISHED); PostgreSQL down when `percept promote` starts (it retries, then succeeds); a Ray
   node killed during training (the run resumes from its checkpoint once a node is back).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines.services.stack import Ports, Stack, profile
from tests.e2e.project_copy import ROOT, tiny_project
from tests.shared_data import WEIGHTS

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
BIN = Path(sys.executable).parent
TASK = "sr_x4"
# A retried request in a percept command's log (pipelines.common.errors.show_client_retries): Prefect's
# client or urllib3 (under MLflow's client), at WARNING.
RETRY = re.compile(r"WARNING (prefect\.client|urllib3\.connectionpool): .*(Another attempt will be made|Retry: )")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, prefect_harness):
    base = tmp_path_factory.mktemp("stack")
    repo, _ = tiny_project(base)
    shutil.copyfile(ROOT / "prefect.yaml", repo / "prefect.yaml")
    ports = Ports.free()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tasks"] = {TASK: params["tasks"][TASK]}
    params["train"]["tasks"] = [TASK]
    params["compare"] = {}  # its sheet names models this project does not train
    params["train"].update(workers=2, checkpoint_every=2, max_failures=2)  # one worker per Ray node
    params["data"]["engine"] = "ray"  # ingest and shard on the stack's Ray cluster too
    params["profiles"]["stack"] = profile(ports)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    services = Stack(base / "services", project=repo, ports=ports, datasets=base / "datasets",
                     weights=WEIGHTS)
    try:
        with services:
            yield repo, services
    finally:
        if services.pg_home != services.folder:
            shutil.rmtree(services.pg_home, ignore_errors=True)


def run(stack: Stack, repo: Path, *cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=repo, env=stack.client_env(), capture_output=True, text=True, timeout=timeout)


def check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def mlflow_client(stack: Stack):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"http://127.0.0.1:{stack.ports.mlflow}")


def s3_keys(stack: Stack, prefix: str) -> list[str]:
    import boto3

    env = stack.client_env()
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{stack.ports.s3}", region_name="us-east-1",
                      aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="percept", Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def psql(stack: Stack, database: str, query: str) -> str:
    env = {**stack.env("postgres"), "PGPASSWORD": stack.values["POSTGRES_PASSWORD"]}
    done = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(stack.ports.postgres), "-U", "postgres", "-d", database,
                           "-tAc", query], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def ray_jobs(stack: Stack) -> list:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(f"http://127.0.0.1:{stack.ports.dashboard}").list_jobs()


@pytest.mark.timeout(2400)  # the stack's start (its services' health waits), the run request (600 s), the flow (900 s)
def test_a_retrain_through_the_worker_trains_on_the_ray_cluster(stack):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    repo, services = stack
    asked = check(run(services, repo, str(BIN / "prefect"), "deployment", "run", "retrain/percept-weekly"))
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", asked).group(1)
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{services.ports.prefect}/api"}):
        with get_client(sync_client=True) as prefect:
            deadline = time.monotonic() + 900
            while not (flow_run := prefect.read_flow_run(run_id)).state.is_final():
                assert time.monotonic() < deadline, services.processes["prefect-worker"].tail()
                time.sleep(3)
            assert flow_run.state.is_completed(), f"{flow_run.state}\n{services.processes['prefect-worker'].tail()}"
            (artifact,) = prefect.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["retrain"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
    assert artifact.data.startswith("# Retrain: retrained")

    # Training went through `ray job submit` on the cluster, which had both nodes.
    (job,) = [j for j in ray_jobs(services) if f"train --task {TASK}" in j.entrypoint]
    assert job.status == "SUCCEEDED"
    # MLflow: the run and the registry in PostgreSQL, the artifacts in S3 through the server.
    client = mlflow_client(services)
    version = client.get_model_version(TASK, "1")
    training = client.get_run(version.tags["percept.training_run_id"])
    assert training.info.status == "FINISHED" and training.info.artifact_uri.startswith("mlflow-artifacts:")
    assert psql(services, "mlflow", "select count(*) from model_versions") == "1"
    assert any(k.endswith("model.pt") for k in s3_keys(services, "mlartifacts/"))
    assert any(k.endswith(".png") for k in s3_keys(services, "mlartifacts/"))  # the comparison sheet
    assert s3_keys(services, "percept/dvc/")  # dvc push went to S3 (s3.prefix/dvc)
    assert s3_keys(services, "percept/runs/")  # and the checkpoints
    assert (repo / "registry" / f"{TASK}.promotion.json").is_file()
    assert int(psql(services, "prefect", "select count(*) from flow_run where state_type = 'COMPLETED'")) >= 1


def training_params(repo: Path, name: str, steps: int) -> str:
    """A params file beside params.yaml for a longer training (its own run name, so no resume)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tasks"][TASK]["optim"]["steps"] = steps
    params["train"].update(log_every=2, checkpoint_every=4)
    (repo / name).write_text(yaml.safe_dump(params, sort_keys=False))
    return name


def start_training(services: Stack, repo: Path, params_file: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as sink:
        return subprocess.Popen([str(BIN / "percept"), "--params", params_file, "train", "--task", TASK], cwd=repo,
                                env=services.client_env(), stdout=sink, stderr=subprocess.STDOUT)


def running_run(services: Stack, since_ms: int, min_points: int, timeout: float = 300):
    """The training run created after ``since_ms`` once it has logged ``min_points`` loss values."""
    client = mlflow_client(services)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
                    if r.info.start_time >= since_ms]
            for found in runs:
                if len(client.get_metric_history(found.info.run_id, "loss_total")) >= min_points:
                    return found.info.run_id
        except Exception:  # noqa: BLE001 - the server may be restarting
            pass
        time.sleep(1)
    pytest.fail(f"no training run with {min_points} logged losses in {timeout:.0f} s")


@pytest.mark.timeout(1500)  # the first losses (300 s), the restart (120 s), the training (900 s)
def test_mlflow_server_restarted_in_the_middle_of_a_training(stack, tmp_path):
    repo, services = stack
    since = int(time.time() * 1000)
    training = start_training(services, repo, training_params(repo, "params-mlflow-fault.yaml", 40), tmp_path / "train.log")
    run_id = running_run(services, since, min_points=2)
    restarted = time.time() * 1000
    services.restart("mlflow")
    assert training.wait(timeout=900) == 0, (tmp_path / "train.log").read_text()[-4000:]
    client = mlflow_client(services)
    assert client.get_run(run_id).info.status == "FINISHED"
    history = client.get_metric_history(run_id, "loss_total")
    assert max(m.step for m in history) == 40
    assert any(m.timestamp > restarted for m in history)  # logging went on after the restart


def test_postgres_down_when_promote_starts(stack, tmp_path):
    repo, services = stack
    services.processes["postgres"].stop()
    with open(tmp_path / "promote.log", "wb") as sink:
        promote = subprocess.Popen([str(BIN / "percept"), "promote", "--task", TASK], cwd=repo, env=services.client_env(),
                                   stdout=sink, stderr=subprocess.STDOUT)
    log = tmp_path / "promote.log"
    # The outage is met: a request of promote's failed and is being retried (percept logs each
    # client retry as a warning), whatever promote's imports took on this machine.
    deadline = time.monotonic() + 300
    while not RETRY.search(log.read_text()):
        assert promote.poll() is None, f"promote ended before any retry:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no retried request in 300 s:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
    services.start_postgres()
    assert promote.wait(timeout=600) == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert "promote sr_x4: v" in text  # and survived: the gate ran on the returned database
    assert RETRY.search(text).start() < text.index("promote sr_x4: v")


@pytest.mark.timeout(1500)  # the first losses (300 s), the node's return (120 s), the training (900 s)
def test_ray_node_killed_during_training_resumes_from_its_checkpoint(stack, tmp_path):
    import signal

    repo, services = stack
    since = int(time.time() * 1000)
    training = start_training(services, repo, training_params(repo, "params-node-fault.yaml", 60), tmp_path / "train.log")
    run_id = running_run(services, since, min_points=5)  # step 10: two checkpoints written
    services.processes["ray-worker"].stop(signal.SIGKILL)  # the node and its training worker die
    time.sleep(5)
    services.start_ray_node()  # a node comes back; the worker group restarts on it
    assert training.wait(timeout=900) == 0, (tmp_path / "train.log").read_text()[-4000:]
    assert mlflow_client(services).get_run(run_id).info.status == "FINISHED"
    job = max((j for j in ray_jobs(services) if "params-node-fault.yaml" in j.entrypoint), key=lambda j: j.start_time)
    from ray.job_submission import JobSubmissionClient

    logs = JobSubmissionClient(f"http://127.0.0.1:{services.ports.dashboard}").get_job_logs(job.submission_id)
    resumed = [int(s) for s in re.findall(r"resuming from step (\d+)", logs)]
    assert resumed and 0 < resumed[-1] < 60, logs[-3000:]
