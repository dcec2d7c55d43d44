"""Scheduled retraining as it runs for real: a Prefect server (`prefect server start`, its
scheduler on; the test harness runs none) creates the runs, and they complete.

`percept schedule`, with a test-only cron due every minute in the project's params.yaml: the
scheduler creates the runs and the served deployment executes them. The first retrains (its data
is new to the registry: version 1), the next finds the data unchanged ("nothing to do"); then a new
image lands in a source folder and a later scheduled run retrains on it (version 2).
The production path of prefect.yaml (work pool, `prefect deploy --all`, a worker, `prefect
deployment run`) runs in tests/e2e/test_stack.py, on the production stack.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipelines.services.ports import free_port
from pipelines.services.stack import Process, wait_for_url
from tests.e2e.project_copy import ROOT, copy_project, tiny_datasets
from tests.shared_data import DATASETS, WEIGHTS

pytestmark = [pytest.mark.e2e, pytest.mark.scheduled]
BIN = Path(sys.executable).parent
DEPLOYMENT = "retrain/percept-weekly"



@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """`prefect server start` on its own SQLite database, services (the scheduler) on."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    server = Process("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                     env, home / "server.log").start()
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_for_url(f"{url}/health", server)
        yield url
    finally:
        server.stop(signal.SIGINT)


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_api):
    """A tiny project (sr_x4 only), retrained every minute; images dropped into ``incoming/`` are
    train data from the next run on."""
    base = tmp_path_factory.mktemp("scheduled")
    repo = copy_project(base / "percept")
    incoming = base / "incoming"
    incoming.mkdir()
    shutil.copyfile(DATASETS / "T91" / "HR" / "t6.png", incoming / "t6.png")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["acquire"]["collections"] = [{"name": "T91", "dataset": "T91"}, {"name": "Set5", "dataset": "Set5"}]
    params["ingest"]["sources"] = [{"uri": "data/raw/T91", "split": "train"}, {"uri": str(incoming), "split": "train"},
                                   {"uri": "data/raw/Set5", "split": "val"}]
    params["tasks"] = {"sr_x4": {"patch_size": 32, "patches_per_image": 2, "degradation": {"scale": 4},
                                 "model": {"channels": 8, "residual_blocks": 1},
                                 "optim": {"steps": 4, "batch_size": 2, "warmup_steps": 0}}}
    params["train"].update(tasks=["sr_x4"], cpus_per_worker=1, checkpoint_every=2, log_every=2, loader_workers=0)
    params["compare"] = {}  # its sheet names models this project does not train
    params["data"]["engine"] = "local"  # four images: a Ray per data stage would cost more than it saves
    params["evaluate"]["sets"] = {"Set5": "data/raw/Set5"}
    params["retrain"]["cron"] = "* * * * *"  # test only: due within a minute
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PREFECT_API_URL": prefect_api,
           "PERCEPT_DATASETS": str(tiny_datasets(base / "datasets")), "PERCEPT_WEIGHTS": str(WEIGHTS),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    return repo, incoming, env


