"""``percept tune`` on the tiny project, as a user runs it: a search of six trials and two rungs,
killed once midway and run again, then ``--apply``.

Asserts what the issue promised: the scheduler stopped a trial early; MLflow holds one parent
run and one nested run per trial; the reported best is the best of the children; the rerun
resumed the search with the trials finished before the kill kept (not trained again); trials
never saw the tuning split nor the test set; --apply wrote the best settings and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml

from tests.e2e.project_copy import tiny_project

pytestmark = pytest.mark.e2e
TASK = "sr_x4"
SEARCH = {
    "space": {"optim.lr": {"low": 1.0e-5, "high": 3.0e-2, "log": True}, "patch_size": {"choices": [24, 32]}},
    "trials": 6, "reports": 2, "steps": 8, "tuning_images": 2,
}


def children(client, parent_id: str) -> list:
    exp = client.get_run(parent_id).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


def parent_run(client):
    exp = client.get_experiment_by_name("percept")
    if exp is None:
        return None
    found = client.search_runs([exp.experiment_id], filter_string="tags.`percept.kind` = 'tune'")
    return found[0] if found else None


@pytest.mark.timeout(1500)  # acquire + ingest (60 s), the first part (<= 600 s), the rest (<= 600 s)
def test_a_search_stops_trials_early_logs_every_trial_resumes_and_applies(tmp_path, prefect_harness):
    from mlflow.tracking import MlflowClient

    repo, env = tiny_project(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tune"] = {TASK: SEARCH}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def run(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        return done.stdout + done.stderr

    run("percept", "acquire")
    run("percept", "ingest")
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")

    # The first run is killed (with its local Ray) once two trials have finished.
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(["percept", "tune", "--task", TASK], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    finished: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 600
        while len(finished) < 2 and time.monotonic() < deadline and first.poll() is None:
            time.sleep(1)
            parent = parent_run(client) if (repo / "mlflow.db").is_file() else None
            if parent is not None:
                finished = {r.data.tags["percept.trial"]: r.info.run_id for r in children(client, parent.info.run_id)
                            if r.info.status == "FINISHED"}
        assert len(finished) >= 2, (tmp_path / "first.log").read_text()[-5000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
        log.close()
    assert "tune sr_x4: 6 trials" not in (tmp_path / "first.log").read_text(), "the search ended before the kill"

    # The rerun writes to a file, so a hang shows what it waited on.
    with open(tmp_path / "second.log", "w") as second_log:
        second = subprocess.Popen(["percept", "tune", "--task", TASK, "--apply"], cwd=repo, env=env, stdout=second_log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            second.wait(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait(timeout=60)
    out = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, f"the resumed search ended with {second.returncode}:\n{out[-8000:]}"
    assert "resuming the search" in out, out[-4000:]

    parent = parent_run(client)
    assert parent.info.status == "FINISHED"
    runs = children(client, parent.info.run_id)
    trials = {r.data.tags["percept.trial"]: r for r in runs}
    assert len(runs) == len(trials) == SEARCH["trials"], "one nested run per trial"
    metric = f"search_{parent.data.params['metric']}"
    for trial, run_id in finished.items():  # kept, not trained again: the same run, its two reports only
        assert trials[trial].info.run_id == run_id
        history = client.get_metric_history(run_id, f"tuning_{parent.data.params['metric']}")
        assert sorted(m.step for m in history) == [4, 8], history

    states = {t: r.data.tags["percept.state"] for t, r in trials.items()}
    assert "stopped early" in states.values(), states
    for t, r in trials.items():
        assert r.info.status == ("KILLED" if states[t] == "stopped early" else "FINISHED")
        assert set(r.data.params) >= {"optim.lr", "patch_size"}

    # The best is the best child, and it is what --apply wrote.
    figures = {t: r.data.metrics[metric] for t, r in trials.items()}
    best = max(figures, key=figures.get)
    assert parent.data.tags["percept.best_trial"] == best
    assert parent.data.metrics[f"best_{parent.data.params['metric']}"] == pytest.approx(figures[best])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"search.png", "trials.json"}
    applied = yaml.safe_load((repo / "params.yaml").read_text())["tasks"][TASK]
    best_lr = float(trials[best].data.params["optim.lr"])
    assert applied["optim"]["lr"] == pytest.approx(float(f"{best_lr:.4g}"))
    assert applied["patch_size"] == int(trials[best].data.params["patch_size"])
    assert applied["optim"]["steps"] == params["tasks"][TASK]["optim"]["steps"], "the search's proxy steps stay out"
    assert f"best (*): trial {best}" in out

    # Trials trained on the training images without the tuning split, scored on that split only.
    tune_dir = repo / "data" / "tune" / TASK
    manifest = (repo / "data" / "manifest" / "manifest.csv").read_text().splitlines()
    train_ids = {line.split(",")[0] for line in manifest[1:] if line.split(",")[5] == "train"}
    split = {p.stem for p in (tune_dir / "images").iterdir()}
    assert len(split) == 2 and split <= train_ids
    carved = [line.split(",") for line in (tune_dir / "manifest.csv").read_text().splitlines()[1:]]
    assert {row[0] for row in carved if row[5] == "train"} == train_ids - split
    assert {row[0] for row in carved if row[5] == "val"} == split  # no Set5 image anywhere
    assert len(list((tune_dir / "shards").iterdir())) == 2, "one set of shards per patch size"

    # Each run of the command is a `tune` flow run on the Prefect API, the resumed one Completed.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["tune"])))
    assert len(flow_runs) >= 2 and any(r.state.is_completed() for r in flow_runs), [r.state for r in flow_runs]