def api(url: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class Session:
        def __enter__(self):
            self.settings = temporary_settings({PREFECT_API_URL: url})
            self.settings.__enter__()
            self.client = get_client(sync_client=True).__enter__()
            return self.client

        def __exit__(self, *exc):
            self.client.__exit__(*exc)
            self.settings.__exit__(*exc)

    return Session()


def deployment_runs(url: str) -> list:
    """Every flow run of the deployment, cancelled ones included, oldest first."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with api(url) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["percept-weekly"])))
    return sorted(runs, key=lambda r: r.expected_start_time)


def finished_runs(url: str) -> list[tuple[object, str | None]]:
    """The deployment's flow runs in a final state (oldest first), each with its retrain
    artifact's first line ("# Retrain: retrained" or "# Retrain: nothing to do"). Runs that fell
    due during another retrain are left out: the deployment's limit cancels them (CANCEL_NEW)."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    runs = [run for run in deployment_runs(url) if run.state and run.state.is_final() and not run.state.is_cancelled()]
    done = []
    with api(url) as client:
        for run in runs:
            found = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["retrain"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
            done.append((run, found[0].data.splitlines()[0] if found else None))
    return done


def fell_due_during_a_retrain(run, runs, margin_s: float = 5.0) -> bool:
    """Whether ``run`` was due while another run of the deployment was running (``margin_s``
    inside its start and end, so a run due as the other one ends is not counted either way)."""
    return any(other.id != run.id and other.start_time and other.end_time
               and (run.expected_start_time - other.start_time).total_seconds() > margin_s
               and (other.end_time - run.expected_start_time).total_seconds() > margin_s for other in runs)


def ask_for_a_run_during_a_retrain(url: str, timeout: float = 240):
    """Once a run of the deployment is RUNNING, a run of it asked for now (as from the UI): it falls
    due during that retrain whatever the machine's speed. Its id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [run for run in deployment_runs(url) if run.state and run.state.is_running()]
        if running:
            time.sleep(6)  # due clearly inside it (fell_due_during_a_retrain's margin)
            with api(url) as client:
                return client.create_flow_run_from_deployment(running[0].deployment_id).id
        time.sleep(0.5)
    pytest.fail(f"no run of the deployment was running within {timeout:.0f} s")


def wait_for_runs(url: str, count: int, timeout: float, process: Process, until=None):
    """The finished runs once there are ``count`` (or once ``until(runs)`` holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = finished_runs(url)
        if (until(done) if until else len(done) >= count):
            return done
        if not process.alive():
            break
        time.sleep(3)
    pytest.fail(f"{count} finished run(s) expected in {timeout:.0f} s, got {finished_runs(url)}:\n{process.tail()}")


def registered_versions(repo: Path) -> list[int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    return sorted(int(v.version) for v in client.search_model_versions("name = 'sr_x4'"))


@pytest.mark.timeout(1500)  # the server's start (120 s), two runs (480 s), the retrain after the new image (420 s)
def test_percept_schedule_runs_fire_and_complete(project, prefect_api, tmp_path):
    repo, incoming, env = project
    schedule = Process("schedule", [str(BIN / "percept"), "--params", "params.yaml", "schedule"], env,
                       tmp_path / "schedule.log", cwd=repo).start()
    try:
        # A run due while the first retrain (a fresh project: every stage) is running.
        extra = ask_for_a_run_during_a_retrain(prefect_api)
        # Created by the server's scheduler (nobody asks for a run) and executed by the served flow.
        first, second = wait_for_runs(prefect_api, 2, timeout=480, process=schedule)[:2]
        assert first[1] == "# Retrain: retrained" and second[1] == "# Retrain: nothing to do", (first[1], second[1])
        assert registered_versions(repo) == [1]
        # A new image lands; a later scheduled run sees it. (The run after the second may already
        # have read the folder before the copy, so wait for the first retrain after it.)
        shutil.copyfile(DATASETS / "T91" / "HR" / "t7.png", incoming / "t7.png")
        done = wait_for_runs(prefect_api, 3, timeout=420, process=schedule,
                             until=lambda runs: any(note == "# Retrain: retrained" for _, note in runs[2:]))
    finally:
        schedule.stop(signal.SIGINT)
    later = done[2:]
    retrained = next(run for run, note in later if note == "# Retrain: retrained")
    for run, _ in (first, second, *later):
        assert run.state.is_completed(), run.state
        assert run.auto_scheduled  # made by the scheduler from the cron, not by hand
    assert (second[0].expected_start_time - first[0].expected_start_time).total_seconds() >= 60
    assert all(note == "# Retrain: nothing to do" for run, note in later if run.expected_start_time < retrained.expected_start_time)
    assert registered_versions(repo) == [1, 2]  # the new image's retrain registered a new version
    # Every run that fell due while a retrain was running ended CANCELLED (the deployment's limit,
    # CANCEL_NEW): the one asked for during the first retrain, and any the cron made due then.
    runs = deployment_runs(prefect_api)
    during = [run for run in runs if fell_due_during_a_retrain(run, runs)]
    assert extra in {run.id for run in during}, [(r.name, r.expected_start_time, r.start_time, r.end_time, r.state.type) for r in runs]
    assert all(run.state.is_cancelled() for run in during), [(r.name, r.state) for r in during]
